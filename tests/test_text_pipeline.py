"""Text benchmarks end to end through kfp.local: the ``text_pipeline`` chain of conftest.py.

``sst2-1`` and ``sst2-2`` run the paper-task path (a GLUE-shaped local copy loaded through
``datasets``, the paper's split protocol of docs/method.md §7.3, a T5 teacher scored through the
verbalizer, a BERT student with checkpoints); the second must be served by the teacher cache.
``text-1`` runs your own CSV of sentence pairs with a teacher fine-tuned in the run.
"""

from __future__ import annotations

import json

import pytest

from ptdistill.families.text.split import TextSplit
from ptdistill.storage import open_store
from ptdistill.tracking import PARENT_TAG

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")

ALL_HIT = "distill:hit,validation:hit,test:hit"
ALL_MISS = "distill:miss,validation:miss,test:miss"


def _parent(chain, benchmark: str, run_name: str):
    tracker = chain.tracker()
    runs = tracker.client.search_runs([tracker.experiment_id(benchmark, create=False)],
                                      f"tags.`kfp.run_name` = '{run_name}'")
    assert len(runs) == 1, f"expected one parent run {run_name}, got {len(runs)}"
    return runs[0]


def test_sst2_runs_report_both_methods_with_task_metrics(text_pipeline):
    first = text_pipeline.outcomes[0]
    assert sorted(row["method"] for row in first["students"]) == ["kl", "ptloss"]
    for row in first["students"]:
        assert 0 <= row["test_accuracy"] <= 1 and row["test_nll"] > 0 and row["test_task"] == row["test_accuracy"]
        assert [c["class"] for c in row["per_class"]] == ["negative", "positive"]
        assert sum(c["support"] for c in row["per_class"]) == 40  # the official validation split is the test split
    assert first["markdown"].startswith("# ptdistill sst2: sst2-1")


def test_sst2_teacher_is_pinned_and_cached(text_pipeline):
    first, second = (_parent(text_pipeline, "sst2", name) for name in ("sst2-1", "sst2-2"))
    assert first.info.status == second.info.status == "FINISHED"
    teacher_id = first.data.tags["teacher_id"]
    assert teacher_id.startswith("t5@sha256:") and second.data.tags["teacher_id"] == teacher_id
    assert first.data.tags["teacher_cache"] == ALL_MISS and second.data.tags["teacher_cache"] == ALL_HIT
    assert first.data.tags["data_fingerprint"] == second.data.tags["data_fingerprint"]


def test_sst2_splits_follow_the_protocol(text_pipeline):
    root = text_pipeline.pipeline_root
    splits = {}
    for name in ("teacher_train", "distill", "validation", "test"):
        (path,) = [p for p in root.glob(f"ptdistill-sst2-*/prepare-data/{name}") if "sst2" in str(p)][:1]
        splits[name] = TextSplit.load(path)
    assert {n: len(s) for n, s in splits.items()} == {"teacher_train": 60, "distill": 80, "validation": 40, "test": 40}
    assert splits["distill"].labels is None
    assert not set(splits["teacher_train"].ids) & set(splits["validation"].ids)


def test_students_are_saved_and_checkpoints_cleared(text_pipeline):
    store = open_store(text_pipeline.artifact_store)
    for benchmark, run in (("sst2", "sst2-1"), ("sst2", "sst2-2"), ("text", "text-1")):  # text-1 fine-tunes
        keys = store.list(f"{benchmark}/{run}/")
        assert not [k for k in keys if "/checkpoints/" in k], "resume checkpoints left behind after success"
        assert any("/teacher/" in k for k in keys)
        student = {k.rsplit("/", 1)[1] for k in keys if "/students/ptloss-seed0/" in k}
        assert {"config.json", "model.safetensors", "training.json", "tokenizer_config.json"} <= student


def test_student_children_in_mlflow(text_pipeline):
    parent = _parent(text_pipeline, "sst2", "sst2-1")
    client = text_pipeline.tracker().client
    children = client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["kl-seed0", "ptloss-seed0"]
    for child in children:
        names = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"confusion_matrix.png", "per_class.json"} <= names
        assert "test_accuracy" in child.data.metrics and "val_nll" in child.data.metrics


def test_own_text_file_with_a_fine_tuned_teacher(text_pipeline):
    outcome = text_pipeline.outcomes[2]
    assert outcome["ok"] and outcome["run_name"] == "text-1"
    parent = _parent(text_pipeline, "text", "text-1")
    assert "+fine-tuned@sha256:" in parent.data.tags["teacher_id"]
    assert json.loads(parent.data.params["methods"]) == ["ptloss", "kl"]
    for row in outcome["students"]:
        assert [c["class"] for c in row["per_class"]] == ["no", "yes"]
    assert parent.data.metrics["teacher_test_accuracy"] >= 0.0
