"""The whole pipeline through kfp.local (``pipelines.local.run_local``), end to end.

The runs themselves are session fixtures in conftest.py (started in the background right
after collection); these tests only inspect what the runs left: the result, the MLflow store,
the model registry and the artifact store (a local folder, or a bucket of the GCS emulator).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptdistill.storage import open_store
from ptdistill.tracking import CHAMPION_ALIAS, FAILURE_TAG, PARENT_TAG, ROLE_TAG, experiment_name, git_commit

from conftest import DISTILL_FAILURE

pytestmark = pytest.mark.filterwarnings(
    "ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning",
)

BENCHMARK = "synthetic"
ALL_HIT = "distill:hit,validation:hit,test:hit"
ALL_MISS = "distill:miss,validation:miss,test:miss"


def _experiment(chain) -> str:
    experiment = chain.tracker().experiment_id(BENCHMARK, create=False)
    assert experiment is not None, f"no MLflow experiment {experiment_name(BENCHMARK)!r} in {chain.tracking_uri}"
    return experiment


def _parents(chain, run_name: str) -> list:
    client = chain.tracker().client
    return client.search_runs([_experiment(chain)], f"tags.`kfp.run_name` = '{run_name}'")


def _parent(chain, run_name: str):
    parents = _parents(chain, run_name)
    assert len(parents) == 1, f"expected one parent run for {run_name}, got {len(parents)}"
    return parents[0]


def _children(chain, parent) -> list:
    client = chain.tracker().client
    return client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")


# --------------------------------------------------------------------------- local store


def test_result_table_has_both_methods(local_pipeline):
    first = local_pipeline.outcomes[0]
    assert first["run_name"] == "local-1"
    assert sorted(row["method"] for row in first["students"]) == ["kl", "ptloss"]
    for row in first["students"]:
        assert row["seed"] == 0
        assert 0.0 <= row["test_accuracy"] <= 1.0 and row["test_nll"] > 0
    markdown = first["markdown"]
    assert markdown.startswith(f"# ptdistill {BENCHMARK}: local-1")
    assert "| ptloss | 1 |" in markdown and "| kl | 1 |" in markdown
    assert "Teacher on test" in markdown and "proxy teacher" in markdown
    report = Path(first["report_uri"].removeprefix("file://"))  # what `ptdistill run` prints as "report:"
    assert report.name == "report.md" and report.read_text() == markdown


def test_parent_run_is_finished_and_tagged(local_pipeline):
    parent = _parent(local_pipeline, "local-1")
    tags = parent.data.tags
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "local-1"
    assert tags[ROLE_TAG] == "parent"
    assert tags["kfp.run_name"] == "local-1"
    assert tags["benchmark"] == BENCHMARK
    fingerprint = tags["data_fingerprint"]
    assert len(fingerprint) == 64 and f"`{fingerprint[:12]}`" in local_pipeline.outcomes[0]["markdown"]
    assert tags["git_commit"] == (git_commit() or "unknown")
    assert tags["teacher_id"].startswith("mlp:")
    assert tags["teacher_cache"] == ALL_MISS
    assert json.loads(parent.data.params["methods"]) == ["ptloss", "kl"]
    for key in ("test_accuracy_mean_ptloss", "test_accuracy_mean_kl", "search_order", "teacher_test_accuracy"):
        assert key in parent.data.metrics, key


def test_children_are_finished_with_params_metrics_and_curves(local_pipeline):
    parent = _parent(local_pipeline, "local-1")
    children = {run.data.params["method"]: run for run in _children(local_pipeline, parent)}
    assert sorted(children) == ["kl", "ptloss"]
    client = local_pipeline.tracker().client
    for method, child in children.items():
        assert child.info.status == "FINISHED"
        assert child.info.run_name == f"{method}-seed0"
        assert child.data.tags[ROLE_TAG] == "student"
        assert child.data.params["seed"] == "0"
        for key in ("test_accuracy", "test_nll", "test_ece", "test_task", "val_task"):
            assert key in child.data.metrics, (method, key)
        assert child.data.metrics["test_task"] == child.data.metrics["test_accuracy"]  # task_metric: accuracy
        history = client.get_metric_history(child.info.run_id, "train_loss")
        steps = [m.step for m in history]
        assert len(history) >= 3 and steps == sorted(set(steps)), steps
        assert {a.path for a in client.list_artifacts(child.info.run_id)} >= {
            "model", "confusion_matrix.png", "confusion_matrix.json", "training.json"}
    ptloss = children["ptloss"].data.params
    eps = json.loads(ptloss["eps"])
    assert int(ptloss["order"]) == len(eps[0]) and len(eps) == 3  # C x M coefficients
    assert "eps" not in children["kl"].data.params and "order" not in children["kl"].data.params


def test_parent_artifacts(local_pipeline):
    parent = _parent(local_pipeline, "local-1")
    paths = {a.path for a in local_pipeline.tracker().client.list_artifacts(parent.info.run_id)}
    assert paths >= {"result.json", "candidates.csv", "proxy.png", "report.md", "report.html", "accuracy.png",
                     "students.json"}


def test_champion_alias_points_at_a_student(local_pipeline):
    client = local_pipeline.tracker().client
    name = experiment_name(BENCHMARK)
    assert name == "ptdistill-synthetic"
    version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    students = {run.info.run_id for run_name in ("local-1", "local-2")
                for run in _children(local_pipeline, _parent(local_pipeline, run_name))}
    assert version.run_id in students
    # One candidate registered per pipeline run.
    assert len(client.search_model_versions(f"name = '{name}'")) == 2


def test_artifact_store_layout(local_pipeline):
    store = open_store(local_pipeline.artifact_store)
    keys = store.list("synthetic/local-1/")
    for expected in ("report/report.md", "report/report.html", "report/students.json", "search/result.json",
                     "search/proxy.png", "search/candidates.csv", "teacher/config.json"):
        assert f"synthetic/local-1/{expected}" in keys, expected
    for method in ("ptloss", "kl"):
        assert any(k.startswith(f"synthetic/local-1/students/{method}-seed0/") for k in keys), method
    cache = store.list("cache/teacher/")
    assert len(cache) == 3 and all(k.endswith(".parquet") for k in cache), cache  # one per split, both runs
    assert store.read_text("synthetic/local-1/report/report.md") == local_pipeline.outcomes[0]["markdown"]


def test_second_run_hits_the_teacher_cache(local_pipeline):
    first, second = _parent(local_pipeline, "local-1"), _parent(local_pipeline, "local-2")
    assert second.info.status == "FINISHED"
    assert first.data.tags["teacher_cache"] == ALL_MISS
    assert second.data.tags["teacher_cache"] == ALL_HIT
    assert second.data.tags["teacher_id"] == first.data.tags["teacher_id"]
    assert second.data.tags["data_fingerprint"] == first.data.tags["data_fingerprint"]
    assert sorted(r["method"] for r in local_pipeline.outcomes[1]["students"]) == ["kl", "ptloss"]
    assert len(_children(local_pipeline, second)) == 2


# --------------------------------------------------------------------------- sharded teacher inference


def test_sharded_run_finishes_through_shards_and_a_merge(sharded_pipeline):
    (outcome,) = sharded_pipeline.outcomes
    assert outcome["run_name"] == "sharded-1"
    assert sorted(row["method"] for row in outcome["students"]) == ["kl", "ptloss"]
    assert "Teacher on test" in outcome["markdown"]
    root = sharded_pipeline.pipeline_root
    parts = sorted(root.glob("*/for-loop-*-iteration-*/teacher-inference-shard/part/shard.json"))
    assert [json.loads(p.read_text())["shard"] for p in parts] == [0, 1]
    assert len(list(root.glob("*/merge-teacher-shards/teacher_report"))) == 1
    assert list(root.glob("*/teacher-inference")) == []


def test_sharded_teacher_outputs_equal_the_unsharded_run(sharded_pipeline, local_pipeline):
    sharded, unsharded = open_store(sharded_pipeline.artifact_store), open_store(local_pipeline.artifact_store)
    keys = sharded.list("cache/teacher/")
    # Same teacher, data and settings: the same cache keys, and the same bytes under them.
    assert len(keys) == 3 and keys == unsharded.list("cache/teacher/")
    for key in keys:
        assert sharded.read_bytes(key) == unsharded.read_bytes(key), key
    first, parent = _parent(local_pipeline, "local-1"), _parent(sharded_pipeline, "sharded-1")
    for tag in ("teacher_id", "data_fingerprint"):
        assert parent.data.tags[tag] == first.data.tags[tag], tag
    assert parent.data.metrics["teacher_test_accuracy"] == first.data.metrics["teacher_test_accuracy"]


def test_sharded_parent_run_tags_and_teacher_report(sharded_pipeline):
    parent = _parent(sharded_pipeline, "sharded-1")
    tags = parent.data.tags
    assert parent.info.status == "FINISHED" and parent.info.run_name == "sharded-1"
    assert tags[ROLE_TAG] == "parent" and tags["kfp.run_name"] == "sharded-1" and tags["benchmark"] == BENCHMARK
    assert tags["teacher_cache"] == ALL_MISS and tags["teacher_id"].startswith("mlp:")
    for key in ("teacher_test_accuracy", "teacher_examples_per_second", "test_accuracy_mean_ptloss",
                "test_accuracy_mean_kl", "search_order"):
        assert key in parent.data.metrics, key
    assert len(_children(sharded_pipeline, parent)) == 2
    (path,) = sharded_pipeline.pipeline_root.glob("*/merge-teacher-shards/teacher_report")
    report = json.loads(path.read_text())
    assert report["teacher_id"] == tags["teacher_id"]
    assert [(s["shard"], s["num_shards"]) for s in report["shards"]] == [(0, 2), (1, 2)]
    assert all(s["examples_per_second"] > 0 for s in report["shards"])
    assert report["examples_per_second"] == pytest.approx(parent.data.metrics["teacher_examples_per_second"])
    assert {report["splits"][n]["shards"] for n in ("distill", "validation", "test")} == {2}


# --------------------------------------------------------------------------- a failing run


def test_failing_run_raises(failing_pipeline):
    (outcome,) = failing_pipeline.outcomes
    assert not outcome["ok"], "a run whose student asks for a missing GPU finished"
    assert outcome["error_type"] == "RuntimeError", outcome["traceback"]
    assert "distill-student" in outcome["error"]
    # The step's own error reached the log.
    assert DISTILL_FAILURE in failing_pipeline.log.read_text(errors="replace")


def test_failing_run_marks_the_parent_failed(failing_pipeline):
    parent = _parent(failing_pipeline, "failing-1")
    assert parent.info.status == "FAILED"
    assert "distill-student" in parent.data.tags[FAILURE_TAG]
    client = failing_pipeline.tracker().client
    running = client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'")
    assert running == []


def test_failing_run_leaves_no_objects_for_the_run(failing_pipeline):
    store = open_store(failing_pipeline.artifact_store)
    assert store.list("synthetic/failing-1/") == []
    assert store.list("synthetic/") == []
    # The teacher cache keeps its complete entries: the next run with this teacher reuses them.
    assert len(store.list("cache/teacher/")) == 3


# --------------------------------------------------------------------------- GCS artifact store


def test_gcs_runs_finish_with_objects_in_the_bucket(gcs_pipeline, gcs_pipeline_emulator):
    store = gcs_pipeline_emulator.store(gcs_pipeline.artifact_store)
    assert gcs_pipeline.artifact_store.startswith("gs://")
    cache = store.list("cache/teacher/")
    assert len(cache) == 3 and all(k.endswith(".parquet") for k in cache), cache
    for run_name, outcome in zip(("gcs-1", "gcs-2"), gcs_pipeline.outcomes):
        assert outcome["ok"] and [r["method"] for r in outcome["students"]] == ["ptloss"]
        assert store.read_text(f"synthetic/{run_name}/report/report.md") == outcome["markdown"]
        keys = store.list(f"synthetic/{run_name}/")
        assert f"synthetic/{run_name}/search/result.json" in keys
        assert any(k.startswith(f"synthetic/{run_name}/students/ptloss-seed0/") for k in keys)
    # Nothing was written to a local folder named like the bucket.
    assert not (gcs_pipeline.root / "cwd" / "gs:").exists()


def test_gcs_second_run_hits_the_cache_in_the_bucket(gcs_pipeline, gcs_pipeline_emulator):
    first, second = _parent(gcs_pipeline, "gcs-1"), _parent(gcs_pipeline, "gcs-2")
    assert first.info.status == second.info.status == "FINISHED"
    assert first.data.tags["teacher_cache"] == ALL_MISS
    assert second.data.tags["teacher_cache"] == ALL_HIT
    store = gcs_pipeline_emulator.store(gcs_pipeline.artifact_store)
    log = (gcs_pipeline.pipeline_root / "logs" / "gcs-2" / "teacher-inference.log").read_text(errors="replace")
    for key in store.list("cache/teacher/"):
        assert f"cache hit ({store.uri(key)})" in log, key  # read back from the bucket
