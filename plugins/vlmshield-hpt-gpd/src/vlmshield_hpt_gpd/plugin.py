"""The HPT-GPD plugin: the ``hpt-gpd`` defense, its recipe entries and the world models it ships."""

from __future__ import annotations

from pathlib import Path

from vlmshield.api import hookimpl, packaged_cards, recipe_card

from .method import HPTGPD, PAPER

WEIGHTS = Path(__file__).parent / "weights"

#: target -> proxy. ViT-B/32 <- ViT-B/16 is the released code's pair; ViT-B/16 <- ViT-B/32 is its mirror
#: (the pair of the user's example; the paper's other pairs were not available).
PAIRS = {"vitb32": ("ViT-B-32", "clip-vitb16"), "vitb16": ("ViT-B-16", "clip-vitb32")}

RECIPES = tuple(
    recipe_card(f"hpt-gpd-{short}", "hpt-gpd", f"clip-{short}", arch, "2/255", paper=PAPER,
                dataset="tinyimagenet:/path/to/tinyimagenet", training_data="TinyImageNet", flags=f"--proxy {proxy}",
                description=f"HPT-GPD on OpenAI's {arch} with the vanilla {proxy} as the proxy, on TinyImageNet at "
                            f"eps 2/255: no weights were released; the reconstructed recipe trains it.")
    for short, (arch, proxy) in PAIRS.items())


@hookimpl
def register_defenses(register):
    register(HPTGPD)


@hookimpl
def register_models(register):
    register(*RECIPES, *packaged_cards(WEIGHTS, paper=PAPER, license="MIT"))
