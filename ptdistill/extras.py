"""The optional parts of ptdistill and the pip extra that installs each.

``pip install ptdistill`` installs the core (losses, proxy search, metrics, checks, config,
io/storage, ``ptdistill search``); a module that needs more calls :func:`require` first, so that
importing it without its extra fails with one line naming the extra instead of a traceback deep
inside kfp or transformers. The extras themselves are declared in ``pyproject.toml``.
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRAS", "MissingExtra", "require"]

#: Extra name -> the top-level modules it installs (import names, checked without importing them).
EXTRAS: dict[str, tuple[str, ...]] = {
    "text": ("transformers", "datasets", "accelerate", "safetensors"),
    "pipelines": ("kfp", "mlflow", "google.cloud.storage", "filelock", "psutil", "scipy"),
    # Real tables bundled with statsmodels, written as CSVs by scripts/real_tables.py.
    "tables": ("statsmodels",),
}


class MissingExtra(ModuleNotFoundError):
    """A part of ptdistill was imported without the pip extra that installs its dependencies."""


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ModuleNotFoundError, ValueError):  # a missing parent package; a module blocked in sys.modules
        return False


def require(extra: str, part: str) -> None:
    """Raise :class:`MissingExtra` (one line: ``{part} needs the '{extra}' extra: pip install
    'ptdistill[{extra}]'``) unless every module of ``extra`` can be imported; KeyError for an
    extra not in :data:`EXTRAS`. Nothing is imported: a module calls this before its own imports."""
    missing = [module for module in EXTRAS[extra] if not _installed(module)]
    if missing:
        raise MissingExtra(f"{part} needs the {extra!r} extra (missing {', '.join(missing)}):"
                           f" pip install 'ptdistill[{extra}]'", name=missing[0])
