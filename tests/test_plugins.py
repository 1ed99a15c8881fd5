import argparse
import json
import textwrap
import warnings

import pytest

import vlmshield as vs
from vlmshield.api import (
    Attack,
    Command,
    ContestedNameError,
    ModelCard,
    PluginError,
    PluginHost,
    TestTimeDefense,
    UnknownNameError,
    get_host,
    reset_host,
    temporary_host,
)
from vlmshield.attacks import PGD
from vlmshield.cli import main
from vlmshield.core.plugins import PluginWarning
from vlmshield.testing import make_plugin, tiny_vlm

GOOD = '''
from vlmshield.api import hookimpl
from vlmshield.attacks import PGD

class GoodAttack(PGD):
    name = "good-attack"

@hookimpl
def register_attacks(register):
    register(GoodAttack)
'''


def fake_distribution(site, dist, module, source, version="1.0", requires=()):
    (site / module).mkdir()
    (site / module / "__init__.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n"
                                   + "".join(f"Requires-Dist: {r}\n" for r in requires))
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


def test_a_plugin_written_for_another_vlmshield_is_refused_before_it_loads(site):
    fake_distribution(site, "vlmshield-future", "futureplug", "raise AssertionError('imported')", version="3.0",
                      requires=["vlmshield>=9,<10", "torch"])
    fake_distribution(site, "vlmshield-fits", "fitsplug", GOOD.replace("good-attack", "fits-attack"),
                      requires=[f"vlmshield>={vs.__version__}", "vlmshield-extra>=9; extra == 'test'"])
    host = PluginHost(allow={"vlmshield-future", "vlmshield-fits"})
    assert host.infos["futureplug"].errors == [
        f"was written for vlmshield <10,>=9 and this is vlmshield {vs.__version__}: install a version of "
        f"vlmshield-future made for it (or a vlmshield it accepts)"]
    assert not host.infos["fitsplug"].errors and host.get("attack", "fits-attack")


def test_an_unknown_name_names_the_plugins_that_failed(site):
    host = PluginHost(allow=FAKES)
    with pytest.raises(UnknownNameError, match=r"unknown attack 'jpeg-bpda'.* Plugins that failed, one of which may "
                                               r"provide it: brokenplug \(vlmshield-broken 1.0\): failed to load: "
                                               r"ImportError: no module named foo\."):
        host.get("attack", "jpeg-bpda")
    with pytest.raises(UnknownNameError) as plain:
        PluginHost(allow={"vlmshield-good"}).get("attack", "jpeg-bpda")
    assert "failed" not in str(plain.value)


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


# ------------------------------------------------------------------ who wins a name
CLAIMANT = '''
from vlmshield.api import ModelCard, TestTimeDefense, hookimpl
from vlmshield.testing import tiny_vlm

class Defense(TestTimeDefense):
    name = "ttc"
    description = "WHO"

    def wrap(self, classifier, calibration=None):
        return classifier

def load(card, device=None, weights=True):
    model = tiny_vlm()
    model.made_by = "WHO"
    return model

@hookimpl
def register_defenses(register):
    register(Defense)

@hookimpl
def register_models(register):
    register(ModelCard("fare-tinyvit4", arch="tinyvit4", method="fare", loader=load))
'''

PGD_THIEF = '''
from vlmshield.api import hookimpl
from vlmshield.attacks import PGD

class Stolen(PGD):
    description = "does nothing"

@hookimpl
def register_attacks(register):
    register(Stolen)
'''

CLAIMANTS = {"acme-ttc", "evil-ttc"}
CONTESTED = ("defense 'ttc' is claimed by both acme-ttc 0.3 and evil-ttc 6.6, so neither is used until you choose: "
             "ask for 'acme-ttc:ttc' or 'evil-ttc:ttc', or drop one with VLMSHIELD_DISABLE_PLUGINS=acme-ttc or "
             "VLMSHIELD_DISABLE_PLUGINS=evil-ttc.")


