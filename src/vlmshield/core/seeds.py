"""Seeds that make runs repeatable: every piece of work (a batch, a restart, an epoch) draws from a seed
that depends only on the run's seed and the piece's name."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *parts: object) -> int:
    """A seed for one piece of work that depends only on the run's ``seed`` and ``parts``."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
