"""Model families: one package each, found by name.

A family is everything that differs between kinds of model: how a split is stored, how a
teacher is trained and run, how a student is built, distilled and scored. Each family package
holds its data split, models, training hooks and a :class:`~ptdistill.families.backend.Backend`
(``backend.py``); the pipeline steps only ever ask :func:`backend_for`.

- ``mlp``: feature vectors (the synthetic Gaussians of the paper's §5.1 and your own tables);
- ``text``: Hugging Face encoders and seq2seq models on sentences (pairs).

A new family (e.g. ``vision`` for CIFAR-100) is a package ``ptdistill/families/<name>/`` with a
``backend.py`` and an entry in :data:`FAMILIES`; see ``docs/architecture.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry imports a family only when a config asks for it
    from ptdistill.families.backend import Backend

__all__ = ["FAMILIES", "backend_for"]

#: Family name -> "module:class" of its backend. Imported on first use, so a core install
#: without a family's extra (``ptdistill[text]``) can still run the others.
FAMILIES: dict[str, str] = {
    "mlp": "ptdistill.families.mlp.backend:MLPBackend",
    "text": "ptdistill.families.text.backend:TextBackend",
}


def backend_for(config) -> Backend:
    """The backend of ``config.family`` (an ``ExperimentConfig``); ValueError for an unknown family."""
    try:
        module, name = FAMILIES[config.family].split(":")
    except KeyError:
        raise ValueError(f"unknown model family {config.family!r}; expected one of {sorted(FAMILIES)}") from None
    return getattr(importlib.import_module(module), name)()
