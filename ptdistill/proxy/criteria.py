"""Scores of a proxy teacher on labeled validation data (lower is better).

``q`` is the paper's quality score (Eq. 20): squared mean L2 distance to the one-hot labels
plus the squared mean negative entropy; its entropy term rewards confidence, so it can
sharpen a teacher that is already over-confident.  ``brier`` and ``nll`` are proper scoring
rules: in expectation they rank proxy teachers by their closeness to the true posterior.
All take probabilities (..., N, C) and integer labels (N,) in [0, C) and return a tensor of
shape (...) in the probabilities' dtype, reducing the last two dims; only :func:`quality` checks
its inputs.  Source: docs/method.md §5.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ptdistill.arrays import ArrayLike, as_tensor
from ptdistill.checks import check_labels, check_probs


def _onehot(labels: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.to(probs.device, torch.int64), probs.shape[-1]).to(probs.dtype)


def q_score(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Paper's Q: (mean_n ||q_n - y_n||_2)^2 + (mean_n sum_c q_nc log q_nc)^2, 0 log 0 = 0 (KDD'24 Eq. (20))."""
    dist = torch.linalg.vector_norm(probs - _onehot(labels, probs), dim=-1).mean(-1)
    neg_entropy = torch.special.xlogy(probs, probs).sum(-1).mean(-1)
    return dist**2 + neg_entropy**2


def brier(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Brier score: mean_n ||q_n - y_n||^2 (a proper scoring rule, docs/method.md §5)."""
    return ((probs - _onehot(labels, probs)) ** 2).sum(-1).mean(-1)


def nll(probs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of the labels: -mean_n log q_n[y_n] (probabilities floored at 1e-300)."""
    picked = probs.gather(-1, labels.to(probs.device, torch.int64).expand(*probs.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return -torch.log(picked.clamp_min(1e-300)).mean(-1)


CRITERIA: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "q": q_score,
    "brier": brier,
    "nll": nll,
}


def get_criterion(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The criterion registered under ``name`` (``"q"``, ``"brier"``, ``"nll"``); ValueError for another name."""
    if name not in CRITERIA:
        raise ValueError(f"criterion: unknown {name!r}; expected one of {sorted(CRITERIA)}")
    return CRITERIA[name]


def quality(proxy_probs: ArrayLike, labels: ArrayLike) -> torch.Tensor:
    """The paper's quality score Q of proxy probabilities (..., N, C) against labels (N,), checked.

    Inputs may be tensors, numpy arrays or lists; returns a torch tensor of shape (...) in the
    probabilities' dtype (float64 for numpy float64 input).  Raises ValueError when rows are not
    probabilities or labels are not integers (N,) in [0, C).  KDD'24 Eq. (20), docs/method.md §5.
    """
    proxy_probs = as_tensor("proxy_probs", proxy_probs)
    labels = as_tensor("labels", labels, proxy_probs.device)
    check_probs("proxy_probs", proxy_probs, ndim=None)
    if proxy_probs.ndim < 2:
        raise ValueError(f"proxy_probs: expected shape (..., N, C), got {tuple(proxy_probs.shape)}")
    check_labels("labels", labels, proxy_probs.shape[-2], proxy_probs.shape[-1])
    return q_score(proxy_probs, labels)
