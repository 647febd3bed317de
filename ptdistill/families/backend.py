"""What a model family must provide to the pipeline steps, and which family a benchmark uses.

The steps (data, teacher, search, student, evaluate, report) are the same for every
benchmark; what differs is how a split is stored, how a teacher is trained and run, and how a
student is built, distilled and scored. A :class:`Backend` holds exactly those differences:
:class:`~ptdistill.families.mlp.backend.MLPBackend` for feature vectors (synthetic, tabular) and
:class:`~ptdistill.families.text.backend.TextBackend` for Hugging Face text models. Steps ask
:func:`ptdistill.families.backend_for` and never branch on the benchmark themselves; this module
imports no family.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ptdistill.config import to_dict
from ptdistill.engine import History
from ptdistill.experiments import ExperimentConfig

__all__ = ["Backend"]


class Backend(ABC):
    """One model family's side of the pipeline; every method works on local paths."""

    @abstractmethod
    def load_split(self, path: str | Path) -> Any:
        """A split written by ``prepare_data`` (a ``FeatureSplit`` or a ``TextSplit``).

        Both kinds offer what the steps use: ``len``, ``ids``, ``labels``, ``p_star``,
        ``fingerprint()`` and ``take(rows)`` (a sub-split, for sharded teacher inference).
        """

    @abstractmethod
    def train_teacher(self, config: ExperimentConfig, num_classes: int, train_path: Path, validation_path: Path,
                      out_dir: Path, checkpoints: tuple[str, str] | None = None) -> dict:
        """Make the teacher available in ``out_dir``; returns at least ``teacher_id`` and ``training``:
        :meth:`History.selection <ptdistill.engine.History.selection>` of a teacher trained here (which
        epoch's weights it kept, and its validation curve), None for one used as it is.

        ``checkpoints`` as for :meth:`distill_student`: where a long fine-tuning resumes from.
        """

    def teacher_recipe(self, config: ExperimentConfig) -> dict | None:
        """Everything besides the data that determines the teacher :meth:`train_teacher` makes, as
        JSON (part of the trained-teacher cache key); None when nothing is trained, so nothing is
        cached (a pretrained teacher is re-pinned every run)."""
        teacher = {k: v for k, v in to_dict(config.teacher).items() if k not in ("outputs", "outputs_kind")}
        return {"family": config.family, "teacher": teacher}  # as before those keys existed: caches stay valid

    @abstractmethod
    def teacher_identity(self, config: ExperimentConfig, teacher_dir: Path) -> tuple[str, str]:
        """(teacher id for tags, content hash of the teacher's weights for the output cache)."""

    @abstractmethod
    def inference_settings(self, config: ExperimentConfig) -> dict:
        """Everything besides teacher and data that changes the teacher's outputs (part of the cache key)."""

    @abstractmethod
    def teacher_logits(self, config: ExperimentConfig, num_classes: int, teacher_dir: Path, split: Any) -> np.ndarray:
        """Class logits (n, C) of the teacher on ``split``, in the split's order."""

    @abstractmethod
    def distill_student(self, config: ExperimentConfig, num_classes: int, seed: int, loss: nn.Module, split: Any,
                        teacher_probs: np.ndarray, validation: Any, out_dir: Path,
                        checkpoints: tuple[str, str]) -> History:
        """Build the student from ``seed``, distill it on ``teacher_probs``, save it to ``out_dir``.

        ``checkpoints`` is (store URI, key prefix) where a backend with long training keeps the
        state to resume from when the step is restarted.
        """

    @abstractmethod
    def student_probs(self, config: ExperimentConfig, student_dir: Path, split: Any) -> np.ndarray:
        """Class probabilities (n, C) float64 of a saved student on ``split``."""

