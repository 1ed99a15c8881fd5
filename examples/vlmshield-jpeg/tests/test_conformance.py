"""vlmshield-jpeg, installed, passes vlmshield's conformance checks on everything it registers."""


def test_conformance(vlmshield_conformance):
    vlmshield_conformance("vlmshield-jpeg")
