"""The built-in datasets, a plugin like any other: fakedata, imagefolder, captions-csv, coco-karpathy, the zero-shot
suite and the domain adaptation benchmarks (office31, office-home, visda2017, domainnet, digits)."""

from vlmshield.api import hookimpl

from . import captions, coco, domains, fakedata, imagefolder, zeroshot


@hookimpl
def register_datasets(register):
    register(fakedata.ENTRY, imagefolder.ENTRY, captions.ENTRY, coco.ENTRY, *zeroshot.ENTRIES, *domains.ENTRIES)
