"""Synthetic teachers with known labels, for demos, tests and benchmarks."""

from __future__ import annotations

import numpy as np
import torch


def noisy_teacher(n: int = 1000, num_classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """An over-confident, sometimes wrong teacher: probabilities (N, C) float64 and labels (N,).

    The same construction as the paper-style reference's benchmark teacher: Gaussian logits
    with +2 on the true class, sharpened by 1.5.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, n)
    logits = rng.normal(0, 1.0, (n, num_classes))
    logits[np.arange(n), labels] += 2.0
    logits *= 1.5
    probs = np.exp(logits - logits.max(1, keepdims=True))
    return torch.from_numpy(probs / probs.sum(1, keepdims=True)), torch.from_numpy(labels)
