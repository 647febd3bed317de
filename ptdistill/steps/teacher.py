"""train_teacher and teacher_inference, with the content-addressed teacher-output cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ptdistill.evaluation import evaluate
from ptdistill.experiments import ExperimentConfig
from ptdistill.steps.backend import backend_for
from ptdistill.steps.common import RunInfo, log, publish, solo_threads
from ptdistill.storage import content_key, open_store
from ptdistill.tracking import Tracker

#: Bumped when the teacher-output format or the inference code changes meaning.
CACHE_VERSION = 2


def train_teacher(config: ExperimentConfig, info: RunInfo, teacher_train: Path, validation: Path, out_dir: Path) -> dict:
    """Train (or pin, for a pretrained teacher) the benchmark's teacher into ``out_dir``."""
    solo_threads()
    summary = backend_for(config).train_teacher(config, info.num_classes, Path(teacher_train), Path(validation),
                                                Path(out_dir))
    Tracker(info.tracking_uri).set_tags(info.parent_run_id, {"teacher_id": summary["teacher_id"]})
    publish(info, "teacher", out_dir)
    return summary


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


def outputs_frame(ids: np.ndarray, logits: np.ndarray, teacher_id: str) -> pd.DataFrame:
    """The teacher-output table: id, logits, probs (softmax of logits) and teacher id per example."""
    logits = np.asarray(logits, dtype=np.float64)
    return pd.DataFrame({"id": ids, "logits": list(logits), "probs": list(softmax(logits)), "teacher_id": teacher_id})


def load_teacher_probs(path: str | Path) -> np.ndarray:
    """Teacher probabilities (N, C) float64 from a teacher-output parquet file."""
    frame = pd.read_parquet(path, columns=["probs"])
    return np.stack(frame["probs"].to_numpy()).astype(np.float64)


def teacher_inference(
    config: ExperimentConfig, info: RunInfo, teacher_dir: Path, splits: dict[str, Path], outputs: dict[str, Path]
) -> dict:
    """Teacher probabilities on each split, served from the cache when teacher, data and settings match."""
    solo_threads()
    backend = backend_for(config)
    teacher_id, weights = backend.teacher_identity(config, Path(teacher_dir))
    store = open_store(info.artifact_store)
    settings = {**backend.inference_settings(config), "version": CACHE_VERSION}
    report: dict = {"teacher_id": teacher_id, "splits": {}}
    tracker = Tracker(info.tracking_uri)
    for name, path in splits.items():
        split = backend.load_split(path)
        key = "cache/teacher/" + content_key(teacher_id, weights, split.fingerprint(), name, settings) + ".parquet"
        if store.exists(key):
            Path(outputs[name]).write_bytes(store.read_bytes(key))
            log.info("teacher outputs for %s: cache hit (%s), inference skipped", name, store.uri(key))
            report["splits"][name] = {"cache": "hit", "uri": store.uri(key)}
        else:
            t0 = time.perf_counter()
            logits = backend.teacher_logits(config, info.num_classes, Path(teacher_dir), split)
            seconds = max(time.perf_counter() - t0, 1e-9)
            if logits.shape != (len(split), info.num_classes):
                raise ValueError(f"teacher {teacher_id}: expected logits of shape ({len(split)}, {info.num_classes})"
                                 f" on {name}, got {logits.shape}")
            outputs_frame(split.ids, logits, teacher_id).to_parquet(outputs[name])
            store.write_if_absent(key, Path(outputs[name]).read_bytes())
            log.info("teacher outputs for %s: %d examples in %.2f s (%.1f ex/s), cached at %s",
                     name, len(split), seconds, len(split) / seconds, store.uri(key))
            report["splits"][name] = {"cache": "miss", "uri": store.uri(key),
                                      "examples_per_second": len(split) / seconds}
        if split.labels is not None:
            metrics = evaluate(load_teacher_probs(outputs[name]), split.labels, split.p_star, config.task_metric)
            report["splits"][name]["metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
            tracker.log_metrics(info.parent_run_id, {f"teacher_{name}_{k}": v for k, v in
                                                     report["splits"][name]["metrics"].items()})
    tracker.set_tags(info.parent_run_id, {"teacher_cache": ",".join(
        f"{n}:{r['cache']}" for n, r in report["splits"].items())})
    return report
