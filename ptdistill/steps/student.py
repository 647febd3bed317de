"""distill_student: train one student with one method and seed on the teacher's outputs (or labels, or p*)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from ptdistill.experiments import EPS_CHOICE, ExperimentConfig
from ptdistill.families import backend_for
from ptdistill.losses import build_loss
from ptdistill.proxy import proxy_teacher
from ptdistill.steps.common import RunInfo, checkpoint_prefix, clear_checkpoints, log, publish
from ptdistill.steps.search import chosen_eps
from ptdistill.steps.teacher import read_teacher_output_probs


def method_params(config: ExperimentConfig, method: str, search_dir: Path, num_classes: int) -> tuple[dict, dict]:
    """The loss hyper-parameters of ``method`` and how its PTLoss coefficients were chosen.

    PTLoss takes the searched eps unless the config gives ``eps``, or picks another set by
    ``order`` / ``rank`` / ``random_seed`` (see :class:`~ptdistill.experiments.MethodSpec`).
    """
    spec = config.method(method)
    params = {k: v for k, v in spec.params.items() if k not in EPS_CHOICE}
    choice = {k: spec.params[k] for k in EPS_CHOICE if k in spec.params}
    if spec.loss == "ptloss" and "eps" not in params:
        params["eps"] = chosen_eps(search_dir, config.search, choice, num_classes)
    return params, choice


def _targets(spec, backend, num_classes: int, distill_split: Path, distill_probs: Path,
             teacher_train: Path) -> tuple:
    """(training split, target probabilities) for the method's ``targets``."""
    if spec.targets == "labels":  # no distillation: one-hot labels of the teacher's own training split
        split = backend.load_split(teacher_train)
        return replace(split, labels=None), np.eye(num_classes)[split.labels]
    split = backend.load_split(distill_split)
    if spec.targets == "p_star":
        if split.p_star is None:
            raise ValueError(f"{distill_split}: method {spec.name!r} trains on p_star, but this data has no true"
                             " posterior (synthetic benchmark only)")
        return split, split.p_star
    teacher = read_teacher_output_probs(distill_probs)
    if len(teacher) != len(split):
        raise ValueError(f"{distill_probs}: {len(teacher)} teacher rows for {len(split)} distillation examples")
    return split, teacher


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
    teacher_train: Path,
) -> dict:
    """Train the student; save it and ``training.json`` (params, curve, timing) to ``out_dir``."""
    spec = config.method(method)
    params, choice = method_params(config, method, search_dir, info.num_classes)
    loss = build_loss(spec.loss, **params)
    backend = backend_for(config)
    config = replace(config, student=replace(config.student, train=config.student_train(spec)))
    split, targets = _targets(spec, backend, info.num_classes, Path(distill_split), Path(distill_probs), Path(teacher_train))
    out_dir = Path(out_dir)
    # Resume state lives in the artifact store, so a restarted step (same run) continues where it stopped.
    history = backend.distill_student(config, info.num_classes, seed, loss, split, targets,
                                      backend.load_split(validation), out_dir,
                                      checkpoint_prefix(info, f"{method}-seed{seed}"))
    record = {
        "method": method, "loss": spec.loss, "seed": seed, "params": params, "eps_choice": choice,
        "targets": spec.targets, "train": spec.train, "lr": config.student.train.lr, "history": history.to_dict(),
    }
    if spec.loss == "ptloss" and spec.targets == "teacher" and split.p_star is not None:
        # How far the distribution PTLoss pulls the student toward (the proxy teacher) is from p*.
        proxy = proxy_teacher(torch.from_numpy(targets), torch.tensor(params["eps"], dtype=torch.float64))
        record["proxy_l2_to_pstar"] = float(np.linalg.norm(proxy.numpy() - split.p_star, axis=1).mean())
    (out_dir / "training.json").write_text(json.dumps(record, default=_json_default))
    log.info("student %s seed %d: %d epochs in %.1f s (%.0f ex/s), kept epoch %s (select %s)", method, seed,
             history.epochs_run, history.seconds, history.examples_per_second, history.best_epoch, history.select)
    publish(info, f"students/{method}-seed{seed}", out_dir)
    clear_checkpoints(info, f"{method}-seed{seed}")
    return record


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
