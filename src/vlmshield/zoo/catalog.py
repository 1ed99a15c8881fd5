"""The core's catalog: the base (vanilla) CLIP models from open_clip's pretrained registry, and the robust
CLIPs that exist publicly today (RobustVLM's FARE and TeCoA checkpoints: on the Hugging Face Hub, and the
OpenAI-initialised ViT-B/32 ones as vision-only files to download by hand).

Every model whose weights start from OpenAI's (the vanilla CLIPs, and RobustVLM's fine-tunes of them) is
built with QuickGELU, the activation OpenAI trained with, as open_clip's ``openai`` tags declare; its card
says so (``quick_gelu``, and its description). The LAION-initialised ones use nn.GELU. The cards state it
rather than ask open_clip's registry, so that listing the catalog does not import open_clip (a test checks
each against the registry).

A built-in plugin. Models that a method plugin trains (``hpt-gpd-vitb16``, the world's defended models)
are registered by that plugin. The Hub entries are not pinned to a commit yet: the Hub could not be
reached when they were written, so their revision is the repo's default branch until someone pins it.
"""

import warnings

from vlmshield.api import VLM, ModelCard

from . import hub
from .visual import load_manual

OPENAI_CLIP = "Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021"

#: What the description of a model fine-tuned from OpenAI's weights says about its activation.
OPENAI_INIT = "OpenAI-initialised: it runs QuickGELU, the activation OpenAI's weights were trained with."


def _openai(name: str, arch: str, what: str) -> ModelCard:
    return ModelCard(name, arch=arch, pretrained="openai", paper=OPENAI_CLIP, quick_gelu=True,
                     description=f"OpenAI CLIP {what}; it runs QuickGELU, the activation OpenAI trained it with.")


BASE_MODELS = (
    _openai("clip-rn50", "RN50", "ResNet-50"),
    _openai("clip-rn101", "RN101", "ResNet-101"),
    _openai("clip-vitb32", "ViT-B-32", "ViT-B/32"),
    _openai("clip-vitb16", "ViT-B-16", "ViT-B/16"),
    _openai("clip-vitl14", "ViT-L-14", "ViT-L/14"),
    _openai("clip-vitl14-336", "ViT-L-14-336", "ViT-L/14 at 336 px"),
)


ROBUSTVLM = ("Schlarmann, Singh, Croce and Hein, Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision "
             "Embeddings for Robust Large Vision-Language Models, ICML 2024")
ROBUSTVLM_BIBTEX = """@inproceedings{schlarmann2024robustclip,
  title={Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision Embeddings for Robust Large
         Vision-Language Models},
  author={Schlarmann, Christian and Singh, Naman Deep and Croce, Francesco and Hein, Matthias},
  booktitle={ICML}, year={2024}}"""
#: RobustVLM README, "Summary of results": average zero-shot accuracy (%) over its 13 datasets, APGD.
ROBUSTVLM_L14 = ("RobustVLM README: mean zero-shot accuracy over its 13 datasets (presumably), APGD-CE (100 steps,"
                 " 5 restarts) + APGD-T (100 steps, 9 targets), 1000 images per dataset, Linf")
#: RobustVLM README, "Additional Models" (base-size models).
ROBUSTVLM_BASE = "RobustVLM README (Additional Models): mean zero-shot accuracy, APGD, Linf"


def _activation(quick_gelu) -> str:
    return "QuickGELU" if quick_gelu else "nn.GELU"


def load_from_hub(card: ModelCard, device=None, weights: bool = True) -> VLM:
    """A catalog entry on the Hub; ``weights=False`` builds its base architecture (no download) with the
    activation of its base model's weights, which is what the Hub config declares.

    The Hub config builds the model; one that declares another activation than the card's is warned about.
    """
    if not weights:
        return VLM.from_open_clip(card.arch, None, quick_gelu=card.quick_gelu, device=device, name=card.name)
    spec = card.source.removeprefix(hub.PREFIX)
    if hub.parse(spec)[1] is None:
        warnings.warn(f"{card.name}: the catalog does not pin {spec} to a commit yet (the Hub could not be reached "
                      f"when the entry was written), so its default branch is loaded; pin it with "
                      f"hf-hub:{spec}@COMMIT for a reproducible run.", stacklevel=3)
    vlm = hub.load(spec, device=device, sha256=card.files)
    declared = bool((vlm.model_cfg or {}).get("quick_gelu", False))  # RobustVLM writes it as the string "TRUE"
    if card.quick_gelu is not None and declared != card.quick_gelu:
        warnings.warn(f"{card.name}: the config of {spec} declares {_activation(declared)}, but its weights come "
                      f"from {card.base_model}, trained with {_activation(card.quick_gelu)}; it is built as the config "
                      f"says.", stacklevel=3)
    return vlm


def _robust(name, repo, arch, base, method, eps, data, clean, robust) -> ModelCard:
    return ModelCard(
        name, arch=arch, method=method, base_model=base, threat_model={"norm": "Linf", "eps": f"{eps}/255"},
        training_data=data, source=f"hf-hub:{repo}", license="MIT", loader=load_from_hub, paper=ROBUSTVLM,
        bibtex=ROBUSTVLM_BIBTEX, quick_gelu=base.endswith("/openai"),
        description=f"{'FARE' if method == 'fare' else 'TeCoA (Mao et al., ICLR 2023)'} at eps {eps}/255 on "
                    f"ImageNet, from {base}; trained and released by RobustVLM."
                    + (f" {OPENAI_INIT}" if base.endswith("/openai") else ""),
        metrics={"protocol": ROBUSTVLM_L14 if arch == "ViT-L-14" else ROBUSTVLM_BASE, "clean": clean,
                 "robust": robust})


