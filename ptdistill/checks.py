"""Input validation shared by the losses, the proxy solver and the search.

Every check raises a ``ValueError`` that names the argument and says what was expected,
so that bad input fails before any work starts.
"""

from __future__ import annotations

import torch

#: How far a probability row may sum from 1 before it is rejected.
ROW_SUM_TOL = 1e-4


def check_probs(name: str, probs: torch.Tensor, *, ndim: int | None = 2) -> None:
    """Check that ``probs`` holds probability rows over its last dimension."""
    if not isinstance(probs, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(probs).__name__}")
    if ndim is not None and probs.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dims (examples, classes), got shape {tuple(probs.shape)}")
    if probs.ndim < 1 or probs.shape[-1] < 2:
        raise ValueError(f"{name}: expected at least 2 classes in the last dim, got shape {tuple(probs.shape)}")
    if probs.numel() == 0:
        raise ValueError(f"{name}: is empty (shape {tuple(probs.shape)}); expected at least one example")
    if not probs.dtype.is_floating_point:
        raise ValueError(f"{name}: expected a floating-point tensor, got {probs.dtype}")
    p = probs.detach()
    bad = ~torch.isfinite(p)
    if bad.any():
        row = int(bad.reshape(-1, p.shape[-1]).any(-1).nonzero()[0])
        raise ValueError(f"{name}: contains NaN or inf (first in row {row}); expected finite probabilities")
    if (p < 0).any():
        row = int((p < 0).reshape(-1, p.shape[-1]).any(-1).nonzero()[0])
        raise ValueError(
            f"{name}: contains negative values (first in row {row}); expected probabilities in [0, 1]"
            " - did you pass logits? apply softmax first"
        )
    sums = p.double().sum(-1).reshape(-1)
    off = (sums - 1).abs() > ROW_SUM_TOL
    if off.any():
        row = int(off.nonzero()[0])
        raise ValueError(
            f"{name}: rows must sum to 1, row {row} sums to {float(sums[row]):.6g}"
            " - did you pass logits? apply softmax first"
        )


def check_labels(name: str, labels: torch.Tensor, n: int, num_classes: int) -> None:
    """Check integer class labels of shape (n,) in [0, num_classes)."""
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise ValueError(f"{name}: expected integer class indices, got {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"{name}: expected shape ({n},) to match the probabilities, got {tuple(labels.shape)}")
    if n and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(((labels < 0) | (labels >= num_classes)).nonzero()[0])
        raise ValueError(
            f"{name}: label {int(labels[bad])} at position {bad} is outside [0, {num_classes})"
        )


def check_eps(name: str, eps: torch.Tensor, num_classes: int, *, allow_batch: bool = False) -> None:
    """Check perturbation coefficients of shape (C, M), or (K, C, M) when ``allow_batch``."""
    if not isinstance(eps, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(eps).__name__}")
    shapes = "(C, M) or (K, C, M)" if allow_batch else "(C, M)"
    if eps.ndim not in ((2, 3) if allow_batch else (2,)):
        raise ValueError(f"{name}: expected shape {shapes} with C={num_classes}, got {tuple(eps.shape)}")
    if eps.shape[-2] != num_classes:
        raise ValueError(
            f"{name}: expected {num_classes} rows (one per class) in shape {shapes}, got {tuple(eps.shape)}"
        )
    if eps.shape[-1] < 1:
        raise ValueError(f"{name}: expected at least one perturbation order (M >= 1), got {tuple(eps.shape)}")
    if eps.numel() == 0:
        raise ValueError(f"{name}: is empty, got shape {tuple(eps.shape)}")
    if not torch.isfinite(eps).all():
        raise ValueError(f"{name}: contains NaN or inf; expected finite coefficients")