@pytest.fixture
def claimants(site):
    """Two installed distributions that both register the defense 'ttc' and the model 'fare-tinyvit4'."""
    fake_distribution(site, "acme-ttc", "acmettc", CLAIMANT.replace("WHO", "acme"), version="0.3")
    fake_distribution(site, "evil-ttc", "evilttc", CLAIMANT.replace("WHO", "evil"), version="6.6")
    return site


@pytest.fixture
def process_host(claimants, monkeypatch):
    """The process-wide host with both claimants installed, created inside the test."""
    monkeypatch.setenv("VLMSHIELD_LOAD_PLUGINS", ",".join(sorted(CLAIMANTS)))
    reset_host()
    yield
    reset_host()


def test_a_name_two_distributions_claim_is_used_by_neither_until_chosen(claimants):
    host = PluginHost(allow=CLAIMANTS)
    for plugin in ("acmettc", "evilttc"):
        assert not host.infos[plugin].errors
        assert host.infos[plugin].contested == {"defense": ["ttc"], "model": ["fare-tinyvit4"]}
    with pytest.raises(ContestedNameError) as contested:
        host.get("defense", "TTC")
    assert str(contested.value) == CONTESTED
    with pytest.raises(ContestedNameError, match="model 'fare-tinyvit4' is claimed by both acme-ttc 0.3 and evil"):
        host.create("model", "fare_tinyvit4")
    assert "ttc" in host.registries["defense"]  # known, only not usable plain
    assert host.infos["vlmshield.zoo.plugin"].contested == {}


@pytest.mark.parametrize("qualified, who", [
    ("acme-ttc:ttc", "acme"), ("Evil_TTC:ttc", "evil"), ("evilttc:ttc", "evil"), (" acme-ttc : TTC", "acme"),
])
def test_a_qualified_name_picks_one_claimant(claimants, qualified, who):
    host = PluginHost(allow=CLAIMANTS)
    assert qualified in host.registries["defense"]
    assert host.get("defense", qualified).obj.description == who


def test_an_unknown_qualifier_names_the_claimants(claimants):
    host = PluginHost(allow=CLAIMANTS)
    assert "nobody:ttc" not in host.registries["defense"]
    with pytest.raises(UnknownNameError) as unknown:
        host.get("defense", "nobody:ttc")
    assert str(unknown.value) == ("no plugin distribution 'nobody' registers the defense 'ttc'; it comes from "
                                  "acme-ttc 0.3 and evil-ttc 6.6: ask for 'acme-ttc:ttc' or 'evil-ttc:ttc'.")
    with pytest.raises(UnknownNameError, match="unknown defense 'acme-ttc:ttx'. Did you mean 'ttc'"):
        host.get("defense", "acme-ttc:ttx")


def test_a_contested_name_is_listed_once_per_claimant(claimants):
    host = PluginHost(allow=CLAIMANTS)
    defenses = host.registries["defense"]
    assert [r.distribution for r in defenses if r.name == "ttc"] == ["acme-ttc", "evil-ttc"]
    assert defenses.names().count("ttc") == 2 and len(defenses) == len(defenses.names())
    assert [r.distribution for r in defenses.contested()["ttc"]] == ["acme-ttc", "evil-ttc"]
    assert "'fare-tinyvit4' (acme-ttc 0.3 and evil-ttc 6.6)" in host.contested_note()


def test_qualified_names_reach_every_kind_and_the_builtins(claimants):
    host = PluginHost(allow=CLAIMANTS)
    assert host.get("attack", "vlmshield:pgd").obj is PGD
    assert host.get("attack", "vlmshield.attacks:pgd").obj is PGD
    assert "vlmshield:pgd" in host.registries["attack"] and "acme-ttc:pgd" not in host.registries["attack"]
    assert host.get("model", "evil-ttc:fare-tinyvit4").distribution == "evil-ttc"


def test_a_plugin_cannot_take_a_builtin_name(site):
    fake_distribution(site, "pgd-thief", "pgdthief", PGD_THIEF)
    host = PluginHost(allow={"pgd-thief"})
    assert host.infos["pgdthief"].errors == [
        "attack name 'pgd' from plugin pgdthief is already registered by plugin vlmshield.attacks"]
    assert host.get("attack", "pgd").obj is PGD and host.infos["pgdthief"].contested == {}
    with pytest.raises(UnknownNameError, match="no plugin distribution 'pgd-thief' registers the attack 'pgd'"):
        host.get("attack", "pgd-thief:pgd")


