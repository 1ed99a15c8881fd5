"""The built-in datasets, a plugin like any other: fakedata, imagefolder, captions-csv and the zero-shot suite."""

from vlmshield.api import hookimpl

from . import captions, fakedata, imagefolder, zeroshot


@hookimpl
def register_datasets(register):
    register(fakedata.ENTRY, imagefolder.ENTRY, captions.ENTRY, *zeroshot.ENTRIES)
