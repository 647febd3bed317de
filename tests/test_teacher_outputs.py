"""Bring your own teacher outputs (``teacher.outputs``): reading, kinds, alignment, every error, the
import_teacher_outputs component, the compiled DAG and one local tabular run without a teacher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import STORAGE_TEST_BUCKET
from kfp import dsl

from ptdistill.config import ConfigError, load_config, to_dict
from ptdistill.experiments import default_config
from ptdistill.teacher_outputs import align, read_outputs, teacher_outputs

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated:DeprecationWarning")

CLASSES = ["a", "b", "c"]
#: Golden probabilities: exact in binary up to float64 rounding of their logs.
PROBS = np.array([[0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.25, 0.5, 0.25], [0.6, 0.2, 0.2],
                  [0.125, 0.125, 0.75], [0.4, 0.4, 0.2]])
N = len(PROBS)
#: Example ids of a six-row data file split four ways (as tabular ids: data row numbers).
SPLIT_IDS = {"teacher_train": np.array([1]), "distill": np.array([0, 4]), "validation": np.array([2]),
             "test": np.array([3, 5])}
#: The same examples as the synthetic benchmark numbers them: 0..n-1 within each split.
REPEATED_IDS = {"teacher_train": np.array([0]), "distill": np.array([0, 1]), "validation": np.array([0]),
                "test": np.array([0, 1])}


def values(kind: str) -> np.ndarray:
    """PROBS as ``kind``; logits shifted by +1 so that they take both signs (as real logits do)."""
    return {"probs": PROBS, "log_probs": np.log(PROBS), "logits": np.log(PROBS) + 1.0}[kind]


def write(path: Path, data) -> str:
    """``data`` (a DataFrame or an array) to ``path`` by its suffix; returns the path as a string."""
    if path.suffix == ".npy":
        np.save(path, data)
    elif path.suffix == ".csv":
        data.to_csv(path, index=False, float_format="%.17g")
    else:
        data.to_parquet(path, index=False)
    return str(path)


def table(kind: str, **extra) -> pd.DataFrame:
    return pd.DataFrame({**extra, **{f"p{k}": values(kind)[:, k] for k in range(3)}})


def rows_of(outputs, rows, name):
    return outputs.probs[rows[name]]


# --------------------------------------------------------------------------- formats and kinds


@pytest.mark.parametrize("declared", [False, True], ids=["detected", "declared"])
@pytest.mark.parametrize("kind", ["probs", "log_probs", "logits"])
@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".npy"])
def test_each_format_and_kind_gives_the_golden_probabilities(tmp_path, suffix, kind, declared):
    data = values(kind) if suffix == ".npy" else table(kind)
    uri = write(tmp_path / f"outputs{suffix}", data)
    outputs, rows = teacher_outputs(uri, kind if declared else "auto", CLASSES, SPLIT_IDS)
    assert (outputs.kind, outputs.detected) == (kind, not declared)
    np.testing.assert_allclose(outputs.probs, PROBS, rtol=0, atol=1e-15)
    for name in ("distill", "validation", "test"):
        np.testing.assert_allclose(rows_of(outputs, rows, name), PROBS[SPLIT_IDS[name]], rtol=0, atol=1e-15)
    assert outputs.describe()["aligned_by"] == "row order"


def test_a_list_column_declares_its_kind_as_ptdistill_writes_outputs(tmp_path):
    uri = write(tmp_path / "o.parquet", pd.DataFrame({"id": np.arange(N), "logits": list(values("logits")),
                                                      "teacher_id": "api-model"}))
    outputs, _ = teacher_outputs(uri, "auto", CLASSES, SPLIT_IDS)
    assert (outputs.kind, outputs.detected) == ("logits", False)
    np.testing.assert_allclose(outputs.probs, PROBS, atol=1e-15)
    np.testing.assert_array_equal(outputs.logits, values("logits"))


def test_rows_are_aligned_by_id_whatever_their_order(tmp_path):
    order = np.random.default_rng(3).permutation(N)
    frame = table("logits", id=np.arange(N)).iloc[order]
    outputs, rows = teacher_outputs(write(tmp_path / "o.parquet", frame), "auto", CLASSES, SPLIT_IDS)
    assert outputs.describe()["aligned_by"] == "id column"
    for name in ("distill", "validation", "test"):
        np.testing.assert_allclose(rows_of(outputs, rows, name), PROBS[SPLIT_IDS[name]], atol=1e-15)
    # teacher-train rows are not needed: a file without them is complete
    outputs, rows = teacher_outputs(write(tmp_path / "no_tt.csv", table("probs", id=np.arange(N)).drop(index=1)),
                                    "probs", CLASSES, SPLIT_IDS)
    np.testing.assert_allclose(rows_of(outputs, rows, "test"), PROBS[[3, 5]], atol=1e-15)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("order", [["c", "a", "b"], ["c", "b", "a"]], ids=["permuted", "reversed"])
def test_columns_named_after_the_classes_are_matched_by_name(tmp_path, order, suffix):
    # reversed columns once came out of pandas as a negative-stride view that torch refused
    frame = pd.DataFrame({name: PROBS[:, CLASSES.index(name)] for name in order})
    outputs, _ = teacher_outputs(write(tmp_path / f"o{suffix}", frame), "auto", CLASSES, SPLIT_IDS)
    np.testing.assert_allclose(outputs.probs, PROBS, atol=1e-15)


def test_a_split_column_names_examples_whose_ids_repeat_across_splits(tmp_path):
    # data rows 0..5 as REPEATED_IDS number them: split and id of each row of PROBS
    split = ["distill", "teacher_train", "validation", "test", "distill", "test"]
    ids = [0, 0, 0, 0, 1, 1]
    order = [5, 2, 0, 3, 1, 4]
    frame = table("probs", split=split, id=ids).iloc[order]
    outputs, rows = teacher_outputs(write(tmp_path / "o.parquet", frame), "auto", CLASSES, REPEATED_IDS)
    assert outputs.describe()["aligned_by"] == "split and id column"
    expected = {"distill": [0, 4], "validation": [2], "test": [3, 5]}
    for name, data_rows in expected.items():
        np.testing.assert_allclose(rows_of(outputs, rows, name), PROBS[data_rows], atol=1e-15)
    # without ids: row order within each split
    frame = table("probs", split=split)
    outputs, rows = teacher_outputs(write(tmp_path / "o.csv", frame), "auto", CLASSES, REPEATED_IDS)
    np.testing.assert_allclose(rows_of(outputs, rows, "test"), PROBS[[3, 5]], atol=1e-15)


def test_probabilities_rounded_in_a_csv_pass_within_their_precision(tmp_path):
    rounded = pd.DataFrame({"a": [0.333, 0.5], "b": [0.333, 0.25], "c": [0.333, 0.25]})
    outputs, _ = teacher_outputs(write(tmp_path / "o.csv", rounded), "auto", CLASSES,
                                 {"teacher_train": np.array([], np.int64), "distill": np.array([0]),
                                  "validation": np.array([1]), "test": np.array([], np.int64)})
    assert outputs.kind == "probs"
    np.testing.assert_allclose(outputs.probs[0], [1 / 3] * 3, atol=1e-15)


def test_a_gs_uri_is_read_through_the_store(tmp_path, faulty_gcs, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", faulty_gcs.endpoint)
    faulty_gcs.reset()
    bucket = faulty_gcs.client.bucket(STORAGE_TEST_BUCKET)
    blob = bucket.blob("teacher-outputs-test/outputs.parquet")
    blob.upload_from_filename(write(tmp_path / "o.parquet", table("logits", id=np.arange(N))))
    uri = f"gs://{STORAGE_TEST_BUCKET}/teacher-outputs-test/outputs.parquet"
    try:
        outputs, rows = teacher_outputs(uri, "auto", CLASSES, SPLIT_IDS)
        assert outputs.uri == uri and outputs.kind == "logits"
        np.testing.assert_allclose(rows_of(outputs, rows, "test"), PROBS[[3, 5]], atol=1e-15)
        with pytest.raises(ValueError) as err:  # errors name the object, not the local copy
            teacher_outputs(uri, "auto", ["a", "b"], SPLIT_IDS)
        assert str(err.value) == f"{uri}: has 3 class columns ['p0', 'p1', 'p2']; the data has 2 classes ['a', 'b']"
        missing = uri.replace("outputs.parquet", "missing.parquet")
        with pytest.raises(ValueError) as err:
            teacher_outputs(missing, "auto", CLASSES, SPLIT_IDS)
        assert str(err.value) == f"{missing}: object not found"
    finally:
        blob.delete()


# --------------------------------------------------------------------------- every error


def _error(tmp_path, name: str, data, kind: str = "auto", classes=CLASSES, split_ids=SPLIT_IDS) -> str:
    uri = write(tmp_path / name, data)
    with pytest.raises(ValueError) as err:
        teacher_outputs(uri, kind, classes, split_ids)
    return str(err.value).replace(str(tmp_path), "T")


def test_missing_examples_are_counted_and_named(tmp_path):
    frame = table("probs", id=np.arange(N)).drop(index=[3, 5])
    assert _error(tmp_path, "o.csv", frame) == (
        "T/o.csv: 2 of the 5 distill, validation and test examples have no row: test 2 of 2 (id(s) [3, 5]);"
        " expected a row for every one (rows are matched by the 'id' column)")
    frame = table("probs", id=np.arange(N)).drop(index=[0, 2, 3])
    assert _error(tmp_path, "o.parquet", frame) == (
        "T/o.parquet: 3 of the 5 distill, validation and test examples have no row: distill 1 of 2 (id(s) [0]),"
        " validation 1 of 1 (id(s) [2]), test 1 of 2 (id(s) [3]); expected a row for every one (rows are matched by"
        " the 'id' column)")
    assert _error(tmp_path, "o.npy", PROBS[:4]) == (
        "T/o.npy: 2 of the 5 distill, validation and test examples have no row: distill 1 of 2 (id(s) [4]), test 1"
        " of 2 (id(s) [5]); expected a row for every one (rows are matched by row order (no 'id' column: row i is the"
        " example with id i))")


def test_duplicate_and_foreign_rows_are_refused(tmp_path):
    frame = table("probs", id=[0, 1, 2, 3, 3, 5])
    assert _error(tmp_path, "dup.csv", frame) == (
        "T/dup.csv: 1 id(s) of the data have more than one row: [3]; expected one row per example (rows are"
        " matched by the 'id' column)")
    longer = np.vstack([PROBS, PROBS[:1]])
    assert _error(tmp_path, "long.npy", longer) == (
        "T/long.npy: 1 row(s) match no example of the data: id(s) [6]; is the file for other data? (rows are"
        " matched by row order (no 'id' column: row i is the example with id i))")


def test_ids_that_repeat_across_splits_need_a_split_column(tmp_path):
    assert _error(tmp_path, "o.parquet", table("probs"), split_ids=REPEATED_IDS) == (
        "T/o.parquet: this data's example ids repeat across splits (id 0 is in teacher_train and distill and"
        " validation and test), so an id alone does not name an example; add a 'split' column (distill,"
        " validation, test)")
    assert _error(tmp_path, "s.csv", table("probs", split=["distill"] * 5 + ["train"]), split_ids=REPEATED_IDS) == (
        "T/s.csv: column 'split' holds ['train']; expected teacher_train, distill, validation, test (teacher_train"
        " rows are ignored)")


def test_class_count_dtype_and_shape_errors_name_the_file_and_column(tmp_path):
    assert _error(tmp_path, "two.csv", table("probs").drop(columns="p2")) == (
        "T/two.csv: has 2 class columns ['p0', 'p1']; the data has 3 classes ['a', 'b', 'c']")
    assert _error(tmp_path, "two.npy", PROBS[:, :2]) == (
        "T/two.npy: has 2 class columns; the data has 3 classes ['a', 'b', 'c']")
    assert _error(tmp_path, "flat.npy", PROBS.ravel()) == (
        "T/flat.npy: expected a 2-D array (examples, classes), got shape (18,)")
    text = table("probs").astype({"p1": str})
    text.loc[2, "p1"] = "high"
    assert _error(tmp_path, "text.parquet", text) == "T/text.parquet: column 'p1' has dtype str; expected numbers"
    assert _error(tmp_path, "ids.csv", table("probs", id=[0, 1, 2, 3, 4.5, 5])) == (
        "T/ids.csv: column 'id' has dtype float64; expected integer example ids (0-based row numbers of the data)")
    ragged = pd.DataFrame({"probs": [list(p) for p in PROBS[:5]] + [[0.5, 0.5]]})
    assert _error(tmp_path, "ragged.parquet", ragged).startswith(
        "T/ragged.parquet: column 'probs' must hold equal-length lists of numbers (")


def test_non_finite_values_are_refused(tmp_path):
    frame = table("logits")
    frame.loc[4, "p1"] = np.nan
    assert _error(tmp_path, "nan.csv", frame) == "T/nan.csv: column 'p1' row 4 is nan; expected finite values"
    bad = values("logits").copy()
    bad[2, 0] = np.inf
    assert _error(tmp_path, "inf.npy", bad) == "T/inf.npy: class 0 row 2 is inf; expected finite values"


def test_rows_that_do_not_sum_to_one_are_refused(tmp_path):
    off = PROBS.copy()
    off[1] = [0.1, 0.1, 0.7]
    assert _error(tmp_path, "off.npy", off, kind="probs") == (
        "T/off.npy (read as probabilities): rows must sum to 1 (within 0.0078), row 1 sums to 0.9")
    assert _error(tmp_path, "logits.npy", values("logits"), kind="probs") == (
        "T/logits.npy (read as probabilities): contains negative values (first in row 0); expected probabilities"
        " in [0, 1] - logits? set teacher.outputs_kind=logits")
    assert _error(tmp_path, "lp.npy", np.log(off), kind="log_probs") == (
        "T/lp.npy (read as exp of log-probabilities): rows must sum to 1 (within 0.0078), row 1 sums to 0.9")


def test_values_whose_kind_is_unclear_are_refused_naming_the_key(tmp_path):
    off = PROBS.copy()
    off[1] = [0.1, 0.1, 0.7]
    assert _error(tmp_path, "p.npy", off) == (
        "T/p.npy: cannot tell what the values are: all are in [0, 1] but row 1 sums to 0.9, not 1 (within 0.0078),"
        " so they are neither probabilities nor clearly logits; set teacher.outputs_kind to probs, log_probs or"
        " logits")
    assert _error(tmp_path, "lp.npy", np.log(PROBS) - 1) == (
        "T/lp.npy: cannot tell what the values are: all are <= 0 but the exp of row 0 sums to 0.367879, not 1"
        " (within 0.0078), so they are neither log-probabilities nor clearly logits; set teacher.outputs_kind to"
        " probs, log_probs or logits")
    assert _error(tmp_path, "pct.npy", PROBS * 100) == (
        "T/pct.npy: cannot tell what the values are: all are >= 0 and row 0 has values above 1 (scores,"
        " percentages or counts are not probabilities, and logits take both signs); set teacher.outputs_kind to"
        " probs, log_probs or logits")
    # declared, the same values are read as logits
    outputs, _ = teacher_outputs(str(tmp_path / "lp.npy"), "logits", CLASSES, SPLIT_IDS)
    np.testing.assert_allclose(outputs.probs, PROBS, atol=1e-15)


def test_a_gs_uri_is_checked_by_syntax_only_when_compiling(no_gcp_credentials):
    base = default_config("tabular")
    load_config(type(base), None, ["teacher.outputs=gs://bucket/teacher/outputs.parquet"], base=base).validate(3)


def test_file_and_config_errors(tmp_path):
    with pytest.raises(ValueError, match=r"^nope.parquet: file not found$"):
        teacher_outputs("nope.parquet", "auto", CLASSES, SPLIT_IDS)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty.csv: is empty \(0 bytes\); expected data$"):
        teacher_outputs(str(empty), "auto", CLASSES, SPLIT_IDS)
    base = default_config("tabular")
    cases = {"teacher.outputs_kind=softmax": "teacher.outputs_kind: expected one of auto, probs, log_probs, logits,"
                                            " got 'softmax'",
             "teacher.outputs=out.json": "teacher.outputs: out.json: unsupported file type '.json'; expected one of"
                                         " .parquet, .pq, .csv, .npy",
             "teacher.outputs=gs:/b/o.csv": "teacher.outputs: malformed storage URI 'gs:/b/o.csv': expected gs:// (two"
                                            " slashes), e.g. gs://bucket/prefix; supported: local path, gs://",
             "teacher.outputs=gs://bkt/": "teacher.outputs: 'gs://bkt/' names no object; expected gs://bucket/path/to/file",
             "teacher.outputs=s3://b/o.csv": "teacher.outputs: unsupported URI 's3://b/o.csv': scheme 's3'; expected a"
                                             " local path or gs://bucket/object"}
    for override, message in cases.items():
        config = load_config(type(base), None, [override], base=base)
        with pytest.raises(ConfigError) as err:
            config.validate(3)
        assert str(err.value) == message


def test_align_without_the_file(tmp_path):
    """align() alone: row positions in file order for a shuffled id column."""
    frame = table("probs", id=[5, 4, 3, 2, 1, 0])
    outputs = read_outputs(write(tmp_path / "o.csv", frame), "o.csv", "auto", CLASSES)
    rows = align(outputs, SPLIT_IDS)
    assert {k: v.tolist() for k, v in rows.items()} == {"distill": [5, 1], "validation": [3], "test": [2, 0]}


# --------------------------------------------------------------------------- the component


def tabular_csv(path: Path, n: int = 60) -> Path:
    """A small two-class table (features a, b; label yes/no) for the tabular benchmark."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    frame = pd.DataFrame({"a": x[:, 0], "b": x[:, 1],
                          "label": np.where(x[:, 0] + 0.5 * rng.normal(size=n) > 0, "yes", "no")})
    frame.to_csv(path, index=False)
    return path


