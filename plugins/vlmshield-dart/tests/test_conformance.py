"""The plugin passes vlmshield's conformance checks on everything it registers."""

from vlmshield_dart import plugin

from vlmshield.api import temporary_host


def test_everything_the_plugin_registers_conforms(vlmshield_conformance):
    with temporary_host(plugin):
        assert vlmshield_conformance(plugin)
