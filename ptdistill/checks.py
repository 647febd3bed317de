"""Input validation shared by the losses, the proxy solver and the search.

Every check raises a ``ValueError`` that names the argument and says what was expected,
so that bad input fails before any work starts.
"""

from __future__ import annotations

import logging
import math
from numbers import Real

import numpy as np
import torch

log = logging.getLogger(__name__)

#: How far a float32 / float64 probability row may sum from 1 before it is rejected.
ROW_SUM_TOL = 1e-4
#: The most a row of probabilities rounded to a few decimals in a text file may sum from 1; wider
#: would let integer rows such as ``1,1,0`` through as "rounded" probabilities.
MAX_TEXT_TOL = 0.05
#: Rows further than this from 1 (or with a value above 1) look like scores, not probabilities.
_FAR_FROM_ONE = 0.5
_LOGITS_HINT = " - did you pass logits? apply softmax first"
_PERCENT_HINT = " - percentages? divide by 100"


def row_sum_tolerance(num_classes: int, *, dtype: torch.dtype | None = None, decimals: int | None = None) -> float:
    """How far a row of ``num_classes`` probabilities may sum from 1 given the precision it was stored in.

    ``dtype`` (a floating torch dtype, unit roundoff u = eps/2 and smallest subnormal s): rounding
    each p_i to the dtype moves it by at most u * p_i (by at most s/2 if p_i is subnormal), so the
    row sum moves by at most u * sum(p_i) + C * s/2 = u + C * s/2; a softmax whose normaliser was
    also rounded to the dtype adds up to u more (measured: at most 1.5 u for C = 2..1000). So

        tol = 2 u + C s / 2        (float16: 9.8e-4, bfloat16: 7.8e-3, nearly independent of C)

    ``decimals`` (values written as text with that many digits after the point): each value is
    off by at most half a unit in the last place, so

        tol = min(C * 0.5 * 10**-decimals, MAX_TEXT_TOL)   (3 decimals, 3 classes: 1.5e-3)

    Values written with fewer than 2 decimals (``1,0,0``) are taken as exact: half a unit of the
    first decimal per class would let rows such as ``1,1,0`` through as rounding.

    Never below ``ROW_SUM_TOL``, so float32 and float64 rows keep the strict check.
    """
    tolerance = ROW_SUM_TOL
    if dtype is not None and dtype.is_floating_point:
        info = torch.finfo(dtype)
        tolerance = max(tolerance, info.eps + num_classes * info.smallest_normal * info.eps / 2)
    if decimals is not None and decimals >= 2:
        tolerance = max(tolerance, min(num_classes * 0.5 * 10.0 ** -decimals, MAX_TEXT_TOL))
    return tolerance


def user_tolerance(num_classes: int, *, decimals: int | None = None) -> float:
    """The row-sum tolerance for teacher probabilities a user hands in (``search()``, the CLI's files).

    The rule: whatever the dtype, rows may sum from 1 by as much as a bfloat16 softmax does
    (7.8e-3, :func:`row_sum_tolerance` of ``torch.bfloat16``), since fp16 / bf16 outputs usually
    arrive as float32 (``.float().numpy()``), float64 lists or CSV text and the dtype no longer
    says where they came from; wider still for CSV values rounded to ``decimals`` (capped at
    ``MAX_TEXT_TOL``). That is far too tight for logits or scores to pass (they are also caught by
    negative values and values above 1). The losses keep the strict check of :func:`check_probs`.
    """
    tolerance = row_sum_tolerance(num_classes, dtype=torch.bfloat16)
    if decimals is not None:
        tolerance = max(tolerance, row_sum_tolerance(num_classes, decimals=decimals))
    return tolerance


