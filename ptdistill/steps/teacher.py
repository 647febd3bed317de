"""train_teacher and teacher_inference, with the content-addressed teacher-output cache."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from ptdistill.datasets import FeatureSplit
from ptdistill.evaluation import evaluate
from ptdistill.experiments import ExperimentConfig
from ptdistill.models import MLP, MLPConfig, weights_hash
from ptdistill.steps.common import RunInfo, log, publish
from ptdistill.storage import content_key, open_store
from ptdistill.training import predict_probs, seed_everything, train_classifier
from ptdistill.tracking import Tracker

#: Bumped when the teacher-output format or the inference code changes meaning.
CACHE_VERSION = 1
INFERENCE_BATCH = 4096


def train_teacher(config: ExperimentConfig, info: RunInfo, teacher_train: Path, validation: Path, out_dir: Path) -> dict:
    """Train the MLP teacher on the labeled teacher-train split; save it to ``out_dir``."""
    seed_everything(config.teacher.train.seed)
    model = MLP(MLPConfig(input_dim=info.input_dim, num_classes=info.num_classes, hidden=tuple(config.teacher.hidden)))
    history = train_classifier(model, FeatureSplit.load(teacher_train), config.teacher.train,
                               validation=FeatureSplit.load(validation), progress=True)
    model.save_pretrained(out_dir)
    summary = {"teacher_id": f"mlp:{weights_hash(out_dir)[:16]}", "epochs_run": history.epochs_run,
               "best_epoch": history.best_epoch, "seconds": history.seconds}
    Tracker(info.tracking_uri).set_tags(info.parent_run_id, {"teacher_id": summary["teacher_id"]})
    publish(info, "teacher", out_dir)
    return summary


def _outputs_frame(split: FeatureSplit, probs: np.ndarray, teacher_id: str) -> pd.DataFrame:
    logits = np.log(np.clip(probs, 1e-300, None))
    return pd.DataFrame({"id": split.ids, "logits": list(logits), "probs": list(probs), "teacher_id": teacher_id})


def load_teacher_probs(path: str | Path) -> np.ndarray:
    """Teacher probabilities (N, C) float64 from a teacher-output parquet file."""
    frame = pd.read_parquet(path, columns=["probs"])
    return np.stack(frame["probs"].to_numpy()).astype(np.float64)


def teacher_inference(
    config: ExperimentConfig, info: RunInfo, teacher_dir: Path, splits: dict[str, Path], outputs: dict[str, Path]
) -> dict:
    """Teacher probabilities on each split, served from the cache when teacher, data and settings match."""
    model = MLP.from_pretrained(teacher_dir)
    weights = weights_hash(teacher_dir)
    teacher_id = f"mlp:{weights[:16]}"
    store = open_store(info.artifact_store)
    settings = {"batch_size": INFERENCE_BATCH, "dtype": "float32", "version": CACHE_VERSION}
    report: dict = {"teacher_id": teacher_id, "splits": {}}
    tracker = Tracker(info.tracking_uri)
    for name, path in splits.items():
        split = FeatureSplit.load(path)
        key = "cache/teacher/" + content_key(teacher_id, weights, split.fingerprint(), name, settings)
        key += ".parquet"
        if store.exists(key):
            Path(outputs[name]).write_bytes(store.read_bytes(key))
            log.info("teacher outputs for %s: cache hit (%s), inference skipped", name, store.uri(key))
            report["splits"][name] = {"cache": "hit", "uri": store.uri(key)}
        else:
            t0 = time.perf_counter()
            probs = predict_probs(model, split.features, batch_size=INFERENCE_BATCH)
            seconds = time.perf_counter() - t0
            _outputs_frame(split, probs, teacher_id).to_parquet(outputs[name])
            store.write_if_absent(key, Path(outputs[name]).read_bytes())
            log.info("teacher outputs for %s: %d examples in %.2f s (%.0f ex/s), cached at %s",
                     name, len(split), seconds, len(split) / max(seconds, 1e-9), store.uri(key))
            report["splits"][name] = {"cache": "miss", "uri": store.uri(key),
                                      "examples_per_second": len(split) / max(seconds, 1e-9)}
        if split.labels is not None:
            metrics = evaluate(load_teacher_probs(outputs[name]), split.labels, split.p_star, config.task_metric)
            report["splits"][name]["metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
            tracker.log_metrics(info.parent_run_id, {f"teacher_{name}_{k}": v for k, v in
                                                     report["splits"][name]["metrics"].items()})
    tracker.set_tags(info.parent_run_id, {"teacher_cache": ",".join(
        f"{n}:{r['cache']}" for n, r in report["splits"].items())})
    return report
