"""Sharded teacher inference (``ptdistill.steps.teacher``) against the one-task path, without kfp.

A tiny synthetic setup (prepare_data and train_teacher steps, MLflow on SQLite) is run once
per module; each test then runs inference against its own artifact store, so caches are only
shared where a test shares them on purpose.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ptdistill.families.mlp.split import FeatureSplit
from ptdistill.steps.data import prepare_data
from ptdistill.steps.teacher import (
    SHARD_SUMMARY,
    check_coverage,
    read_teacher_output_probs,
    merge_teacher_shards,
    shard_rows,
    teacher_inference,
    teacher_inference_shard,
    train_teacher,
)
from ptdistill.storage import open_store

# slow: trains a teacher and runs its inference steps.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")]

SPLITS = ("distill", "validation", "test")
SHARDS = 3


@dataclasses.dataclass
class Setup:
    root: Path
    config: object
    info: object
    teacher: Path
    splits: dict[str, Path]

    def store(self, name: str):
        """``info`` with its own artifact store ``name``, and that store."""
        info = dataclasses.replace(self.info, artifact_store=str(self.root / "stores" / name))
        return info, open_store(info.artifact_store)

    def outputs(self, folder: str) -> dict[str, Path]:
        (self.root / folder).mkdir(parents=True, exist_ok=True)
        return {name: self.root / folder / f"{name}.parquet" for name in SPLITS}

    def shards(self, info, folder: str, count: int = SHARDS) -> list[Path]:
        parts = [self.root / folder / f"part-{i}" for i in range(count)]
        for i, part in enumerate(parts):
            teacher_inference_shard(self.config, info, self.teacher, self.splits, i, count, part)
        return parts


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_config) -> Setup:
    root = tmp_path_factory.mktemp("shards")
    config = tiny_config(("kl",))
    data = {name: root / "data" / name for name in ("teacher_train", *SPLITS)}
    (root / "data").mkdir()
    info = prepare_data(config, "shards-unit", f"sqlite:///{root / 'mlflow.db'}", str(root / "stores" / "main"),
                        data, root / "data" / "run_info")
    train_teacher(config, info, data["teacher_train"], data["validation"], root / "teacher")
    return Setup(root, config, info, root / "teacher", {name: data[name] for name in SPLITS})


@pytest.fixture(scope="module")
def unsharded(setup) -> dict:
    info, store = setup.store("unsharded")
    outputs = setup.outputs("unsharded")
    return {"report": teacher_inference(setup.config, info, setup.teacher, setup.splits, outputs),
            "outputs": outputs, "store": store}


@pytest.fixture(scope="module")
def sharded(setup) -> dict:
    info, store = setup.store("sharded")
    parts = setup.shards(info, "sharded")
    outputs = setup.outputs("merged")
    return {"report": merge_teacher_shards(setup.config, info, parts, setup.splits, outputs), "parts": parts,
            "outputs": outputs, "store": store, "info": info}


def test_shard_rows_are_contiguous_blocks_that_cover_the_split():
    for n in range(0, 12):
        for k in range(1, 5):
            blocks = [shard_rows(n, i, k) for i in range(k)]
            np.testing.assert_array_equal(np.concatenate(blocks), np.arange(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    np.testing.assert_array_equal(shard_rows(10, 0, 3), [0, 1, 2, 3])
    with pytest.raises(ValueError, match="shard"):
        shard_rows(10, 3, 3)


def test_feature_split_take_keeps_rows_and_ids(setup):
    split = FeatureSplit.load(setup.splits["test"])
    part = split.take([5, 2])
    np.testing.assert_array_equal(part.ids, split.ids[[5, 2]])
    np.testing.assert_array_equal(part.features, split.features[[5, 2]])
    np.testing.assert_array_equal(part.labels, split.labels[[5, 2]])
    np.testing.assert_array_equal(part.p_star, split.p_star[[5, 2]])


def test_three_shards_give_the_unsharded_outputs_byte_for_byte(setup, unsharded, sharded):
    for name in SPLITS:
        assert sharded["report"]["splits"][name]["cache"] == unsharded["report"]["splits"][name]["cache"] == "miss"
        np.testing.assert_array_equal(read_teacher_output_probs(sharded["outputs"][name]),
                                      read_teacher_output_probs(unsharded["outputs"][name]))
        # Same table (ids in split order, logits, probs, teacher id), same parquet bytes.
        assert sharded["outputs"][name].read_bytes() == unsharded["outputs"][name].read_bytes(), name
    assert sharded["report"]["teacher_id"] == unsharded["report"]["teacher_id"]
    assert sharded["report"]["splits"]["test"]["metrics"] == unsharded["report"]["splits"]["test"]["metrics"]


def test_cache_key_and_entries_match_the_unsharded_path(unsharded, sharded):
    keys = unsharded["store"].list("cache/teacher/")
    assert len(keys) == 3 and sharded["store"].list("cache/teacher/") == keys
    for key in keys:
        assert sharded["store"].read_bytes(key) == unsharded["store"].read_bytes(key)
    for name in SPLITS:
        reported = {s["splits"][name]["key"] for s in sharded["report"]["shards"]}
        assert reported == {r for r in keys if unsharded["report"]["splits"][name]["uri"].endswith(r)}, name


def test_report_has_examples_per_second_per_shard_and_overall(setup, sharded):
    report = sharded["report"]
    assert [s["shard"] for s in report["shards"]] == [0, 1, 2]
    sizes = setup.config.data.sizes
    for shard in report["shards"]:
        assert shard["num_shards"] == SHARDS and shard["examples_per_second"] > 0
        assert shard["rows"] == sum(len(shard_rows(sizes[n], shard["shard"], SHARDS)) for n in SPLITS)
        assert json.loads((sharded["parts"][shard["shard"]] / SHARD_SUMMARY).read_text()) == shard
    for name in SPLITS:
        entry = report["splits"][name]
        assert entry["rows"] == sizes[name] and entry["shards"] == SHARDS and entry["examples_per_second"] > 0
    assert report["rows"] == sum(sizes[n] for n in SPLITS) and report["examples_per_second"] > 0


def test_cached_splits_need_no_shard_inference_either_way(setup, unsharded, sharded):
    # Shards against the store the unsharded run filled: every split is a hit, no part is computed.
    info, _ = setup.store("unsharded")
    parts = setup.shards(info, "after-unsharded")
    assert all(sorted(p.iterdir()) == [p / SHARD_SUMMARY] for p in parts)
    outputs = setup.outputs("after-unsharded-merged")
    report = merge_teacher_shards(setup.config, info, parts, setup.splits, outputs)
    assert {report["splits"][n]["cache"] for n in SPLITS} == {"hit"} and "examples_per_second" not in report
    for name in SPLITS:
        assert outputs[name].read_bytes() == unsharded["outputs"][name].read_bytes()
    # And the one-task path against the store the shards filled.
    again = teacher_inference(setup.config, sharded["info"], setup.teacher, setup.splits, setup.outputs("again"))
    assert {again["splits"][n]["cache"] for n in SPLITS} == {"hit"}


def test_a_missing_shard_is_an_error_naming_split_and_ids(setup, sharded):
    info, store = setup.store("missing")
    parts = sharded["parts"]
    with pytest.raises(ValueError, match=r"split 'distill' exactly once \(parts of shards \[0, 2\] of 3\): "
                                         r"\d+ missing id\(s\) \["):
        merge_teacher_shards(setup.config, info, [parts[0], parts[2]], setup.splits, setup.outputs("missing"))
    assert store.list("cache/teacher/") == []  # nothing cached from an incomplete merge


def test_duplicate_rows_are_an_error_naming_split_and_ids(setup, sharded):
    info, _ = setup.store("duplicate")
    parts = sharded["parts"]
    copy = setup.root / "duplicate" / "part-1-again"
    shutil.copytree(parts[1], copy)
    distill = setup.config.data.sizes["distill"]
    first = int(FeatureSplit.load(setup.splits["distill"]).ids[shard_rows(distill, 1, SHARDS)[0]])
    with pytest.raises(ValueError, match=rf"split 'distill'.*duplicate id\(s\) \[{first}, "):
        merge_teacher_shards(setup.config, info, [*parts, copy], setup.splits, setup.outputs("duplicate"))


def test_parts_of_different_teachers_are_refused(setup, sharded, tmp_path):
    other = tmp_path / "other-teacher"
    shutil.copytree(sharded["parts"][1], other)
    summary = json.loads((other / SHARD_SUMMARY).read_text())
    (other / SHARD_SUMMARY).write_text(json.dumps({**summary, "teacher_id": "mlp:someone-else"}))
    info, _ = setup.store("mixed")
    with pytest.raises(ValueError, match="one teacher"):
        merge_teacher_shards(setup.config, info, [sharded["parts"][0], other, sharded["parts"][2]], setup.splits,
                             setup.outputs("mixed"))


def test_check_coverage_names_ids_not_in_the_split():
    check_coverage("test", np.array([3, 1, 2]), np.array([2, 3, 1]))
    with pytest.raises(ValueError, match=r"split 'test'.*1 missing id\(s\) \[1\]; 1 id\(s\) not in the split \[9\]"):
        check_coverage("test", np.array([3, 1, 2]), np.array([2, 3, 9]))
