"""The built-in datasets, a plugin like any other. The real zero-shot suite comes with its own issue."""

from vlmshield.core import hookimpl

from . import fakedata, imagefolder


@hookimpl
def register_datasets(register):
    register(fakedata.ENTRY)
    register(imagefolder.ENTRY)