def teacher_logits(data: Path) -> np.ndarray:
    """A made-up teacher's logits on every row of ``data``: confident where feature ``a`` is."""
    a = pd.read_csv(data)["a"].to_numpy()
    return np.stack([-2 * a, 2 * a + 0.25], 1)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.slow
def test_the_component_writes_what_teacher_inference_would_and_caches_it(tmp_path):
    from components.import_teacher_outputs import import_teacher_outputs
    from components.prepare_data import prepare_data
    from ptdistill.families.mlp.split import FeatureSplit
    from ptdistill.steps.teacher import read_teacher_output_probs
    from ptdistill.tracking import Tracker

    data = tabular_csv(tmp_path / "data.csv")
    logits = teacher_logits(data)
    order = np.random.default_rng(1).permutation(len(logits))
    given = pd.DataFrame({"id": order, "no": logits[order, 0], "yes": logits[order, 1]})
    uri = write(tmp_path / "teacher.parquet", given)
    base = default_config("tabular", quick=True)
    config = load_config(type(base), None, [f"data.path={data}", f"teacher.outputs={uri}"], base=base)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"

    def artifact(cls, *parts):
        path = tmp_path.joinpath(*parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(name=parts[-1], uri=str(path))

    splits = {name: artifact(dsl.Dataset, "prepare", name) for name in ("teacher_train", "distill", "validation",
                                                                       "test")}
    run_info = artifact(dsl.Artifact, "prepare", "run_info")
    prepare_data.python_func(config=json.dumps(to_dict(config)), run_name="byo", tracking_uri=tracking,
                             artifact_store=str(tmp_path / "store"), run_info=run_info, **splits)

    def imported(folder: str, config_json: str) -> dict:
        outputs = {name: artifact(dsl.Dataset, folder, name) for name in ("distill_probs", "validation_probs",
                                                                          "test_probs")}
        outputs["teacher_report"] = artifact(dsl.Artifact, folder, "teacher_report")
        import_teacher_outputs.python_func(config=config_json, run_info=run_info, **splits, **outputs)
        return outputs

    first = imported("first", json.dumps(to_dict(config)))
    report = json.loads(Path(first["teacher_report"].path).read_text())
    for name in ("distill", "validation", "test"):
        split = FeatureSplit.load(splits[name].path)
        np.testing.assert_allclose(read_teacher_output_probs(first[f"{name}_probs"].path), softmax(logits[split.ids]),
                                   rtol=0, atol=1e-15)
        assert first[f"{name}_probs"].metadata == {"cache": "miss", "source": uri}
    test = FeatureSplit.load(splits["test"].path)
    accuracy = float((logits[test.ids].argmax(1) == test.labels).mean())
    assert report["splits"]["test"]["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert report["source"] | {"sha256": None} == {"uri": uri, "sha256": None, "kind": "logits", "detected": True,
                                                   "rows": 60, "classes": 2, "aligned_by": "id column"}
    assert report["training"] is None  # no teacher was trained in the run: the report names no checkpoint
    parent = Tracker(tracking).client.get_run(json.loads(Path(run_info.path).read_text())["parent_run_id"])
    assert parent.data.tags["teacher_outputs"] == uri
    assert parent.data.metrics["teacher_test_accuracy"] == pytest.approx(accuracy, abs=1e-12)

    second = imported("second", json.dumps(to_dict(config)))  # same file, same data: served from the cache
    assert second["test_probs"].metadata["cache"] == "hit"
    assert Path(second["test_probs"].path).read_bytes() == Path(first["test_probs"].path).read_bytes()

    cache = tmp_path / "store" / "cache" / "teacher"
    assert len(list(cache.glob("*.parquet"))) == 3  # one entry per split

    # a changed file (the same teacher at temperature 2) is a new cache entry
    given.assign(no=given["no"] / 2, yes=given["yes"] / 2).to_parquet(uri, index=False)
    changed = imported("changed", json.dumps(to_dict(config)))
    assert changed["test_probs"].metadata["cache"] == "miss" and len(list(cache.glob("*.parquet"))) == 6
    np.testing.assert_allclose(read_teacher_output_probs(changed["test_probs"].path), softmax(logits[test.ids] / 2),
                               atol=1e-15)

    # a bad one fails before anything is written: no output, no cache entry
    given.iloc[:3].to_parquet(uri, index=False)
    with pytest.raises(ValueError) as err:
        imported("bad", json.dumps(to_dict(config)))
    assert str(err.value).startswith(f"{uri}: ")
    assert " distill, validation and test examples have no row: " in str(err.value)
    assert not [p for p in (tmp_path / "bad").iterdir() if p.exists() and p.stat().st_size]
    assert len(list(cache.glob("*.parquet"))) == 6


# --------------------------------------------------------------------------- the DAG and a local run


def _ir_tasks(config, path: Path) -> set[str]:
    from pipelines.dag import compile_pipeline

    compile_pipeline(config, path)
    spec = yaml.safe_load(path.read_text())
    tasks = set(spec["root"]["dag"]["tasks"])
    for component in spec["components"].values():
        tasks |= set(component.get("dag", {}).get("tasks", {}))
    return tasks


def test_the_compiled_pipeline_has_no_teacher_tasks(tmp_path):
    base = default_config("tabular", quick=True)
    config = load_config(type(base), None, ["data.path=gs://b/data.csv", "teacher.outputs=gs://b/teacher.parquet",
                                            "inference_shards=3"], base=base)
    tasks = _ir_tasks(config, tmp_path / "byo.yaml")
    assert "import-teacher-outputs" in tasks
    assert not {t for t in tasks if t.startswith(("train-teacher", "teacher-inference", "merge-teacher"))}
    assert len([t for t in tasks if t.startswith("for-loop")]) == 1  # the students' loop, no shards' loop
    spec = yaml.safe_load((tmp_path / "byo.yaml").read_text())
    assert spec["root"]["dag"]["tasks"]["import-teacher-outputs"]["cachingOptions"] == {}  # KFP cache off
    usual = _ir_tasks(base, tmp_path / "usual.yaml")
    assert {"train-teacher", "teacher-inference"} <= usual and "import-teacher-outputs" not in usual


@pytest.mark.slow
def test_ptdistill_run_refuses_bad_outputs_before_starting(tmp_path):
    data = tabular_csv(tmp_path / "data.csv")
    bad = write(tmp_path / "teacher.csv", pd.DataFrame({"no": [0.5] * 59, "yes": [0.5] * 59}))
    result = _cli(tmp_path, data, bad)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"ptdistill run: error: {bad}: 1 of the 48 distill, validation and test examples have no row: test 1 of 12"
        " (id(s) [59]); expected a row for every one (rows are matched by row order (no 'id' column: row i is the"
        " example with id i))")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("outputs, message", [
    ("missing.parquet", "missing.parquet: file not found"),
    ("empty.csv", "empty.csv: is empty (0 bytes); expected data"),
])
def test_with_data_in_a_bucket_a_local_outputs_file_is_still_checked_before_starting(tmp_path, outputs, message):
    (tmp_path / "empty.csv").write_text("")
    result = _cli(tmp_path, "gs://ptdistill-data/table.csv", str(tmp_path / outputs))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"ptdistill run: error: {tmp_path}/{message}"
    assert not (tmp_path / "runs").exists()


