"""The core's catalog: the base (vanilla) CLIP models, from open_clip's pretrained registry.

A built-in plugin: the robust models are registered by the plugins that produce them.
"""

from vlmshield.core import ModelCard, hookimpl

OPENAI_CLIP = "Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021"

BASE_MODELS = (
    ModelCard("clip-rn50", arch="RN50", pretrained="openai", paper=OPENAI_CLIP,
              description="OpenAI CLIP ResNet-50."),
    ModelCard("clip-rn101", arch="RN101", pretrained="openai", paper=OPENAI_CLIP,
              description="OpenAI CLIP ResNet-101."),
    ModelCard("clip-vitb32", arch="ViT-B-32", pretrained="openai", paper=OPENAI_CLIP,
              description="OpenAI CLIP ViT-B/32."),
    ModelCard("clip-vitb16", arch="ViT-B-16", pretrained="openai", paper=OPENAI_CLIP,
              description="OpenAI CLIP ViT-B/16."),
    ModelCard("clip-vitl14", arch="ViT-L-14", pretrained="openai", paper=OPENAI_CLIP,
              description="OpenAI CLIP ViT-L/14."),
    ModelCard("clip-vitl14-336", arch="ViT-L-14-336", pretrained="openai", paper=OPENAI_CLIP,
              description="OpenAI CLIP ViT-L/14 at 336 px."),
)


@hookimpl
def register_models(register):
    for card in BASE_MODELS:
        register(card)
