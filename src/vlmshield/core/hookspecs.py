"""The whole plugin API on one page.

A plugin is a module (or object) with functions named like the hooks below, decorated with
``hookimpl`` (``from vlmshield.api import hookimpl``), and made visible to vlmshield by an entry point
in the group ``vlmshield``::

    [project.entry-points.vlmshield]
    mymethod = "vlmshield_mymethod.plugin"

Every hook receives a ``register`` callback and calls it with what it contributes: ``register(a, b, c)``
registers several objects, ``register(obj, aliases=("other-name",))`` one object under more names.
Plugins never return values. vlmshield validates each registration (name syntax, duplicates, type) and
remembers the plugin and version that made it. vlmshield's own attacks, datasets, evaluators, protocols,
trainers, models and commands register through these same hooks.

What each hook registers:

- attacks: a subclass of ``Attack`` (evasion: ``attack(classifier, x, y) -> x_adv``) or of
  ``BackdoorAttack`` (plants a trigger: ``apply_trigger(x)``, a target class, ``poison(...)``).
- defenses: a subclass of ``Defense`` whose ``kind`` says what it consumes and produces:
  ``finetune`` (a VLM in, a more robust VLM out: TeCoA, FARE, HPT-GPD), ``test-time`` (wraps a
  classifier at inference: TTC), ``backdoor-removal`` (a poisoned VLM and image-text pairs in, a
  cleaned VLM out: PAR), ``domain-adaptation`` (a labelled source and an unlabelled target in, a
  classifier out: DART).
- trainers: a subclass of ``Trainer`` that runs the training-time defenses naming it (``adversarial``,
  ``contrastive``, ``distillation`` are built in); a new kind of training needs no edit of vlmshield.
- evaluators: a subclass of ``Evaluator`` (zero-shot accuracy, attack success rate, accuracy of a
  domain-adapted classifier, ...).
- datasets: a ``DatasetEntry`` (a name, a builder, class names and prompt templates).
- models: a ``ModelCard`` (a zoo entry: architecture, weights source, threat model, numbers).
- model sources: a ``ModelSource`` that loads the names of one scheme (``local-dir:PATH``,
  ``hf-hub:ORG/NAME``): ``load_model(name)`` resolves a name through the cards and the sources.
- architectures: an ``Architecture`` (a name and ``build(**args) -> nn.Module``): a classifier that is not
  timm's, saved as a model folder that names it and built again from it (a domain-adapted network).
- protocols: a ``Protocol`` (a named evaluation setting: attack, eps values, steps, n, prompts, datasets).
- commands: a ``Command`` (a ``vlmshield`` subcommand: name, help, arguments, run function).
"""

from __future__ import annotations

import pluggy

PROJECT = "vlmshield"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_attacks(register):
    """Register attack classes: ``register(AttackSubclass, ...)``."""


@hookspec
def register_defenses(register):
    """Register defense classes: ``register(DefenseSubclass, ...)``."""


@hookspec
def register_trainers(register):
    """Register trainer classes: ``register(TrainerSubclass, ...)``."""


@hookspec
def register_evaluators(register):
    """Register evaluator classes: ``register(EvaluatorSubclass, ...)``."""


@hookspec
def register_datasets(register):
    """Register datasets: ``register(DatasetEntry(...), ...)``."""


@hookspec
def register_models(register):
    """Register zoo entries: ``register(ModelCard(...), ...)``."""


@hookspec
def register_model_sources(register):
    """Register model-name schemes: ``register(ModelSource(...), ...)``."""


@hookspec
def register_architectures(register):
    """Register classifier architectures: ``register(Architecture(...), ...)``."""


@hookspec
def register_protocols(register):
    """Register evaluation protocols: ``register(Protocol(...), ...)``."""


@hookspec
def register_commands(register):
    """Register CLI subcommands: ``register(Command(...), ...)``."""