def _cli(tmp_path: Path, data: Path | str, outputs: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "ptdistill", "run", "tabular", "--quick", "--set", f"data.path={data}",
                           "--set", f"teacher.outputs={outputs}", "--pipeline-root", str(tmp_path / "runs"),
                           "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--run-name", "byo"],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.pipeline
def test_ptdistill_run_trains_students_from_the_given_outputs_without_a_teacher(tmp_path):
    from ptdistill.families.mlp.split import FeatureSplit

    data = tabular_csv(tmp_path / "data.csv")
    logits = teacher_logits(data)
    given = write(tmp_path / "teacher.npy", logits)
    result = _cli(tmp_path, data, given)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    logs = tmp_path / "runs" / "logs" / "byo"
    tasks = sorted(p.stem.rsplit("-", 1)[0] if p.stem[-1].isdigit() else p.stem for p in logs.glob("*.log"))
    assert tasks == ["distill-student", "distill-student", "evaluate", "evaluate", "import-teacher-outputs",
                     "pipeline", "prepare-data", "proxy-search", "report"]
    # the artifact store defaults to the pipeline root
    search = json.loads((tmp_path / "runs" / "tabular" / "byo" / "search" / "result.json").read_text())
    split = FeatureSplit.load(next((tmp_path / "runs").glob("*/prepare-data/validation")))
    probs = softmax(logits[split.ids])
    assert search["teacher_accuracy"] == pytest.approx(float((probs.argmax(1) == split.labels).mean()), abs=1e-12)
    tvd = float(0.5 * np.abs(probs - np.eye(2)[split.labels]).sum(1).mean())
    assert search["teacher_tvd"] == pytest.approx(tvd, abs=1e-9)
    assert f"(from the given teacher outputs {given}, sha256 " in result.stdout


