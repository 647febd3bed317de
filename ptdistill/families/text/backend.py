"""The text family: Hugging Face teachers (fine-tuned here, or pretrained behind a verbalizer) and students."""

from __future__ import annotations

from ptdistill.extras import require

require("text", "ptdistill.families.text")  # one line naming the extra, before the imports that need it

import dataclasses
import json
from pathlib import Path

import numpy as np
from torch import nn

from ptdistill.arrays import softmax_probs
from ptdistill.engine import Checkpointer, History, seed_everything
from ptdistill.experiments import TextConfig
from ptdistill.families.backend import Backend
from ptdistill.families.text.batching import classification_logits
from ptdistill.families.text.models import (
    HFModelSpec,
    load_classifier,
    load_generative,
    load_tokenizer,
    resolve_checkpoint,
    save_model,
)
from ptdistill.families.text.scoring import teacher_logits
from ptdistill.families.text.split import TextSplit
from ptdistill.families.text.trainer import fit_text
from ptdistill.families.text.verbalizer_model import VerbalizerClassifier
from ptdistill.io import write_json_atomic

#: Written into the teacher directory: which checkpoint (and revision) the run's teacher is.
TEACHER_FILE = "teacher.json"


class TextBackend(Backend):
    """Paper tasks, rotten-tomatoes and your own text (see :mod:`ptdistill.families.backend`)."""

    def load_split(self, path: str | Path) -> TextSplit:
        return TextSplit.load(path)

    def train_teacher(self, config: TextConfig, num_classes, train_path, validation_path, out_dir,
                      checkpoints: tuple[str, str] | None = None) -> dict:
        """Fine-tune the teacher (``teacher.fine_tune``) or record the pretrained one.

        A classification teacher is fine-tuned with its head; a seq2seq teacher (T5) through its
        verbalizer (:class:`~ptdistill.families.text.verbalizer_model.VerbalizerClassifier`: cross-entropy on
        the softmax of its label words' scores), saved as a seq2seq checkpoint that inference scores
        the same way. ``TextConfig.validate`` has refused causal fine-tuning and label words that
        do not match the classes before the run started.
        """
        teacher = config.teacher
        verbalizer = config.verbalizer() if teacher.fine_tune and teacher.model.kind != "classification" else None
        source_id, revision = resolve_checkpoint(teacher.model)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        record = {"source": source_id, "source_revision": revision, "fine_tuned": teacher.fine_tune}
        training = None  # a pretrained teacher: no epoch was selected here
        if teacher.fine_tune:
            seed_everything(teacher.train.seed)
            tokenizer = load_tokenizer(teacher.model)
            train, validation = TextSplit.load(train_path), TextSplit.load(validation_path)
            if verbalizer is None:
                model = trained = load_classifier(teacher.model, num_classes)
            else:  # the LM learns its label words' scores on the prompts, as inference will score them
                trained = load_generative(teacher.model, training=True)
                model = VerbalizerClassifier(trained, tokenizer, verbalizer)
                train, validation = verbalizer.prompt_split(train), verbalizer.prompt_split(validation)
            history = fit_text(model, tokenizer, train, teacher.train, validation=validation,
                               checkpoints=Checkpointer(*checkpoints) if checkpoints else None,
                               max_length=teacher.model.max_length, progress=True)
            save_model(trained, tokenizer, out_dir)
            record |= {"epochs_run": history.epochs_run, "best_epoch": history.best_epoch, "seconds": history.seconds,
                       "examples_per_second": history.examples_per_second}
            training = history.selection()
        write_json_atomic(out_dir / TEACHER_FILE, record)
        return {"teacher_id": self.teacher_identity(config, out_dir)[0], **record, "training": training}

    def teacher_recipe(self, config: TextConfig) -> dict | None:
        """A fine-tuned teacher's recipe includes the exact base checkpoint (a moved hub branch is a
        different teacher) and the verbalizer it learns through; a pretrained one is not cached."""
        if not config.teacher.fine_tune:
            return None
        verbalizer = config.verbalizer() if config.teacher.model.kind != "classification" else None
        return {**super().teacher_recipe(config), "base": list(resolve_checkpoint(config.teacher.model)),
                "verbalizer": dataclasses.asdict(verbalizer) if verbalizer else None}

    def _pinned(self, config: TextConfig, teacher_dir: Path):
        """The teacher's model spec at the exact weights this run uses."""
        record = json.loads((Path(teacher_dir) / TEACHER_FILE).read_text())
        spec = config.teacher.model
        if record["fine_tuned"]:  # same kind: a fine-tuned seq2seq teacher is scored through its verbalizer
            spec = dataclasses.replace(spec, name_or_path=str(teacher_dir), revision=None)
            return spec, resolve_checkpoint(spec)[1], record
        return dataclasses.replace(spec, revision=record["source_revision"]), record["source_revision"], record

    def teacher_identity(self, config: TextConfig, teacher_dir: Path) -> tuple[str, str]:
        _, revision, record = self._pinned(config, teacher_dir)
        teacher_id = f"{record['source']}@{record['source_revision']}"
        return (f"{teacher_id}+fine-tuned@{revision}" if record["fine_tuned"] else teacher_id), revision

    def inference_settings(self, config: TextConfig) -> dict:
        model = config.teacher.model
        return {"kind": model.kind, "dtype": model.dtype, "max_length": model.max_length,
                "verbalizer": dataclasses.asdict(config.verbalizer()) if model.kind != "classification" else None}

    def teacher_logits(self, config: TextConfig, num_classes, teacher_dir, split: TextSplit) -> np.ndarray:
        spec, _, _ = self._pinned(config, teacher_dir)
        verbalizer = None if spec.kind == "classification" else config.verbalizer()
        return teacher_logits(spec, split, verbalizer, num_classes, progress=True)

    def distill_student(self, config: TextConfig, num_classes, seed, loss: nn.Module, split: TextSplit,
                        teacher_probs, validation: TextSplit, out_dir: Path,
                        checkpoints: tuple[str, str]) -> History:
        student = config.student
        seed_everything(seed)
        tokenizer = load_tokenizer(student.model)
        model = load_classifier(student.model, num_classes)
        history = fit_text(model, tokenizer, split, dataclasses.replace(student.train, seed=seed),
                           targets=teacher_probs, loss=loss, validation=validation,
                           checkpoints=Checkpointer(*checkpoints), max_length=student.model.max_length,
                           progress=True)
        save_model(model, tokenizer, out_dir)
        return history

    def student_probs(self, config: TextConfig, student_dir, split: TextSplit) -> np.ndarray:
        spec = HFModelSpec(str(student_dir), max_length=config.student.model.max_length)
        model = load_classifier(spec, num_labels=None, training=False)
        logits = classification_logits(model, load_tokenizer(spec), split, batch_size=config.student.train.eval_batch_size,
                                       max_length=spec.max_length)
        return softmax_probs(logits)