def test_one_distribution_registering_a_name_twice_is_an_error(site):
    fake_distribution(site, "split-dist", "splitone", GOOD)
    (site / "splittwo.py").write_text(GOOD)
    info = site / "split_dist-1.0.dist-info" / "entry_points.txt"
    info.write_text(info.read_text() + "splittwo = splittwo\n")
    host = PluginHost(allow={"split-dist"})
    assert not host.infos["splitone"].errors
    assert host.infos["splittwo"].errors == [
        "attack name 'good-attack' from plugin splittwo is already registered by plugin splitone"]
    assert host.get("attack", "good-attack").plugin == "splitone"


def test_one_plugin_registering_a_name_twice_is_an_error():
    first, second = (type(n, (PGD,), {"name": "same-pgd"}) for n in ("First", "Second"))
    with temporary_host(make_plugin("twice", register_attacks=lambda r: r(first, second))) as host:
        assert host.infos["twice"].errors == [
            "attack name 'same-pgd' from plugin twice is already registered by plugin twice"]
        assert host.get("attack", "same-pgd").obj is first


def _claimant(who: str):
    """An in-process plugin named ``who`` registering the defense 'clash' (aliased 'shared') and a model."""
    defense = type(f"{who}Defense", (TestTimeDefense,), {"name": "clash", "wrap": lambda self, c, calibration=None: c})

    def load(card, device=None, weights=True):
        model = tiny_vlm()
        model.made_by = who
        return model

    return make_plugin(who, register_defenses=lambda r: r(defense, aliases=("shared",)),
                       register_models=lambda r: r(ModelCard("clash-tiny", arch="tiny", loader=load)))


def test_in_process_plugins_stand_for_their_own_provider():
    with temporary_host(_claimant("alpha"), _claimant("beta")) as host:
        assert not host.infos["alpha"].errors and not host.infos["beta"].errors
        with pytest.raises(ContestedNameError) as contested:
            vs.defense("shared")
        assert str(contested.value) == ("defense 'shared' is claimed by both alpha and beta, so neither is used until "
                                        "you choose: ask for 'alpha:shared' or 'beta:shared'.")
        with pytest.raises(ContestedNameError, match="model 'clash-tiny' is claimed by both alpha and beta"):
            vs.zoo.load("clash-tiny", weights=False)
        assert type(vs.defense("beta:clash")).__name__ == "betaDefense"
        assert vs.zoo.load("alpha:clash-tiny", weights=False).made_by == "alpha"


def test_qualified_model_names_load_through_the_zoo(process_host):
    with pytest.warns(PluginWarning):
        get_host()
    assert vs.zoo.load("evil-ttc:fare-tinyvit4", weights=False).made_by == "evil"
    assert vs.core.load_model("ACME_TTC:fare-tinyvit4", weights=False).made_by == "acme"
    assert vs.defense("acme-ttc:ttc").description == "acme"
    with pytest.raises(ContestedNameError, match="model 'fare-tinyvit4' is claimed by both"):
        vs.zoo.load("fare-tinyvit4", weights=False)


