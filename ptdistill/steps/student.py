"""distill_student: train one student with one method and seed on the teacher's outputs."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from ptdistill.experiments import ExperimentConfig
from ptdistill.losses import build_loss
from ptdistill.steps.backend import backend_for
from ptdistill.steps.common import RunInfo, log, publish
from ptdistill.steps.search import searched_eps
from ptdistill.steps.teacher import load_teacher_probs
from ptdistill.storage import open_store


def method_params(config: ExperimentConfig, method: str, search_dir: Path) -> dict:
    """The loss hyper-parameters of ``method``; PTLoss takes the searched eps unless set in the config."""
    spec = config.method(method)
    params = dict(spec.params)
    if spec.loss == "ptloss" and "eps" not in params:
        params["eps"] = searched_eps(search_dir)
    return params


def distill_student(
    config: ExperimentConfig,
    info: RunInfo,
    method: str,
    seed: int,
    distill_split: Path,
    distill_probs: Path,
    validation: Path,
    search_dir: Path,
    out_dir: Path,
) -> dict:
    """Train the student; save it and ``training.json`` (params, curve, timing) to ``out_dir``."""
    spec = config.method(method)
    params = method_params(config, method, search_dir)
    loss = build_loss(spec.loss, **params)
    backend = backend_for(config)
    if spec.lr is not None:  # this method's (or lr_grid variant's) own learning rate
        config = replace(config, student=replace(config.student, train=replace(config.student.train, lr=spec.lr)))
    teacher = load_teacher_probs(distill_probs)
    split = backend.load_split(distill_split)
    if len(teacher) != len(split):
        raise ValueError(f"{distill_probs}: {len(teacher)} teacher rows for {len(split)} distillation examples")
    out_dir = Path(out_dir)
    # Resume state lives in the artifact store, so a restarted step (same run) continues where it stopped.
    checkpoints = f"{info.prefix}/checkpoints/{method}-seed{seed}"
    history = backend.distill_student(config, info.num_classes, seed, loss, split, teacher,
                                      backend.load_split(validation), out_dir, (info.artifact_store, checkpoints))
    record = {
        "method": method, "loss": spec.loss, "seed": seed, "params": params, "lr": config.student.train.lr,
        "history": history.to_dict(),
    }
    (out_dir / "training.json").write_text(json.dumps(record, default=_json_default))
    log.info("student %s seed %d: %d epochs in %.1f s (%.0f ex/s)", method, seed, history.epochs_run,
             history.seconds, history.examples_per_second)
    publish(info, f"students/{method}-seed{seed}", out_dir)
    store = open_store(info.artifact_store)
    for key in store.list(checkpoints + "/"):
        store.delete(key)
    return record


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