@pytest.mark.slow
def test_a_text_run_uses_the_outputs_and_never_the_teacher_model(tmp_path):
    """Own text data with the default T5-large teacher (never loaded, nor its prompt needed): the step
    writes the given probabilities for each split, aligned by the data file's row numbers."""
    from text_fixtures import tiny_bert

    from ptdistill.families.text.split import TextSplit
    from ptdistill.steps.data import prepare_data
    from ptdistill.steps.teacher import import_teacher_outputs, read_teacher_output_probs

    n = 40
    texts = pd.DataFrame({"text": [f"review number {i} {'good' if i % 2 else 'bad'}" for i in range(n)],
                          "label": ["pos" if i % 2 else "neg" for i in range(n)]})
    texts.to_csv(tmp_path / "texts.csv", index=False)
    probs = softmax(np.stack([np.linspace(-1, 1, n), np.linspace(1, -1, n)], 1))
    given = write(tmp_path / "teacher.csv", pd.DataFrame({"id": np.arange(n)[::-1], "neg": probs[::-1, 0],
                                                          "pos": probs[::-1, 1]}))
    base = default_config("text", quick=True)
    config = load_config(type(base), None, [f"data.path={tmp_path / 'texts.csv'}", "data.text_columns=[text]",
                                            f"student.model.name_or_path={tiny_bert(tmp_path / 'bert')}",
                                            f"teacher.outputs={given}"], base=base)
    config.validate(2)  # a generative teacher on own data would need a prompt: not with given outputs
    names = ("teacher_train", "distill", "validation", "test")
    splits = {name: tmp_path / "data" / name for name in names}
    (tmp_path / "data").mkdir()
    info = prepare_data(config, "text-byo", f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "store"), splits,
                        tmp_path / "run_info")
    outputs = {name: tmp_path / f"{name}.parquet" for name in names[1:]}
    report = import_teacher_outputs(config, info, splits, outputs)
    assert report["source"]["kind"] == "probs" and info.class_names == ["neg", "pos"]
    for name in names[1:]:
        split = TextSplit.load(splits[name])
        np.testing.assert_allclose(read_teacher_output_probs(outputs[name]), probs[split.ids], atol=1e-15)
