"""ptdistill.tracking against a real MLflow store: a temporary SQLite database and a local
artifact directory, shared by the module (creating the schema takes seconds). Tests stay
independent by each using its own benchmark, hence its own experiment and registered model.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from ptdistill import tracking
from ptdistill.tracking import (
    TRUNCATED,
    Tracker,
    confusion_matrix_files,
    experiment_name,
    git_commit,
    runs_url,
)

# slow: MLflow SQLite stores (schema creation, runs).
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings(
    # MLflow's own SQLAlchemy mapping (mlflow 3.17) uses the deprecated ``noload`` strategy.
    "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning",
)]

EPS = [[0.1, -0.2, 0.05], [0.0, 0.3, -0.1]]  # C=2 x M=3


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tracker, Path]:
    root = tmp_path_factory.mktemp("mlflow")
    return Tracker(f"sqlite:///{root}/mlflow.db"), root


@pytest.fixture
def tracker(store: tuple[Tracker, Path]) -> Tracker:
    return store[0]


def _parent(tracker: Tracker, benchmark: str, run_name: str = "kfp-run-1") -> str:
    return tracker.start_parent(
        benchmark,
        run_name,
        tags={"kfp_run": run_name, "kfp_pipeline": "ptdistill", "teacher": "bert-base", "data_fingerprint": "abc123"},
        params={"student": "tiny", "epochs": 3},
    )


def _student(
    tracker: Tracker, parent_id: str, tmp_path: Path, method: str, seed: int, acc: float, **params: object
) -> str:
    work = tmp_path / f"{method}-{seed}"
    (work / "model").mkdir(parents=True)
    (work / "model" / "state_dict.pt").write_bytes(b"weights")
    artifacts = confusion_matrix_files([[5, 1], [2, 7]], ["neg", "pos"], work)
    return tracker.log_student(
        parent_id,
        f"{method}-seed{seed}",
        params={"method": method, "seed": seed, **params},
        metrics={"test_accuracy": acc, "test_nll": 0.5, "test_ece": 0.05, "test_f1": acc - 0.1, "val_accuracy": acc + 0.01},
        curves={"train_loss": [(0, 1.0), (10, 0.6), (20, 0.4)]},
        artifacts=artifacts,
        model_dir=work / "model",
    )


def _artifact_paths(tracker: Tracker, run_id: str, path: str | None = None) -> set[str]:
    return {f.path for f in tracker.client.list_artifacts(run_id, path)}


def test_names_and_urls() -> None:
    assert experiment_name("sst2") == "ptdistill-sst2"
    with pytest.raises(ValueError):
        experiment_name("")
    assert runs_url("https://mlflow.example.org/", "7") == "https://mlflow.example.org/#/experiments/7/runs"
    assert runs_url("sqlite:////data/mlflow.db", "3") == "http://127.0.0.1:5000/#/experiments/3/runs"
    with pytest.raises(ValueError, match="tracking_uri"):
        Tracker("")


def test_git_commit_falls_back_to_env(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_git(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    monkeypatch.setenv("PTDISTILL_GIT_COMMIT", "deadbeef")
    assert git_commit() == "deadbeef"
    monkeypatch.delenv("PTDISTILL_GIT_COMMIT")
    assert git_commit() is None


def test_parent_and_students(store: tuple[Tracker, Path], tmp_path: Path) -> None:
    tracker, root = store
    client = tracker.client
    parent_id = _parent(tracker, "bench-a")
    parent = client.get_run(parent_id)
    experiment = client.get_experiment(parent.info.experiment_id)
    assert experiment.name == "ptdistill-bench-a"
    # Artifacts sit beside the database, not in the working directory's ./mlruns.
    assert experiment.artifact_location == str(root / "mlartifacts")
    assert parent.info.status == "RUNNING" and parent.info.run_name == "kfp-run-1"
    assert parent.data.params == {"student": "tiny", "epochs": "3"}
    tags = parent.data.tags
    assert {k: tags[k] for k in ("kfp_run", "teacher", "data_fingerprint", "benchmark", "ptdistill.role")} == {
        "kfp_run": "kfp-run-1",
        "teacher": "bert-base",
        "data_fingerprint": "abc123",
        "benchmark": "bench-a",
        "ptdistill.role": "parent",
    }
    assert tags.get("git_commit") == git_commit() == tags.get("mlflow.source.git.commit")

    kl = _student(tracker, parent_id, tmp_path, "kl", 0, 0.80)
    pt = _student(tracker, parent_id, tmp_path, "ptloss", 1, 0.85, order=3, eps=np.array(EPS, dtype=np.float32))

    children = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert {r.info.run_id for r in children} == {kl, pt}
    run = client.get_run(pt)
    assert run.info.status == "FINISHED" and run.info.run_name == "ptloss-seed1"
    assert run.data.tags["ptdistill.role"] == "student" and run.data.tags["benchmark"] == "bench-a"
    # float32 noise is rounded away in the param; the artifact keeps the full matrix.
    assert run.data.params == {"method": "ptloss", "seed": "1", "order": "3", "eps": json.dumps(EPS, separators=(",", ":"))}
    assert run.data.metrics["test_f1"] == pytest.approx(0.75)
    assert run.data.metrics["train_loss"] == pytest.approx(0.4)
    history = client.get_metric_history(pt, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 1.0), (10, 0.6), (20, 0.4)]
    assert _artifact_paths(tracker, pt) == {"confusion_matrix.png", "confusion_matrix.json", "model", "params"}
    assert _artifact_paths(tracker, pt, "model") == {"model/state_dict.pt"}
    saved = json.loads(Path(client.download_artifacts(pt, "params/eps.json", str(tmp_path))).read_text())
    assert saved["key"] == "eps"
    np.testing.assert_allclose(saved["value"], EPS, rtol=1e-6)
    assert _artifact_paths(tracker, kl) == {"confusion_matrix.png", "confusion_matrix.json", "model"}

    table, plot = tmp_path / "search.csv", tmp_path / "proxy.png"
    table.write_text("method,score\nptloss,0.9\n")
    plot.write_bytes(b"\x89PNG")
    tracker.log_parent_artifacts(parent_id, {"search/table.csv": table})
    tracker.log_parent_artifacts(parent_id, [plot])
    assert _artifact_paths(tracker, parent_id) == {"search", "proxy.png"}
    assert _artifact_paths(tracker, parent_id, "search") == {"search/table.csv"}
    with pytest.raises(ValueError, match="relative"):
        tracker.log_parent_artifacts(parent_id, {"../escape.csv": table})

    tracker.finish_parent(parent_id, {"best_val_accuracy": 0.86})
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.metrics == {"best_val_accuracy": 0.86}
    with pytest.raises(ValueError, match="terminal"):
        tracker.finish_parent(parent_id, status="RUNNING")
    # No process-global MLflow state was touched.
    assert mlflow.get_tracking_uri() != tracker.tracking_uri


def test_long_structured_param_is_truncated_but_kept_whole_as_artifact(tracker: Tracker, tmp_path: Path) -> None:
    eps = np.random.default_rng(0).normal(size=(40, 40))
    parent_id = _parent(tracker, "bench-long")
    child = _student(tracker, parent_id, tmp_path, "ptloss", 0, 0.8, eps=eps)
    text = tracker.client.get_run(child).data.params["eps"]
    assert len(text) == 6000 and text.endswith(TRUNCATED)
    saved = json.loads(Path(tracker.client.download_artifacts(child, "params/eps.json", str(tmp_path))).read_text())
    np.testing.assert_array_equal(saved["value"], eps)


def test_log_student_checks_inputs_before_creating_a_run(tracker: Tracker, tmp_path: Path) -> None:
    parent_id = _parent(tracker, "bench-inputs")
    experiment_id = tracker.experiment_id("bench-inputs")
    base = dict(metrics={"test_accuracy": 0.5}, curves={})
    with pytest.raises(ValueError, match="seed"):
        tracker.log_student(parent_id, "x", params={"method": "kl"}, **base)
    with pytest.raises(FileNotFoundError, match="cm.png"):
        tracker.log_student(parent_id, "x", params={"method": "kl", "seed": 0}, artifacts={"cm.png": tmp_path / "nope"}, **base)
    with pytest.raises(ValueError, match="reserved"):
        tracker.log_student(parent_id, "x", params={"method": "kl", "seed": 0}, artifacts={"params/eps.json": tmp_path}, **base)
    with pytest.raises(NotADirectoryError):
        tracker.log_student(parent_id, "x", params={"method": "kl", "seed": 0}, model_dir=tmp_path / "nope", **base)
    assert len(tracker.client.search_runs([experiment_id])) == 1  # the parent only


def test_log_student_failure_leaves_child_failed(tracker: Tracker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    parent_id = _parent(tracker, "bench-upload")

    def broken_upload(*args: object, **kwargs: object) -> None:
        raise OSError("artifact store unreachable")

    monkeypatch.setattr(tracker.client, "log_artifacts", broken_upload)
    with pytest.raises(OSError, match="unreachable"):
        _student(tracker, parent_id, tmp_path, "kl", 0, 0.8)
    (child,) = tracker.client.search_runs([tracker.experiment_id("bench-upload")], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert child.info.status == "FAILED"


def test_fail_parent_closes_parent_and_dangling_children(tracker: Tracker, tmp_path: Path) -> None:
    parent_id = _parent(tracker, "bench-fail")
    done = _student(tracker, parent_id, tmp_path, "kl", 0, 0.8)
    # What a step killed in the middle of logging leaves behind.
    crashed = tracker.client.create_run(
        tracker.experiment_id("bench-fail"), tags={"mlflow.parentRunId": parent_id}
    ).info.run_id
    tracker.fail_parent(parent_id, "distill_student: OOMKilled")
    parent = tracker.client.get_run(parent_id)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["ptdistill.failure_reason"] == "distill_student: OOMKilled"
    assert tracker.client.get_run(crashed).info.status == "FAILED"
    assert tracker.client.get_run(done).info.status == "FINISHED"


def test_promote_champion(store: tuple[Tracker, Path], tmp_path: Path) -> None:
    tracker, _ = store
    client = tracker.client
    parent_id = _parent(tracker, "bench-reg")
    first, worse, tie, better = (_student(tracker, parent_id, tmp_path, "kl", seed, 0.8) for seed in range(4))
    name = "ptdistill-bench-reg"

    assert tracker.promote_champion("bench-reg", first, 0.80) == {"version": 1, "champion": True, "previous_score": None}
    assert tracker.promote_champion("bench-reg", worse, 0.70) == {"version": 2, "champion": False, "previous_score": 0.80}
    assert tracker.promote_champion("bench-reg", tie, 0.80) == {"version": 3, "champion": False, "previous_score": 0.80}
    assert client.get_model_version_by_alias(name, "champion").version in (1, "1")
    assert tracker.promote_champion("bench-reg", better, 0.90) == {"version": 4, "champion": True, "previous_score": 0.80}

    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.run_id == better and champion.source == f"runs:/{better}/model"
    assert float(champion.tags["validation_score"]) == 0.90
    assert float(client.get_model_version(name, "2").tags["validation_score"]) == 0.70
    # A plain directory (no MLmodel file) registers and downloads through the alias.
    local = tracker.download_model("bench-reg", tmp_path / "dl")
    assert (local / "state_dict.pt").read_bytes() == b"weights"

    with pytest.raises(ValueError, match="finite"):
        tracker.promote_champion("bench-reg", better, math.nan)
    with pytest.raises(FileNotFoundError, match="model"):
        tracker.promote_champion("bench-reg", parent_id, 0.99)


def test_promote_champion_lower_is_better_and_unscored_champion(tracker: Tracker, tmp_path: Path) -> None:
    parent_id = _parent(tracker, "bench-loss")
    a, b, c = (_student(tracker, parent_id, tmp_path, "kl", seed, 0.8) for seed in range(3))
    assert tracker.promote_champion("bench-loss", a, 0.5, higher_is_better=False)["champion"]
    assert tracker.promote_champion("bench-loss", b, 0.4, higher_is_better=False)["champion"]
    # A champion whose score tag was removed (e.g. chosen by hand) is not replaced automatically.
    tracker.client.delete_model_version_tag("ptdistill-bench-loss", "2", "validation_score")
    assert tracker.promote_champion("bench-loss", c, 0.1, higher_is_better=False) == {
        "version": 3,
        "champion": False,
        "previous_score": None,
    }


def test_latest_students(tracker: Tracker, tmp_path: Path) -> None:
    assert tracker.latest_students("never-run").empty
    old = _parent(tracker, "bench-cmp", "run-old")
    _student(tracker, old, tmp_path / "old", "kl", 0, 0.70)
    time.sleep(0.01)  # start times are in milliseconds
    new = _parent(tracker, "bench-cmp", "run-new")
    _student(tracker, new, tmp_path, "ptloss", 1, 0.85, eps=EPS)
    _student(tracker, new, tmp_path, "kl", 1, 0.80)
    _student(tracker, new, tmp_path, "kl", 0, 0.78)

    frame = tracker.latest_students("bench-cmp")
    assert list(frame.columns) == [
        "parent_run_id", "parent_run_name", "run_id", "run_name", "method", "seed",
        "test_accuracy", "test_nll", "test_ece", "test_f1", "train_loss", "val_accuracy",
    ]  # fmt: skip
    assert set(frame["parent_run_id"]) == {new}
    assert list(zip(frame["method"], frame["seed"])) == [("kl", 0), ("kl", 1), ("ptloss", 1)]
    assert frame["test_accuracy"].tolist() == pytest.approx([0.78, 0.80, 0.85])
    assert frame["val_accuracy"].tolist() == pytest.approx([0.79, 0.81, 0.86])

    both = tracker.latest_students("bench-cmp", n_parents=2)
    assert both["parent_run_name"].tolist() == ["run-new"] * 3 + ["run-old"]
    assert isinstance(both, pd.DataFrame) and len(both) == 4
    named = tracker.latest_students("bench-cmp", run_names=["run-old"])
    assert named["parent_run_name"].tolist() == ["run-old"] and named["test_accuracy"].tolist() == [0.70]
    assert tracker.latest_students("bench-cmp", run_names=["no-such-run"]).empty


def test_confusion_matrix_files(tmp_path: Path) -> None:
    files = confusion_matrix_files(np.array([[3, 0, 1], [0, 0, 0], [2, 1, 5]]), ["a", "b", "c"], tmp_path)
    assert files["confusion_matrix.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(files["confusion_matrix.json"].read_text()) == {
        "class_names": ["a", "b", "c"],
        "matrix": [[3, 0, 1], [0, 0, 0], [2, 1, 5]],
    }
    with pytest.raises(ValueError, match="3 x 3"):
        tracking.confusion_matrix_png([[1, 2], [3, 4]], ["a", "b", "c"], tmp_path / "bad.png")


def test_sqlite_stores_wait_for_other_processes_locks():
    from ptdistill.tracking import SQLITE_TIMEOUT, _with_sqlite_timeout

    assert _with_sqlite_timeout("sqlite:////tmp/m.db") == f"sqlite:////tmp/m.db?timeout={SQLITE_TIMEOUT}"
    assert _with_sqlite_timeout("sqlite:////tmp/m.db?x=1") == f"sqlite:////tmp/m.db?x=1&timeout={SQLITE_TIMEOUT}"
    assert _with_sqlite_timeout("sqlite:////tmp/m.db?timeout=5") == "sqlite:////tmp/m.db?timeout=5"
    assert _with_sqlite_timeout("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
