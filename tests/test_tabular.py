"""Tests of ptdistill.families.mlp.tabular: loading, its errors, splitting and standardization."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ptdistill.families.mlp.tabular import Standardizer, load_tabular, split_tabular, standardize
from ptdistill.splits import DEFAULT_FRACTIONS


def frame(n: int = 12, **overrides) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    data = {
        "a": rng.normal(size=n),
        "b": rng.integers(0, 5, n),
        "label": np.array(["dog", "cat", "emu"])[np.arange(n) % 3],
    }
    return pd.DataFrame({**data, **overrides})


def write(tmp_path, df: pd.DataFrame, name: str = "data.csv"):
    path = tmp_path / name
    if name.endswith(".csv"):
        df.to_csv(path, index=False)
    else:
        df.to_parquet(path, index=False)
    return path


def test_csv_with_string_labels(tmp_path):
    df = frame()
    features, labels, class_names = load_tabular(write(tmp_path, df))
    assert features.dtype == np.float32 and features.shape == (12, 2)
    np.testing.assert_allclose(features, df[["a", "b"]].to_numpy(), rtol=1e-6)
    assert labels.dtype == np.int64
    assert class_names == ["cat", "dog", "emu"]  # sorted
    np.testing.assert_array_equal(np.array(class_names)[labels], df["label"])


def test_parquet_with_integer_labels_sorted_numerically(tmp_path):
    df = frame(label=np.array([10, 2, 7])[np.arange(12) % 3], target=np.zeros(12))
    features, labels, class_names = load_tabular(
        write(tmp_path, df, "data.parquet"), label_column="label", feature_columns=["b", "a"]
    )
    assert class_names == ["2", "7", "10"]
    np.testing.assert_array_equal(labels, np.array([2, 0, 1])[np.arange(12) % 3])
    np.testing.assert_allclose(features, df[["b", "a"]].to_numpy(), rtol=1e-6)


def test_whole_float_labels_and_other_label_column(tmp_path):
    df = frame(y=np.arange(12) % 2 * 1.0).drop(columns="label")
    _, labels, class_names = load_tabular(write(tmp_path, df), label_column="y")
    assert class_names == ["0", "1"]
    np.testing.assert_array_equal(labels, np.arange(12) % 2)


@pytest.mark.parametrize(
    ("df", "kwargs", "match"),
    [
        (frame(), {"label_column": "target"}, r"no label column 'target'; columns are \['a', 'b', 'label'\]"),
        (frame(), {"feature_columns": ["a", "zz"]}, r"feature column\(s\) \['zz'\] not found"),
        (frame(), {"feature_columns": ["a", "label"]}, "feature_columns includes the label column 'label'"),
        (frame()[["label"]], {}, "no feature columns"),
        (frame(c=["x"] * 12), {}, "feature column 'c' has dtype (object|str)"),
        (frame(a=[0.0] * 5 + [np.nan] + [0.0] * 6), {}, r"feature column 'a' has a NaN or inf value \(first at row 5"),
        (frame(b=[1.0] * 11 + [np.inf]), {}, r"feature column 'b' has a NaN or inf value \(first at row 11"),
        (frame(label=["cat"] * 12), {}, r"single class \('cat'\)"),
        (frame(label=[0.5] * 6 + [1.0] * 6), {}, "label column 'label' holds non-integer numbers"),
        (frame(label=["a"] * 6 + [None] * 6), {}, r"label column 'label' is empty at row 6"),
        (frame(n=9), {}, "has 9 rows; expected at least 10"),
    ],
)
def test_load_errors_name_file_and_column(tmp_path, df, kwargs, match):
    path = write(tmp_path, df)
    with pytest.raises(ValueError, match=match) as info:
        load_tabular(path, **kwargs)
    assert str(path) in str(info.value)


def test_missing_file_and_unsupported_suffix(tmp_path):
    with pytest.raises(ValueError, match="nope.csv: file not found"):
        load_tabular(tmp_path / "nope.csv")
    (tmp_path / "data.txt").write_text("a,label\n1,2\n")
    with pytest.raises(ValueError, match=r"data.txt: unsupported file type '.txt'; expected one of .csv, .parquet"):
        load_tabular(tmp_path / "data.txt")


def test_split_sizes_ids_and_unlabeled_distill():
    features = np.arange(203 * 2, dtype=np.float32).reshape(203, 2)
    labels = np.arange(203) % 3
    splits = split_tabular(features, labels, seed=0)
    assert list(splits) == list(DEFAULT_FRACTIONS)
    sizes = {name: len(split) for name, split in splits.items()}
    assert sizes == {"teacher_train": 41, "distill": 101, "validation": 20, "test": 41}  # sums to 203
    ids = np.concatenate([split.ids for split in splits.values()])
    np.testing.assert_array_equal(np.sort(ids), np.arange(203))  # disjoint and complete
    for name, split in splits.items():
        np.testing.assert_array_equal(split.features, features[split.ids])
        assert np.all(np.diff(split.ids) > 0)  # input order within a split
        if name == "distill":
            assert split.labels is None
        else:
            np.testing.assert_array_equal(split.labels, labels[split.ids])


def test_split_is_deterministic_in_the_seed():
    features, labels = np.random.default_rng(1).normal(size=(50, 3)), np.arange(50) % 2
    first, again, other = (split_tabular(features, labels, seed=s) for s in (0, 0, 1))
    for name in first:
        assert first[name].fingerprint() == again[name].fingerprint()
    assert any(first[name].fingerprint() != other[name].fingerprint() for name in first)


@pytest.mark.parametrize(
    ("fractions", "n", "match"),
    [
        (
            {"teacher_train": 0.2, "distill": 0.5, "validation": 0.1, "test": 0.2},
            4,
            r"split\(s\) 'validation' \(fraction 0.1\) would be empty with n=4 rows",
        ),
        ({"teacher_train": 0.5, "distill": 0.6}, 20, "summing to 1, got 1.1"),
        ({"train": 0.5, "distill": 0.5}, 20, r"unknown or no split names \['train'\]"),
        ({}, 20, "unknown or no split names"),
        ({"teacher_train": 0.0, "distill": 1.0}, 20, r"fractions\['teacher_train'\]: expected a number in \(0, 1\]"),
    ],
)
def test_split_errors(fractions, n, match):
    with pytest.raises(ValueError, match=match):
        split_tabular(np.zeros((n, 2)), np.arange(n) % 2, fractions)


def test_split_rejects_mismatched_labels():
    with pytest.raises(ValueError, match=r"labels: expected shape \(10,\)"):
        split_tabular(np.zeros((10, 2)), np.zeros(9, dtype=int))


def test_standardize_fits_on_teacher_train_only():
    rng = np.random.default_rng(0)
    features = rng.normal(loc=[5.0, -3.0, 0.0], scale=[2.0, 0.5, 1.0], size=(400, 3))
    features[:, 2] = 7.0  # a constant feature is only centred
    splits = split_tabular(features, np.arange(400) % 2, seed=0)
    scaled, scaler = standardize(splits)
    train = scaled["teacher_train"].features
    np.testing.assert_allclose(train[:, :2].mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train[:, :2].std(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(train[:, 2], 0.0)
    raw_train = splits["teacher_train"].features.astype(np.float64)
    for name, split in scaled.items():
        expected = (splits[name].features - raw_train.mean(0)) / np.where(raw_train.std(0) > 0, raw_train.std(0), 1)
        np.testing.assert_allclose(split.features, expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(split.ids, splits[name].ids)
        assert (split.labels is None) == (splits[name].labels is None)
    assert abs(scaled["test"].features[:, 0].mean()) > 0  # the test split's own statistics were not used
    back = Standardizer.from_dict(json.loads(json.dumps(scaler.to_dict())))
    np.testing.assert_array_equal(back.transform(features), scaler.transform(features))
    with pytest.raises(ValueError, match="features: expected 3 columns as fitted"):
        scaler.transform(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="fit_split: 'train' is not among the splits"):
        standardize(splits, fit_split="train")


# --------------------------------------------------------------------------- stratified splits


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("counts", [(68, 68, 67), (150, 30, 7), (12, 5)])
def test_split_is_stratified_within_one_row_per_class(counts, seed):
    labels = np.repeat(np.arange(len(counts)), counts)
    labels = labels[np.random.default_rng(9).permutation(len(labels))]
    n = len(labels)
    splits = split_tabular(np.zeros((n, 1)), labels, seed=seed)
    ids = np.concatenate([split.ids for split in splits.values()])
    np.testing.assert_array_equal(np.sort(ids), np.arange(n))
    for name, split in splits.items():
        got = np.bincount(labels[split.ids], minlength=len(counts))  # distill too: its draw is stratified
        expected = np.array(counts) * len(split) / n
        assert np.all(np.abs(got - expected) < 1), (name, got, expected)


def test_twelve_rows_put_every_class_in_every_labeled_split(caplog):
    labels = np.arange(12) % 3  # random draws gave a one-row, one-class validation split here
    with caplog.at_level("WARNING", logger="ptdistill.families.mlp.tabular"):
        splits = split_tabular(np.zeros((12, 1)), labels, seed=0, class_names=["cat", "dog", "emu"])
    for name in ("teacher_train", "validation", "test"):
        assert sorted(set(splits[name].labels)) == [0, 1, 2], name
    assert sum(len(s) for s in splits.values()) == 12
    (warning,) = [r.getMessage() for r in caplog.records]
    assert "fewer than 5 rows of a class in a labeled split" in warning
    assert "class 'emu' (4 rows): teacher_train 1, distill 1, validation 1, test 1" in warning
    assert "validation 1 -> 3" in warning  # the split grew so every class is in it


def test_a_class_too_small_for_every_labeled_split_is_refused():
    labels = np.array([0] * 10 + [1] * 10 + [2])
    with pytest.raises(ValueError, match=r"labels: class 'emu' has 1 row; each of the 3 labeled splits \(teacher_train,"
                                         r" validation, test\) needs at least one row of every class, so every class"
                                         r" needs at least 3 rows"):
        split_tabular(np.zeros((21, 1)), labels, class_names=["cat", "dog", "emu"])
    with pytest.raises(ValueError, match=r"class 7 has 2 rows"):
        split_tabular(np.zeros((22, 1)), np.array([0] * 20 + [7] * 2))


def test_build_splits_names_the_file_and_the_class(tmp_path):
    from ptdistill.experiments import TabularConfig
    from ptdistill.steps.data import build_splits

    path = write(tmp_path, frame(n=13, label=["a", "b"] * 6 + ["rare"]))
    config = TabularConfig.quick()
    config.data.path = str(path)
    with pytest.raises(ValueError, match=rf"^{path}: labels: class 'rare' has 1 row;"):
        build_splits(config)


def test_single_class_is_shown_as_written(tmp_path):
    with pytest.raises(ValueError, match=r"has a single class \(0\); expected at least 2"):
        load_tabular(write(tmp_path, frame(label=[0] * 12)))


def test_allocation_is_a_controlled_rounding():
    """Random class counts and split sizes: each cell is its exact share rounded down or up (never an
    exact whole share moved), rows add up to the class counts and columns to the split sizes."""
    from ptdistill.splits import _allocate

    rng = np.random.default_rng(0)
    for _ in range(300):
        class_counts = rng.integers(20, 80, rng.integers(2, 7))
        n = class_counts.sum()
        sizes = np.floor(rng.dirichlet(np.ones(4) * 3) * n).astype(int) + 1
        sizes[1] += n - sizes.sum()
        exact = np.outer(class_counts, sizes) / n
        if sizes[1] < 1 or (np.floor(exact[:, [0, 2, 3]]) < 1).any():
            continue  # the every-class minimum would move rows; tested above
        counts = _allocate(class_counts, sizes, [0, 2, 3], list("abcdef"), list(DEFAULT_FRACTIONS))
        np.testing.assert_array_equal(counts.sum(1), class_counts)
        np.testing.assert_array_equal(counts.sum(0), sizes)
        assert np.all(np.abs(counts - exact) < 1)
