"""evaluate: score one student on validation and test and record it as a child run in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ptdistill.evaluation import evaluate, per_class_report
from ptdistill.experiments import ExperimentConfig
from ptdistill.families import backend_for
from ptdistill.steps.common import RunInfo, log
from ptdistill.tracking import Tracker, confusion_matrix_png

#: Metrics logged per split, besides the task metric.
LOGGED = ("accuracy", "nll", "ece", "brier", "f1", "matthews", "l2_to_pstar", "tvd_to_pstar")


def _flat_params(record: dict) -> dict:
    params = {"method": record["method"], "loss": record["loss"], "seed": record["seed"], "lr": record["lr"],
              "targets": record["targets"], "select": record["history"]["select"],
              **{f"eps_{k}": v for k, v in record["eps_choice"].items()},
              **{f"train.{k}": v for k, v in record["train"].items()}}
    for key, value in record["params"].items():
        if key == "eps":
            eps = np.asarray(value)
            params["order"] = eps.shape[1]
            params["eps"] = json.dumps(np.round(eps, 6).tolist())
        else:
            params[key] = value
    return params


def evaluate_student(config: ExperimentConfig, info: RunInfo, student_dir: Path, validation: Path, test: Path,
                     out_dir: Path) -> dict:
    """Metrics of the student on both labeled splits; logs the child run; returns a summary row."""
    student_dir, out_dir = Path(student_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = json.loads((student_dir / "training.json").read_text())
    backend = backend_for(config)
    metrics: dict[str, float] = {}
    matrix = None
    for name, path in (("val", validation), ("test", test)):
        split = backend.load_split(path)
        result = evaluate(backend.student_probs(config, student_dir, split), split.labels, split.p_star,
                          config.task_metric)
        metrics |= {f"{name}_{k}": float(result[k]) for k in (*LOGGED, "task") if k in result}
        matrix = result["confusion_matrix"]
    history = record["history"]
    if "proxy_l2_to_pstar" in record:
        metrics["proxy_l2_to_pstar"] = record["proxy_l2_to_pstar"]
    metrics |= {"train_seconds": float(history["seconds"]),
                "train_examples_per_second": float(history["examples_per_second"]),
                "epochs_run": float(history["epochs_run"])}
    if history["best_epoch"] is not None:  # the epoch whose weights the student kept; val_* above are its scores
        metrics["selected_epoch"] = float(history["best_epoch"])
    png = confusion_matrix_png(matrix, info.class_names, out_dir / "confusion_matrix.png")
    (out_dir / "confusion_matrix.json").write_text(json.dumps({"labels": info.class_names, "matrix": matrix}))
    per_class = per_class_report(matrix, info.class_names)
    (out_dir / "per_class.json").write_text(json.dumps(per_class, indent=1))
    curves = {"train_loss": [tuple(x) for x in history.get("train_loss", [])],
              **{f"epoch_val_{k}": list(zip(history.get("val_epoch", []), history.get(f"val_{k}", [])))
                 for k in ("accuracy", "nll", "ece")}}
    run_name = f"{record['method']}-seed{record['seed']}"
    child = Tracker(info.tracking_uri).log_student(
        info.parent_run_id, run_name, params=_flat_params(record), metrics=metrics, curves=curves,
        artifacts={"confusion_matrix.png": png, "confusion_matrix.json": out_dir / "confusion_matrix.json",
                   "per_class.json": out_dir / "per_class.json",
                   "training.json": student_dir / "training.json"},
        model_dir=student_dir,
        seconds=history.get("seconds"),
    )
    log.info("%s: test accuracy %.4f, NLL %.4f, ECE %.4f", run_name, metrics["test_accuracy"], metrics["test_nll"],
             metrics["test_ece"])
    return {"method": record["method"], "seed": record["seed"], "run_id": child, "confusion_matrix": matrix,
            "params": _flat_params(record), "per_class": per_class, **metrics}
