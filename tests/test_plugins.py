import textwrap
import warnings

import pytest

import vlmshield as vs
from vlmshield.api import (
    Attack,
    PluginError,
    PluginHost,
    TestTimeDefense,
    get_host,
    reset_host,
    temporary_host,
)
from vlmshield.attacks import PGD
from vlmshield.core.plugins import PluginWarning
from vlmshield.testing import make_plugin

GOOD = '''
from vlmshield.api import hookimpl
from vlmshield.attacks import PGD

class GoodAttack(PGD):
    name = "good-attack"

@hookimpl
def register_attacks(register):
    register(GoodAttack)
'''


def fake_distribution(site, dist, module, source, version="1.0"):
    (site / module).mkdir()
    (site / module / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[vlmshield]\n{module} = {module}\n")


@pytest.fixture
def site(tmp_path, monkeypatch):
    fake_distribution(tmp_path, "vlmshield-good", "goodplug", GOOD, version="1.2")
    fake_distribution(tmp_path, "vlmshield-broken", "brokenplug", "raise ImportError('no module named foo')")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


FAKES = {"vlmshield-good", "vlmshield-broken"}


def test_builtins_register_through_the_hooks_and_record_who_registered():
    host = PluginHost(entry_points=False)
    registration = host.get("attack", "pgd")
    assert (registration.plugin, registration.distribution, registration.version) == \
        ("vlmshield.attacks", "vlmshield", vs.__version__)
    assert {"zero-shot", "accuracy", "asr"} <= set(host.registries["evaluator"].names())
    assert all(not info.errors for info in host.plugins())


def test_entry_points_load_each_in_isolation(site):
    host = PluginHost(allow=FAKES)
    good, broken = host.infos["goodplug"], host.infos["brokenplug"]
    assert (good.distribution, good.version, good.hooks) == ("vlmshield-good", "1.2", ["register_attacks"])
    assert good.registered == {"attack": ["good-attack"]} and not good.errors
    assert host.get("attack", "good-attack").provider == "goodplug (vlmshield-good 1.2)"
    assert broken.errors == ["failed to load: ImportError: no module named foo"]
    assert host.get("attack", "pgd")  # everything else works


def test_a_plugin_that_exits_on_import_or_in_a_hook_fails_alone(site, capsys):
    """``sys.exit`` in a plugin is that plugin's failure: every command still runs (Ctrl-C still stops)."""
    fake_distribution(site, "vlmshield-exits", "exitplug", "import sys\nsys.exit(3)\n")
    fake_distribution(site, "vlmshield-exits-later", "exitlater", """
        import sys
        from vlmshield.api import hookimpl

        @hookimpl
        def register_attacks(register):
            sys.exit(4)
    """)
    host = PluginHost(allow={"vlmshield-exits", "vlmshield-exits-later", "vlmshield-good"})
    assert host.infos["exitplug"].errors == ["failed to load: SystemExit: 3"]
    assert host.infos["exitlater"].errors == ["register_attacks raised SystemExit: 4"]
    assert host.get("attack", "good-attack") and host.get("attack", "pgd")


def test_a_misspelt_plugin_name_in_the_environment_is_warned_about(site):
    with pytest.warns(PluginWarning, match="VLMSHIELD_DISABLE_PLUGINS names 'vlmshield-god', but no installed"):
        PluginHost(allow=FAKES, block={"vlmshield-god"})
    with pytest.warns(PluginWarning, match="VLMSHIELD_LOAD_PLUGINS names 'vlmshield-goood'"):
        PluginHost(allow={"vlmshield-good", "vlmshield-goood"})


def test_allow_and_block_lists(site, monkeypatch):
    assert set(PluginHost(allow={"vlmshield-good"}).infos) >= {"goodplug"}
    assert "brokenplug" not in PluginHost(allow={"vlmshield-good"}).infos
    assert "brokenplug" not in PluginHost(allow=FAKES, block={"vlmshield-broken"}).infos
    monkeypatch.setenv("VLMSHIELD_LOAD_PLUGINS", "vlmshield_good")
    assert "goodplug" in PluginHost.from_environment().infos
    monkeypatch.setenv("VLMSHIELD_LOAD_PLUGINS", "")
    assert not {"goodplug", "brokenplug"} & set(PluginHost.from_environment().infos)
    monkeypatch.setenv("VLMSHIELD_LOAD_PLUGINS", "vlmshield-good,vlmshield-broken")
    monkeypatch.setenv("VLMSHIELD_DISABLE_PLUGINS", "goodplug")
    assert set(PluginHost.from_environment().infos) & {"goodplug", "brokenplug"} == {"brokenplug"}


def test_strict_mode_makes_a_broken_plugin_fatal(site, monkeypatch):
    monkeypatch.setenv("VLMSHIELD_LOAD_PLUGINS", "vlmshield-broken")
    monkeypatch.setenv("VLMSHIELD_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin brokenplug: failed to load: ImportError"):
        PluginHost.from_environment()


def test_the_process_host_warns_once_about_broken_plugins(site, monkeypatch):
    monkeypatch.setenv("VLMSHIELD_LOAD_PLUGINS", "vlmshield-broken")
    reset_host()
    try:
        with pytest.warns(PluginWarning, match="brokenplug failed to load"):
            get_host()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            get_host()
    finally:
        reset_host()


class NoDefault(PGD):
    name = "no-default"

    def __init__(self, eps):
        super().__init__(eps=eps)


class Abstract(Attack):
    name = "abstract"


class HalfDefense(TestTimeDefense):
    name = "half-defense"


def raising(register):
    register(type("Fine", (PGD,), {"name": "fine-attack"}))
    raise RuntimeError("boom")


@pytest.mark.parametrize("hooks, error", [
    ({"register_attacks": raising}, "register_attacks raised RuntimeError: boom"),
    ({"register_attacks": lambda r: r(type("Bad", (PGD,), {"name": "Bad Name"}))}, "invalid attack name 'Bad Name'"),
    ({"register_attacks": lambda r: r(PGD)},
     "attack name 'pgd' from plugin test is already registered by plugin vlmshield.attacks"),
    ({"register_attacks": lambda r: r(len)}, "expected a subclass of Attack or BackdoorAttack"),
    ({"register_attacks": lambda r: r(NoDefault)}, "parameters without a default: eps"),
    ({"register_attacks": lambda r: r(Abstract)}, "does not implement perturb"),
    ({"register_defenses": lambda r: r(HalfDefense)}, "does not implement wrap"),
    ({"register_models": lambda r: r("clip-x")}, "expected a ModelCard"),
    ({"register_atacks": lambda r: None}, "implements register_atacks, which is not a vlmshield hook"),
    ({"register_attacks": lambda r: r()}, "register_attacks raised PluginError: register() needs at least one object"),
    ({"register_attacks": lambda r: r(type("Fine", (PGD,), {"name": "fine-attack"}), PGD, aliases=("fine",))},
     "aliases name one object: register(obj, aliases=...) it alone, not beside 1 other(s)"),
])
def test_invalid_plugins_are_reported_and_everything_else_works(hooks, error):
    with temporary_host(make_plugin("test", **hooks)) as host:
        errors = host.infos["test"].errors
        assert len(errors) == 1 and error in errors[0], errors
        assert "fine-attack" not in host.registries["attack"]  # a hook that raised registers nothing
        assert vs.attack("pgd").eps == 4 / 255
    with pytest.raises(PluginError, match="plugin test"):
        PluginHost([make_plugin("test", **hooks)], entry_points=False, strict=True)


def test_one_call_registers_several_objects_in_order():
    first, second, third = (type(n, (PGD,), {"name": f"{n}-pgd"}) for n in ("first", "second", "third"))
    plugin = make_plugin("several", register_attacks=lambda r: (r(first, second), r(third, aliases="3-pgd")))
    with temporary_host(plugin) as host:
        assert host.infos["several"].registered == {"attack": ["first-pgd", "second-pgd", "third-pgd"]}
        assert host.get("attack", "second-pgd").obj is second and host.get("attack", "3-pgd").obj is third


def test_temporary_host_restores_the_previous_one():
    before = get_host()
    plugin = make_plugin("extra", register_attacks=lambda r: r(type("Extra", (PGD,), {"name": "extra-pgd"})))
    with temporary_host(plugin) as host:
        assert get_host() is host and vs.attack("extra-pgd").name == "extra-pgd"
    assert get_host() is before and "extra-pgd" not in before.registries["attack"]