ROBUST_MODELS = (
    _robust("fare2-vitl14", "chs20/fare2-clip", "ViT-L-14", "ViT-L-14/openai", "fare", 2, "ImageNet, 2 epochs",
            67.0, {"2/255": 43.1, "4/255": 20.5}),
    _robust("fare4-vitl14", "chs20/fare4-clip", "ViT-L-14", "ViT-L-14/openai", "fare", 4, "ImageNet, 2 epochs",
            61.1, {"2/255": 45.9, "4/255": 32.4}),
    _robust("tecoa2-vitl14", "chs20/tecoa2-clip", "ViT-L-14", "ViT-L-14/openai", "tecoa", 2, "ImageNet, 2 epochs",
            60.0, {"2/255": 43.6, "4/255": 27.0}),
    _robust("tecoa4-vitl14", "chs20/tecoa4-clip", "ViT-L-14", "ViT-L-14/openai", "tecoa", 4, "ImageNet, 2 epochs",
            54.2, {"2/255": 42.3, "4/255": 31.9}),
    _robust("fare4-vitb32-laion2b", "chs20/FARE4-ViT-B-32-laion2B-s34B-b79K", "ViT-B-32", "ViT-B-32/laion2b_s34b_b79k",
            "fare", 4, "ImageNet", 53.8, {"1/255": 44.4, "2/255": 35.5, "4/255": 21.2}),
    _robust("tecoa4-vitb32-laion2b", "chs20/TeCoA4-ViT-B-32-laion2B-s34B-b79K", "ViT-B-32",
            "ViT-B-32/laion2b_s34b_b79k", "tecoa", 4, "ImageNet", 46.8, {"1/255": 40.6, "2/255": 34.5, "4/255": 23.3}),
    _robust("fare4-vitb16-laion2b", "chs20/FARE4-ViT-B-16-laion2B-s34B-b88K", "ViT-B-16", "ViT-B-16/laion2b_s34b_b88k",
            "fare", 4, "ImageNet", 56.6, {"1/255": 47.7, "2/255": 39.2, "4/255": 23.5}),
    _robust("tecoa4-vitb16-laion2b", "chs20/TeCoA4-ViT-B-16-laion2B-s34B-b88K", "ViT-B-16",
            "ViT-B-16/laion2b_s34b_b88k", "tecoa", 4, "ImageNet", 51.5, {"1/255": 45.0, "2/255": 38.4, "4/255": 26.4}),
    _robust("fare4-convnextb-laion2b", "chs20/FARE4-convnext_base_w-laion2B-s13B-b82K-augreg", "convnext_base_w",
            "convnext_base_w/laion2b_s13b_b82k_augreg", "fare", 4, "ImageNet", 60.2,
            {"1/255": 52.3, "2/255": 44.1, "4/255": 28.4}),
    _robust("tecoa4-convnextb-laion2b", "chs20/TeCoA4-convnext_base_w-laion2B-s13B-b82K-augreg", "convnext_base_w",
            "convnext_base_w/laion2b_s13b_b82k_augreg", "tecoa", 4, "ImageNet", 56.2,
            {"1/255": 50.4, "2/255": 44.1, "4/255": 31.8}),
)


#: RobustVLM README (Additional Models): the OpenAI-initialised ViT-B/32 models exist only as vision-only
#: ``.pt`` files on the Tuebingen Nextcloud, linked from the README; their sha256 is not published.
ROBUSTVLM_README = "https://github.com/chs20/RobustVLM#additional-models"


def _manual(name, filename, method, eps, clean, robust) -> ModelCard:
    return ModelCard(
        name, arch="ViT-B-32", method=method, base_model="ViT-B-32/openai",
        threat_model={"norm": "Linf", "eps": f"{eps}/255"}, training_data="ImageNet", source="manual",
        files={filename: None}, homepage=ROBUSTVLM_README, license="MIT", loader=load_manual, paper=ROBUSTVLM,
        bibtex=ROBUSTVLM_BIBTEX, quick_gelu=True,
        description=f"{'FARE' if method == 'fare' else 'TeCoA'} at eps {eps}/255 on ImageNet, from OpenAI's "
                    f"ViT-B/32; a vision-only checkpoint released by RobustVLM, loaded into its base model. "
                    f"{OPENAI_INIT}",
        metrics={"protocol": ROBUSTVLM_BASE, "clean": clean, "robust": robust})


VISION_ONLY_MODELS = (
    _manual("tecoa1-vitb32", "vitb32_tecoa_eps_1.pt", "tecoa", 1, 53.1, {"1/255": 38.8, "2/255": 26.6, "4/255": 9.6}),
    _manual("fare1-vitb32", "vitb32_fare_eps_1.pt", "fare", 1, 60.5, {"1/255": 38.0, "2/255": 20.1, "4/255": 2.9}),
    _manual("tecoa4-vitb32", "vitb32_tecoa_eps_4.pt", "tecoa", 4, 44.0, {"1/255": 38.2, "2/255": 33.1, "4/255": 23.6}),
    _manual("fare4-vitb32", "vitb32_fare_eps_4.pt", "fare", 4, 48.6, {"1/255": 40.6, "2/255": 33.7, "4/255": 21.9}),
)

#: Every card of the catalog, as the zoo plugin registers them.
CARDS = (*BASE_MODELS, *ROBUST_MODELS, *VISION_ONLY_MODELS)
