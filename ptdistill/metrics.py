"""Calibration and distance metrics shared by the search report and the evaluation step (docs/method.md §8)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Expected calibration error uses 15 equal-width confidence bins (docs/method.md §8).
ECE_BINS = 15


@dataclass
class Reliability:
    """Per-bin mean confidence, accuracy and count of the top-1 prediction."""

    confidence: torch.Tensor  # (bins,) NaN where a bin is empty
    accuracy: torch.Tensor  # (bins,)
    count: torch.Tensor  # (bins,)
    edges: torch.Tensor  # (bins + 1,)

    @property
    def ece(self) -> float:
        """Count-weighted mean |accuracy - confidence| over non-empty bins."""
        seen = self.count > 0
        weights = self.count[seen] / self.count.sum()
        return float((weights * (self.accuracy[seen] - self.confidence[seen]).abs()).sum())


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> Reliability:
    """Reliability table of probs (N, C) against integer labels (N,) over ``bins`` equal-width bins.

    Bins are (lo, hi] on [0, 1] (a confidence of 0 falls in the first); computed in float64 on the
    CPU. Inputs are not checked (callers do: :func:`ptdistill.evaluation.evaluate`).
    """
    probs, labels = probs.detach().double().cpu(), labels.detach().cpu()
    conf, pred = probs.max(-1)
    correct = (pred == labels).double()
    edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
    # Bins are (lo, hi]; a confidence of exactly 0 cannot occur for a top-1 probability.
    idx = (torch.bucketize(conf, edges, right=False) - 1).clamp(0, bins - 1)
    count = torch.bincount(idx, minlength=bins).double()
    conf_sum = torch.bincount(idx, weights=conf, minlength=bins)
    acc_sum = torch.bincount(idx, weights=correct, minlength=bins)
    nan = torch.full_like(count, float("nan"))
    return Reliability(
        confidence=torch.where(count > 0, conf_sum / count.clamp_min(1), nan),
        accuracy=torch.where(count > 0, acc_sum / count.clamp_min(1), nan),
        count=count,
        edges=edges,
    )


def ece(probs: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the top-1 prediction, in [0, 1] (Guo et al. 2017; docs/method.md §8)."""
    return reliability(probs, labels, bins).ece


def tvd(probs: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean total-variation distance 0.5 * ||p - onehot(y)||_1 of probs (N, C) to labels (N,)."""
    onehot = torch.nn.functional.one_hot(labels.long(), probs.shape[-1]).to(probs.dtype)
    return float(0.5 * (probs - onehot).abs().sum(-1).mean())
