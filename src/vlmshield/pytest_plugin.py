"""vlmshield's pytest plugin (the ``pytest11`` entry point): the conformance checks of ``vlmshield.conformance``
for a plugin's own tests, as the fixture ``vlmshield_conformance`` or as ``pytest --vlmshield-conformance DIST``
(one test per distribution named, beside the collected ones)."""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption("--vlmshield-conformance", action="append", default=[], metavar="DIST",
                     help="also run vlmshield's conformance checks on everything the installed plugin "
                          "distribution DIST registers (repeatable)")


@pytest.fixture
def vlmshield_conformance():
    """``vlmshield_conformance(DIST)``: check everything the distribution (or in-process plugin module) ``DIST``
    registers; fails the test listing every problem."""
    from vlmshield.conformance import check_distribution

    return check_distribution


class ConformanceItem(pytest.Item):
    """One distribution's conformance checks, as a test."""

    def __init__(self, *, distribution: str, **kwargs):
        super().__init__(**kwargs)
        self.distribution = distribution

    def runtest(self):
        from vlmshield.conformance import check_distribution

        check_distribution(self.distribution)

    def repr_failure(self, excinfo, style=None):
        from vlmshield.conformance import ConformanceError

        if isinstance(excinfo.value, ConformanceError):
            return f"{self.distribution} does not conform:\n{excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path, None, f"vlmshield conformance of {self.distribution}"


def pytest_collection_modifyitems(session, config, items):
    for distribution in config.getoption("vlmshield_conformance"):
        items.append(ConformanceItem.from_parent(session, name=f"vlmshield-conformance[{distribution}]",
                                                 distribution=distribution))
