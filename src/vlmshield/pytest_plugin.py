"""vlmshield's pytest plugin (the ``pytest11`` entry point): the ``vlmshield_conformance`` fixture, with which a
plugin's tests run the conformance checks on everything the plugin registers (see ``vlmshield.conformance``)."""

from __future__ import annotations

import pytest


@pytest.fixture
def vlmshield_conformance():
    """``vlmshield_conformance(DIST)``: check everything the distribution (or in-process plugin module) ``DIST``
    registers; fails the test listing every problem."""
    from vlmshield.conformance import check_distribution

    return check_distribution
