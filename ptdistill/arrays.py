"""Array-likes in, tensors out: what the own-loop API (losses, proxy solver, search) accepts.

A user's teacher probabilities and labels come as numpy arrays (``np.load`` of the CLI's
``.npy`` files, ``search``'s own numpy coefficients), lists or torch tensors; the library
computes in torch. :func:`as_tensor` is the one conversion, done once where a public function
takes its inputs, before the checks of :mod:`ptdistill.checks` run.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

#: What the public functions accept wherever they take probabilities, labels or coefficients.
ArrayLike = torch.Tensor | np.ndarray | list | tuple


def as_tensor(name: str, value: Any, device: torch.device | str | None = None) -> torch.Tensor:
    """``value`` as a tensor, without copying where it can.

    A tensor is returned as it is (same object: its autograd graph, dtype and device are kept;
    ``device`` is ignored). A numpy array, list or tuple becomes a tensor of numpy's dtype for it
    (Python floats float64, ints int64; a writable array shares its memory, a read-only one is copied)
    on ``device`` (default CPU).
    Raises ValueError naming ``name`` for anything else: ragged lists, strings, objects.
    """
    if isinstance(value, torch.Tensor):
        return value
    if not isinstance(value, (np.ndarray, list, tuple)):
        raise ValueError(f"{name}: expected a torch.Tensor, numpy array or list of numbers, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except ValueError as err:  # ragged nested lists
        raise ValueError(f"{name}: expected a rectangular array of numbers ({err})") from None
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got an array of dtype {array.dtype}")
    if not array.flags.writeable:  # e.g. a parquet column: torch warns on read-only memory, so copy it
        array = array.copy()
    return torch.as_tensor(np.ascontiguousarray(array), device=device)  # torch takes no negative strides


def softmax_probs(logits: np.ndarray) -> np.ndarray:
    """Softmax over classes of (n, C) logits, in float64; every row sums to 1."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ValueError(f"logits: expected shape (n, C), got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError(f"logits: {int((~np.isfinite(z)).sum())} non-finite value(s)")
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
