"""The built-in datasets, a plugin like any other: fakedata, imagefolder, captions-csv, coco-karpathy and the zero-shot
suite."""

from vlmshield.api import hookimpl

from . import captions, coco, fakedata, imagefolder, zeroshot


@hookimpl
def register_datasets(register):
    register(fakedata.ENTRY, imagefolder.ENTRY, captions.ENTRY, coco.ENTRY, *zeroshot.ENTRIES)
