"""The whole state of a training loop, as one dataclass: what a checkpoint saves and a resume restores.

A run continues bit for bit (on CPU) from a :class:`LoopState` because it holds everything the
loop reads: the position (``epoch`` epochs done, ``batches_done`` batches of the next one,
``step`` optimiser steps), the weights, optimiser, scheduler and grad-scaler states, the global
RNG states and the batch-order generator's state at the start of epoch ``epoch``, the
:class:`~ptdistill.engine.history.History`, the best weights and the early-stopping counter,
the partial loss window, and the examples and seconds of earlier sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import torch

from ptdistill.engine.history import History

__all__ = ["LoopState"]


@dataclass
class LoopState:
    """Everything a training loop carries from one step to the next (see the module docstring).

    ``model``, ``optimizer``, ``scheduler``, ``scaler``, ``rng`` and ``batch_rng`` are filled when a
    checkpoint is taken and applied on resume; during the run the live objects hold them.
    """

    epoch: int = 0
    batches_done: int = 0
    step: int = 0
    done: bool = False
    history: History = field(default_factory=History)
    best_weights: dict[str, torch.Tensor] | None = None
    epochs_without_gain: int = 0
    window_sum: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    window_steps: int = 0
    examples: int = 0
    seconds: float = 0.0
    model: dict | None = None
    optimizer: dict | None = None
    scheduler: dict | None = None
    scaler: dict | None = None
    rng: dict | None = None
    batch_rng: torch.Tensor | None = None

    def position(self) -> dict:
        """Where the run is (JSON-ready): the checkpoint pointer records it."""
        return {"epoch": self.epoch, "batches_done": self.batches_done, "step": self.step, "done": self.done}

    def to_blob(self) -> dict:
        """A dict of tensors, numbers and lists that ``torch.load(..., weights_only=True)`` reads back."""
        blob = {f.name: getattr(self, f.name) for f in fields(self)}
        blob["history"] = self.history.to_dict()
        blob["window_sum"] = self.window_sum.detach().cpu()
        return blob

    @classmethod
    def from_blob(cls, blob: dict) -> LoopState:
        """The state :meth:`to_blob` saved; raises ``ValueError`` on a blob of another layout."""
        names = {f.name for f in fields(cls)}
        if set(blob) != names:
            raise ValueError(f"checkpoint: expected a LoopState blob with {sorted(names)}, got {sorted(blob)}")
        saved = blob["history"]
        history = History(**{**saved, "train_loss": [(int(s), float(v)) for s, v in saved["train_loss"]]})
        return cls(**{**blob, "history": history})