def test_the_process_host_warns_once_about_contested_names(process_host):
    with pytest.warns(PluginWarning) as caught:
        get_host()
    assert [str(w.message) for w in caught] == [
        "plugin names claimed by more than one distribution stay unused until you choose (`vlmshield info NAME` "
        "says how): model 'fare-tinyvit4' (acme-ttc 0.3 and evil-ttc 6.6), defense 'ttc' (acme-ttc 0.3 and "
        "evil-ttc 6.6)"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        get_host()


def test_disabling_one_claimant_gives_the_name_to_the_other(process_host, monkeypatch):
    monkeypatch.setenv("VLMSHIELD_DISABLE_PLUGINS", "evil-ttc")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        host = get_host()
    assert host.get("defense", "ttc").distribution == "acme-ttc"
    assert host.infos["acmettc"].contested == {}


def test_the_cli_says_how_to_choose(process_host, capsys):
    with pytest.warns(PluginWarning):
        get_host()
    assert main(["info", "ttc"]) == 2
    out, err = capsys.readouterr()
    assert err == f"vlmshield: error: {CONTESTED}\n" and not out
    assert main(["info", "nobody:ttc"]) == 2
    assert "it comes from acme-ttc 0.3 and evil-ttc 6.6" in capsys.readouterr().err
    assert main(["info", "acme-ttc:ttc", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["distribution"], info["contested_with"], info["qualified_name"]) == \
        ("acme-ttc", ["evil-ttc 6.6"], "acme-ttc:ttc")
    assert main(["list", "defenses"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ttc ")]
    assert len(lines) == 2
    assert lines[0].endswith("[acmettc]  contested with evil-ttc 6.6: ask for acme-ttc:ttc")
    assert lines[1].endswith("[evilttc]  contested with acme-ttc 0.3: ask for evil-ttc:ttc")
    assert main(["plugins"]) == 0
    assert "  contested defenses: ttc (also claimed by evil-ttc 6.6)" in capsys.readouterr().out
    assert main(["plugins", "--json"]) == 0
    plugins = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert plugins["evilttc"]["contested"] == {"defense": ["ttc"], "model": ["fare-tinyvit4"]}
    assert plugins["vlmshield.attacks"]["contested"] == {}


# ------------------------------------------------------------------ provenance for records
BUILTIN_PGD = {"distribution": "vlmshield", "version": vs.__version__, "plugin": "vlmshield.attacks"}
NOBODY = {"distribution": None, "version": None, "plugin": None}


class UserPGD(PGD):
    name = "user-pgd"


def test_provider_of_a_name_a_class_or_an_instance(claimants):
    host = PluginHost(allow=CLAIMANTS)
    assert host.provider_of("attack", "pgd") == BUILTIN_PGD
    assert host.provider_of("attack", "vlmshield:pgd") == BUILTIN_PGD
    assert host.provider_of("attack", PGD) == BUILTIN_PGD
    assert host.provider_of("attack", PGD(eps=8 / 255)) == BUILTIN_PGD
    assert host.provider_of("attack", UserPGD()) == NOBODY  # built by the user in Python
    assert host.provider_of("attack", "no-such-attack") == NOBODY
    assert host.provider_of("defense", "evil-ttc:ttc") == {"distribution": "evil-ttc", "version": "6.6",
                                                           "plugin": "evilttc"}
    evil = host.get("defense", "evil-ttc:ttc").obj
    assert host.provider_of("defense", evil())["distribution"] == "evil-ttc"
    card = host.get("model", "acme-ttc:fare-tinyvit4").obj
    assert host.provider_of("model", card)["distribution"] == "acme-ttc"
    with pytest.raises(ContestedNameError):
        host.provider_of("defense", "ttc")


def test_loaded_plugins_lists_those_without_errors(site):
    host = PluginHost(allow=FAKES)
    loaded = host.loaded_plugins()
    assert {"name": "goodplug", "distribution": "vlmshield-good", "version": "1.2"} in loaded
    assert {"name": "vlmshield.attacks", "distribution": "vlmshield", "version": vs.__version__} in loaded
    assert "brokenplug" not in [p["name"] for p in loaded]
    assert loaded == sorted(loaded, key=lambda p: (p["distribution"] or "", p["name"]))
    with temporary_host(make_plugin("in-process")) as host:
        assert host.loaded_plugins()[0] == {"name": "in-process", "distribution": None, "version": None}


def test_a_command_two_plugins_claim_runs_by_its_qualified_name(capsys):
    def hello(args):
        print("hello from", args.who)

    def command(who):
        return make_plugin(who, register_commands=lambda register: register(
            Command("hello", "say hello", lambda args: hello(argparse.Namespace(who=who)))))

    with temporary_host(command("first"), command("second")):
        assert main(["first:hello"]) == 0 and capsys.readouterr().out == "hello from first\n"
        assert main(["second:hello"]) == 0 and capsys.readouterr().out == "hello from second\n"
        assert main(["hello"]) == 2 and "invalid choice" in capsys.readouterr().err
