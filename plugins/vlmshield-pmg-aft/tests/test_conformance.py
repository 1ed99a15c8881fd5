"""The plugin passes vlmshield's conformance checks on everything it registers."""

from vlmshield_pmg_aft import plugin

from vlmshield.api import temporary_host


def test_everything_the_plugin_registers_conforms(vlmshield_conformance):
    with temporary_host(plugin):
        checked = vlmshield_conformance(plugin)
    assert checked and not [line for line in checked if "not checked" in line]
