"""The run history every training reports, seeding, device choice and the progress display."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from ptdistill.checks import int_at_least

__all__ = ["History", "ValidationScores", "progress_postfix", "resolve_device", "seed_everything"]


class ValidationScores(NamedTuple):
    """A model's scores on the validation split: accuracy in [0, 1], mean NLL in nats, ECE in [0, 1]
    (15 bins, :func:`ptdistill.metrics.ece`)."""

    accuracy: float
    nll: float
    ece: float


@dataclass
class History:
    """What a training run did; ``to_dict`` is JSON-ready.

    ``train_loss`` holds ``(step, mean loss over the window ending at step)`` pairs;
    ``val_*`` are per evaluated epoch (listed in ``val_epoch``): the validation curve.
    ``best_epoch`` is the selected epoch (``select``, see :class:`~ptdistill.engine.TrainSettings`),
    whose weights the run ended with, and ``best_val_*`` its scores (None without validation).
    ``seconds`` is wall-clock
    including evaluation; ``examples_per_second`` counts training examples over those seconds.
    """

    train_loss: list[tuple[int, float]] = field(default_factory=list)
    val_epoch: list[int] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    val_ece: list[float] = field(default_factory=list)
    select: str = "last"
    best_epoch: int | None = None
    best_val_accuracy: float | None = None
    best_val_nll: float | None = None
    best_val_ece: float | None = None
    stopped_early: bool = False
    epochs_run: int = 0
    steps: int = 0
    seconds: float = 0.0
    examples_per_second: float = 0.0

    def to_dict(self) -> dict:
        """JSON-ready dict (loss pairs as lists)."""
        return {**asdict(self), "train_loss": [list(pair) for pair in self.train_loss]}

    def selection(self) -> dict:
        """JSON-ready summary of which epoch's weights the run ended with, for MLflow and the report.

        ``select``, ``epoch`` (the selected epoch, 1-based), ``epochs_run``, ``stopped_early``, the
        selected epoch's ``val_accuracy`` / ``val_nll`` (nats) / ``val_ece``, and ``curve``: the
        validation scores per evaluated epoch (lists of equal length). Without validation the run
        kept its final weights: ``epoch`` and the scores are None and the curve's lists are empty.
        """
        return {"select": self.select, "epoch": self.best_epoch, "epochs_run": self.epochs_run,
                "stopped_early": self.stopped_early, "val_accuracy": self.best_val_accuracy,
                "val_nll": self.best_val_nll, "val_ece": self.best_val_ece,
                "curve": {"epoch": list(self.val_epoch), "accuracy": list(self.val_accuracy),
                          "nll": list(self.val_nll), "ece": list(self.val_ece)}}


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, e.g. before building a model so its initial weights are reproducible."""
    seed = int_at_least("seed", seed, 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; a named device must be usable here."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device: expected 'auto' or a torch device string such as 'cpu', got {device!r}") from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    return resolved


def progress_postfix(loss: float | None, val_acc: float | None) -> dict[str, float]:
    """A progress bar's postfix: only the values measured so far.

    ``None`` (no loss window or validation yet) is left out rather than shown as ``nan``, which
    reads as a diverged run. Returns ``{}`` when nothing is measured yet.
    """
    return {name: value for name, value in (("loss", loss), ("val_acc", val_acc)) if value is not None}
