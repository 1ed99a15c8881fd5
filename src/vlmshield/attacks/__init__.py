"""The standard attacks and the backdoor triggers, a built-in plugin: registered through the same hook as any
third-party attack."""

from vlmshield.api import hookimpl

from .aa_lite import AALite
from .apgd import APGD
from .apgd_t import APGDT
from .badclip import BadCLIPPatch
from .bpda_eot import BPDAEOT
from .cw import CW
from .fgsm import FGSM
from .pgd import PGD
from .triggers import TRIGGERS, BadNet, BadNetStripes, Blended, BlendedStripes, BlendedText, BlendedTriangles, WaNet

__all__ = ["AALite", "APGD", "APGDT", "BPDAEOT", "CW", "FGSM", "PGD",
           "BadCLIPPatch", "BadNet", "BadNetStripes", "Blended", "BlendedStripes", "BlendedText", "BlendedTriangles",
           "WaNet"]


@hookimpl
def register_attacks(register):
    register(FGSM, PGD, CW)
    register(APGD, aliases=("apgd",))
    register(APGDT, AALite, BPDAEOT)
    register(*TRIGGERS, BadCLIPPatch)