def check_probs(name: str, probs: torch.Tensor, *, ndim: int | None = 2, tolerance: float | None = None) -> None:
    """Check that ``probs`` holds probability rows over its last dimension.

    Rows must sum to 1 within ``tolerance`` (default: :func:`row_sum_tolerance` of the tensor's
    dtype: 1e-4 for float32 / float64, wider for float16 / bfloat16). The "did you pass logits?"
    hint is given for negative values, values above 1 and rows more than 0.5 from 1 (not for an
    all-zero row, which no softmax gives).
    """
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
    if tolerance is None:
        tolerance = row_sum_tolerance(probs.shape[-1], dtype=probs.dtype)
    p = probs.detach()
    bad = ~torch.isfinite(p)
    if bad.any():
        row = int(bad.reshape(-1, p.shape[-1]).any(-1).nonzero()[0])
        raise ValueError(f"{name}: contains NaN or inf (first in row {row}); expected finite probabilities")
    if (p < 0).any():
        row = int((p < 0).reshape(-1, p.shape[-1]).any(-1).nonzero()[0])
        raise ValueError(
            f"{name}: contains negative values (first in row {row}); expected probabilities in [0, 1]{_LOGITS_HINT}"
        )
    sums = p.double().sum(-1).reshape(-1)
    off = (sums - 1).abs() > tolerance
    if off.any():
        row = int(off.nonzero()[0])
        far = (bool((p > 1).any()) or float((sums - 1).abs().max()) > _FAR_FROM_ONE) and float(sums[row]) != 0
        percent = bool(((sums - 100).abs() <= 100 * tolerance).all())  # every row sums to 100
        raise ValueError(
            f"{name}: rows must sum to 1 (within {tolerance:.2g}), row {row} sums to {float(sums[row]):.6g}"
            + (_PERCENT_HINT if percent else _LOGITS_HINT if far else "")
        )


def normalize_probs(name: str, probs: torch.Tensor, *, tolerance: float | None = None) -> torch.Tensor:
    """User-supplied teacher probabilities (N, C) as float64 rows divided by their sums.

    ``tolerance`` defaults to :func:`user_tolerance` (rows within a bfloat16 softmax's 7.8e-3 of
    1, whatever the dtype). Raises ValueError naming the row for everything :func:`check_probs`
    rejects at ``tolerance``, before dividing: as every tolerance stays below 0.05, an all-zero row
    or a value above 1 is such a row, never a NaN. When a row was off by more than ``ROW_SUM_TOL``
    (the strict float32 check), one warning on the ``ptdistill.checks`` logger gives the largest deviation.
    """
    if tolerance is None and isinstance(probs, torch.Tensor) and probs.ndim >= 1:
        tolerance = user_tolerance(probs.shape[-1])
    check_probs(name, probs, tolerance=tolerance)
    p = probs.detach().to(torch.float64)
    sums = p.sum(-1, keepdim=True)
    deviation = float((sums - 1).abs().max())
    if deviation > ROW_SUM_TOL:
        log.warning("%s: rows renormalised to sum to 1 in float64 (largest deviation %.3g, within the %.2g allowed"
                    " for reduced-precision or rounded input)", name, deviation, tolerance)
    return p / sums


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


def int_at_least(name: str, value: object, low: int) -> int:
    """``value`` as an ``int`` when it is an integer (not a bool) ``>= low``; else a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return int(value)


def finite_real(
    name: str, value: object, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """``value`` as a ``float`` when it is a finite real (not a bool) in ``[low, high]`` (``(low, high]`` with
    ``low_open``); else a ValueError naming ``name`` and the bound it breaks."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite real number, got {value!r}")
    if low is not None and (value <= low if low_open else value < low):
        raise ValueError(f"{name}: expected a value {'>' if low_open else '>='} {low}, got {value!r}")
    if high is not None and value > high:
        raise ValueError(f"{name}: expected a value <= {high}, got {value!r}")
    return float(value)


def int_in_range(name: str, value: object, low: int, high: int) -> int:
    """``value`` as an ``int`` when it is an integer (not a bool) in ``[low, high]``; else a ValueError
    naming ``name`` and the range (e.g. a seed in [0, 2**32 - 1], a coefficient set's ``order``)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name}: expected an integer in [{low}, {high}], got {value!r}")
    return int(value)
