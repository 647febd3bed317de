"""The MLP family: feature-vector splits, an MLP teacher trained in the run, MLP students."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from torch import nn

from ptdistill.engine import Checkpointer, History, seed_everything
from ptdistill.experiments import ExperimentConfig
from ptdistill.families.backend import Backend
from ptdistill.families.mlp.models import MLP, MLPConfig, weights_hash
from ptdistill.families.mlp.split import FeatureSplit
from ptdistill.families.mlp.training import distill, predict_probs, train_classifier

INFERENCE_BATCH = 4096


class MLPBackend(Backend):
    """Synthetic and tabular benchmarks (see :mod:`ptdistill.families.backend`)."""

    def load_split(self, path: str | Path) -> FeatureSplit:
        return FeatureSplit.load(path)

    def _model(self, config: ExperimentConfig, spec, split: FeatureSplit, num_classes: int) -> MLP:
        return MLP(MLPConfig(input_dim=split.dim, num_classes=num_classes, hidden=tuple(spec.hidden)))

    def train_teacher(self, config, num_classes, train_path, validation_path, out_dir, checkpoints=None) -> dict:
        seed_everything(config.teacher.train.seed)
        train = FeatureSplit.load(train_path)
        model = self._model(config, config.teacher, train, num_classes)
        history = train_classifier(model, train, config.teacher.train, validation=FeatureSplit.load(validation_path),
                                   progress=True, checkpoints=Checkpointer(*checkpoints) if checkpoints else None)
        model.save_pretrained(out_dir)
        return {"teacher_id": self.teacher_identity(config, out_dir)[0], "epochs_run": history.epochs_run,
                "best_epoch": history.best_epoch, "seconds": history.seconds, "training": history.selection()}

    def teacher_identity(self, config, teacher_dir) -> tuple[str, str]:
        weights = weights_hash(teacher_dir)
        return f"mlp:{weights[:16]}", weights

    def inference_settings(self, config) -> dict:
        return {"batch_size": INFERENCE_BATCH, "dtype": "float32"}

    def teacher_logits(self, config, num_classes, teacher_dir, split: FeatureSplit) -> np.ndarray:
        # log-softmax: the logits up to a per-row constant, which softmax ignores
        return np.log(np.clip(predict_probs(MLP.from_pretrained(teacher_dir), split.features, INFERENCE_BATCH),
                              1e-300, None))

    def distill_student(self, config, num_classes, seed, loss: nn.Module, split: FeatureSplit, teacher_probs,
                        validation: FeatureSplit, out_dir: Path, checkpoints: tuple[str, str]) -> History:
        seed_everything(seed)
        model = self._model(config, config.student, split, num_classes)
        history = distill(model, split, teacher_probs, loss, dataclasses.replace(config.student.train, seed=seed),
                          validation=validation, progress=True, checkpoints=Checkpointer(*checkpoints))
        model.save_pretrained(out_dir)
        return history

    def student_probs(self, config, student_dir, split: FeatureSplit) -> np.ndarray:
        return predict_probs(MLP.from_pretrained(student_dir), split.features)
