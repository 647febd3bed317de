"""The container images the components run in: the one place that names them.

Resolution, first match wins:

1. ``PTDISTILL_CPU_IMAGE`` / ``PTDISTILL_GPU_IMAGE`` environment variables (compile time);
2. ``images/images.json`` of the repository (``{"cpu": "...", "gpu": "..."}``), written by
   ``images/build.sh`` with the references it pushed (tagged by git commit);
3. the defaults below (also what an installed wheel uses, where ``images/`` is absent).

kfp.local's SubprocessRunner ignores them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DEFAULT_CPU_IMAGE = "ghcr.io/ptdistill/ptdistill-cpu:0.1.0"
DEFAULT_GPU_IMAGE = "ghcr.io/ptdistill/ptdistill-gpu:0.1.0"

# components/images.py -> repository root -> images/images.json
IMAGES_JSON = Path(__file__).resolve().parent.parent / "images" / "images.json"


def load_image_refs(path: Path = IMAGES_JSON) -> dict[str, str]:
    """The ``{"cpu": ..., "gpu": ...}`` references in ``path``; ``{}`` if it is absent or unusable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str) and v.strip()}


def resolve_images(path: Path = IMAGES_JSON, environ=os.environ) -> tuple[str, str]:
    """(cpu, gpu) image references: environment overrides, then ``path``, then the defaults."""
    refs = load_image_refs(path)
    cpu = environ.get("PTDISTILL_CPU_IMAGE") or refs.get("cpu") or DEFAULT_CPU_IMAGE
    gpu = environ.get("PTDISTILL_GPU_IMAGE") or refs.get("gpu") or DEFAULT_GPU_IMAGE
    return cpu, gpu


CPU_IMAGE, GPU_IMAGE = resolve_images()
