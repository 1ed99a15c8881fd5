"""The built-in datasets, a plugin like any other: fakedata, imagefolder and the zero-shot suite."""

from vlmshield.api import hookimpl

from . import fakedata, imagefolder, zeroshot


@hookimpl
def register_datasets(register):
    register(fakedata.ENTRY, imagefolder.ENTRY, *zeroshot.ENTRIES)
