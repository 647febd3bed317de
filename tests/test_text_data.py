"""Text task loading, the paper's split protocol, own text files and the Rotten Tomatoes snippets.

Hub data cannot be fetched here, so the fixtures are tiny parquet files written in the hub
repository layout (``<source>/<subset>/<split>-00000-of-00001.parquet``) with the hub's
columns and ``ClassLabel`` metadata (nyu-mll/glue: sentence / premise, hypothesis / label /
idx; aps/super_glue boolq: question / passage / idx / label).
"""

from __future__ import annotations

import json
import socket
from collections import Counter

import datasets
import numpy as np
import pandas as pd
import pytest
from text_fixtures import write_hub_split

from ptdistill.families.text.data import (
    TEXT_TASKS,
    load_rotten_tomatoes,
    load_task,
    load_text_file,
    protocol_split,
    rotten_tomatoes_path,
    rotten_tomatoes_splits,
    split_fractions,
)
from ptdistill.families.text.split import TextSplit

SIZES = {"teacher_train": 20, "distill": 30, "validation": 10, "test": 8}


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """Keep the ``datasets`` arrow cache out of the user's home directory."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture
def no_network(monkeypatch):
    """Fail any attempt to open a network connection."""

    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _sst2(root, n_train=100, n_test=12, test_labels=None):
    names = list(TEXT_TASKS["sst2"].class_names)
    write_hub_split(root, "sst2", "train", {"sentence": [f"train {i}" for i in range(n_train)],
                                    "label": [i % 2 for i in range(n_train)]}, names)
    labels = test_labels if test_labels is not None else [i % 2 for i in range(n_test)]
    write_hub_split(root, "sst2", "validation", {"sentence": [f"test {i}" for i in range(len(labels))], "label": labels}, names)
    return root


@pytest.fixture
def sst2_source(tmp_path):
    return _sst2(tmp_path / "glue")


def _split(n: int, pair: bool = False) -> TextSplit:
    return TextSplit(
        text_a=[f"a{i}" for i in range(n)],
        text_b=[f"b{i}" for i in range(n)] if pair else None,
        labels=np.arange(n) % 3,
        ids=np.arange(n) + 1000,
    )


# ----------------------------------------------------------------------------- registry


def test_registry_covers_the_paper_tasks():
    assert set(TEXT_TASKS) == {"cola", "mnli", "mrpc", "rte", "sst2", "boolq", "rotten-tomatoes"}
    for name, info in TEXT_TASKS.items():
        assert info.name == name
        assert len(info.label_words) == len(info.class_names) == info.num_classes
        assert set(info.sizes) == {"teacher_train", "distill", "validation", "test"}
        assert ("{text_b}" in info.prompt) == (len(info.text_columns) == 2)
        assert info.prompt.format(text_a="A", text_b="B")
    assert TEXT_TASKS["rte"].class_names == ("entailment", "not_entailment")
    assert TEXT_TASKS["mnli"].test_split == "validation_matched"
    assert TEXT_TASKS["boolq"].dataset == "aps/super_glue"
    assert {k: v.task_metric for k, v in TEXT_TASKS.items() if v.task_metric != "accuracy"} == {
        "cola": "matthews",
        "mrpc": "f1",
    }
    assert dict(TEXT_TASKS["mnli"].sizes) == {"teacher_train": 58900, "distill": 314000, "validation": 19600,
                                              "test": 9800}


# ----------------------------------------------------------------------------- load_task


def test_load_task_single_sentence_from_local_hub_copy(sst2_source, no_network):
    train, test = load_task("sst2", source=sst2_source)
    assert len(train) == 100 and len(test) == 12
    assert train.text_b is None and train.text_a[:2] == ["train 0", "train 1"]
    assert test.text_a[3] == "test 3"  # the test split is the official validation split
    np.testing.assert_array_equal(train.ids, np.arange(100))
    np.testing.assert_array_equal(test.labels, np.arange(12) % 2)


def test_load_task_pairs_mnli_and_boolq(tmp_path, no_network):
    glue, superglue = tmp_path / "glue", tmp_path / "super_glue"
    mnli = list(TEXT_TASKS["mnli"].class_names)
    for split, n in (("train", 9), ("validation_matched", 6)):
        write_hub_split(glue, "mnli", split, {"premise": [f"p{i}" for i in range(n)], "hypothesis": [f"h{i}" for i in range(n)],
                                      "label": [i % 3 for i in range(n)]}, mnli)
    write_hub_split(glue, "mnli", "validation_mismatched", {"premise": ["x"], "hypothesis": ["y"], "label": [0]}, mnli)
    train, test = load_task("mnli", source=glue)
    assert (len(train), len(test)) == (9, 6)
    assert test.text_a[1] == "p1" and test.text_b[1] == "h1"
    np.testing.assert_array_equal(train.labels, np.arange(9) % 3)

    names = list(TEXT_TASKS["boolq"].class_names)
    for split, n in (("train", 5), ("validation", 4)):  # super_glue column order: question, passage, idx, label
        write_hub_split(superglue, "boolq", split, {"question": [f"q{i}?" for i in range(n)],
                                           "passage": [f"passage {i}" for i in range(n)],
                                           "label": [i % 2 for i in range(n)]}, names)
    train, test = load_task("boolq", source=superglue)
    assert train.text_a[2] == "passage 2" and train.text_b[2] == "q2?"
    prompt = TEXT_TASKS["boolq"].prompt.format(text_a=train.text_a[2], text_b=train.text_b[2])
    assert prompt == "boolq passage: passage 2 question: q2?"


def test_load_task_hub_path_calls_load_dataset(monkeypatch, sst2_source):
    local = datasets.load_dataset("parquet", data_files={
        s: str(sst2_source / "sst2" / f"{s}-00000-of-00001.parquet") for s in ("train", "validation")})
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return local

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    train, test = load_task("sst2", revision="abc123")
    assert calls == [(("nyu-mll/glue", "sst2"), {"revision": "abc123"})]
    assert (len(train), len(test)) == (100, 12)


def test_load_task_errors(tmp_path, sst2_source):
    with pytest.raises(ValueError, match="unknown task 'qqp'.*cola, mnli"):
        load_task("qqp", source=sst2_source)
    with pytest.raises(ValueError, match=r"mrpc/train-00000-of-00001\.parquet: file not found"):
        load_task("mrpc", source=sst2_source)
    (sst2_source / "sst2" / "validation-00000-of-00001.parquet").unlink()
    with pytest.raises(ValueError, match=r"sst2/validation-00000-of-00001\.parquet: file not found"):
        load_task("sst2", source=sst2_source)
    with pytest.raises(ValueError, match="revision"):
        load_task("sst2", source=sst2_source, revision="main")
    (sst2_source / "sst2" / "train-00000-of-00001.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match=r"train-00000-of-00001\.parquet: not a readable parquet file"):
        load_task("sst2", source=sst2_source)
    with pytest.raises(ValueError, match="rotten_tomatoes_splits"):
        load_task("rotten-tomatoes", source=sst2_source)


def test_load_task_rejects_unlabeled_and_out_of_range_labels(tmp_path):
    with pytest.raises(ValueError, match=r"validation.*row 2 is -1 \(-1 marks an unlabeled row"):
        load_task("sst2", source=_sst2(tmp_path / "a", test_labels=[0, 1, -1, -1]))
    names = ["negative", "positive"]
    root = _sst2(tmp_path / "b")
    write_hub_split(root, "sst2", "validation", {"sentence": ["x", "y"], "label": [0, 1]}, names)
    pd.DataFrame({"sentence": ["x", "y", "z"], "label": [0, 1, 2], "idx": [0, 1, 2]}).to_parquet(
        root / "sst2" / "train-00000-of-00001.parquet")
    with pytest.raises(ValueError, match=r"train-00000-of-00001\.parquet.*'label' at row 2 is 2; expected a class "
                                         r"index in \[0, 2\)"):
        load_task("sst2", source=root)
    pd.DataFrame({"sentence": ["x", "y", "z"], "label": [0, None, 1]}).to_parquet(
        root / "sst2" / "train-00000-of-00001.parquet")
    with pytest.raises(ValueError, match=r"train-00000-of-00001\.parquet.*'label' at row 1 is empty"):
        load_task("sst2", source=root)


def test_load_task_rejects_missing_column_empty_split_and_wrong_class_names(tmp_path):
    root = _sst2(tmp_path / "a")
    pd.DataFrame({"text": ["x"], "label": [0]}).to_parquet(root / "sst2" / "validation-00000-of-00001.parquet")
    with pytest.raises(ValueError, match=r"validation.*no column 'sentence'.*found \['text', 'label'\]"):
        load_task("sst2", source=root)

    root = _sst2(tmp_path / "b")
    write_hub_split(root, "sst2", "validation", {"sentence": [], "label": []}, ["negative", "positive"])
    with pytest.raises(ValueError, match="validation.*the split is empty"):
        load_task("sst2", source=root)

    root = _sst2(tmp_path / "c")
    write_hub_split(root, "sst2", "train", {"sentence": ["x", "y"], "label": [0, 1]}, ["positive", "negative"])
    with pytest.raises(ValueError, match=r"names \['positive', 'negative'\]; expected \['negative', 'positive'\]"):
        load_task("sst2", source=root)


# ----------------------------------------------------------------------------- protocol_split


def test_protocol_split_sizes_disjointness_and_labels():
    train, test = _split(100, pair=True), _split(40)
    splits, report = protocol_split(train, test, SIZES, seed=0)
    assert {k: len(v) for k, v in splits.items()} == SIZES
    assert report["sizes"] == SIZES and report["distill_reused_from_teacher_train"] == 0
    assert report["train_unused"] == 40 and report["test_subsampled"] is True
    json.dumps(report)
    ids = {name: set(split.ids.tolist()) for name, split in splits.items()}
    assert not ids["teacher_train"] & ids["validation"]
    assert not ids["distill"] & (ids["teacher_train"] | ids["validation"])
    assert splits["distill"].labels is None
    assert splits["teacher_train"].labels is not None and splits["validation"].labels is not None
    assert ids["test"] <= set(test.ids.tolist())  # test comes from the official test split only
    for split in splits.values():
        assert list(split.ids) == sorted(split.ids)
        assert split.is_pair == (split is not splits["test"])
    row = {int(i): k for k, i in enumerate(train.ids)}
    assert all(splits["validation"].text_a[j] == train.text_a[row[i]] for j, i in enumerate(splits["validation"].ids))


def test_protocol_split_reuses_teacher_train_for_a_large_distill_set():
    train, test = _split(50), _split(5)
    sizes = {**SIZES, "distill": 35}  # 50 - 30 = 20 left, so 15 are reused
    splits, report = protocol_split(train, test, sizes, seed=3)
    assert report["distill_reused_from_teacher_train"] == 15 and report["train_unused"] == 0
    assert len(splits["distill"]) == 35 and len(set(splits["distill"].ids)) == 35
    reused = set(splits["distill"].ids) & set(splits["teacher_train"].ids)
    assert len(reused) == 15 and not set(splits["distill"].ids) & set(splits["validation"].ids)
    assert len(splits["test"]) == 5 and report["test_subsampled"] is False  # smaller test split kept whole
    with pytest.raises(ValueError, match="distill 41 needs 21 .* expected distill <= 40"):
        protocol_split(train, test, {**SIZES, "distill": 41}, seed=3)


def test_protocol_split_is_deterministic():
    train, test = _split(100), _split(40)

    def prints(seed):
        splits, _ = protocol_split(train, test, SIZES, seed=seed)
        return {name: split.fingerprint() for name, split in splits.items()}

    assert prints(1) == prints(1)
    other = prints(2)
    assert all(other[name] != prints(1)[name] for name in SIZES)


def test_protocol_split_errors():
    train, test = _split(100), _split(40)
    with pytest.raises(ValueError, match=r"validation 60 \+ teacher_train 50 = 110 exceed the 100 examples"):
        protocol_split(train, test, {**SIZES, "validation": 60, "teacher_train": 50}, seed=0)
    with pytest.raises(ValueError, match="expected exactly the keys"):
        protocol_split(train, test, {"teacher_train": 1, "distill": 1, "validation": 1}, seed=0)
    for bad in (0, 2.5, True, "3"):
        with pytest.raises(ValueError, match=r"sizes\['distill'\]: expected an integer >= 1"):
            protocol_split(train, test, {**SIZES, "distill": bad}, seed=0)
    with pytest.raises(ValueError, match="test: expected a labeled split"):
        protocol_split(train, test.take(range(5), drop_labels=True), SIZES, seed=0)


# ----------------------------------------------------------------------------- own files


def _frame(n=12):
    return pd.DataFrame({
        "premise": [f"premise number {i}" for i in range(n)],
        "hypothesis": [f"hypothesis {i}" for i in range(n)],
        "label": ["neg", "pos", "neutral"] * (n // 3),
    })


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_load_text_file_formats_with_pairs(tmp_path, suffix):
    frame, path = _frame(), tmp_path / f"data{suffix}"
    {".csv": lambda: frame.to_csv(path, index=False), ".parquet": lambda: frame.to_parquet(path),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[suffix]()
    split, names = load_text_file(path, ["premise", "hypothesis"])
    assert names == ["neg", "neutral", "pos"]
    assert split.text_a[4] == "premise number 4" and split.text_b[4] == "hypothesis 4"
    np.testing.assert_array_equal(split.labels[:3], [0, 2, 1])
    np.testing.assert_array_equal(split.ids, np.arange(12))

    single, names = load_text_file(path, ["premise"], class_names=["pos", "neg", "neutral", "other"])
    assert single.text_b is None and names == ["pos", "neg", "neutral", "other"]
    np.testing.assert_array_equal(single.labels[:3], [1, 0, 2])


def test_load_text_file_labels(tmp_path):
    path = tmp_path / "ints.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(12)], "label": [10, 2] * 6}).to_csv(path, index=False)
    split, names = load_text_file(path, ["text"])
    assert names == ["2", "10"]  # sorted numerically
    np.testing.assert_array_equal(split.labels[:2], [1, 0])
    split, names = load_text_file(path, ["text"], class_names=["10", "2"])
    np.testing.assert_array_equal(split.labels[:2], [0, 1])
    with pytest.raises(ValueError, match=r"row 1 \(0-based\) is 2; expected one of the class names \['10', '5'\]"):
        load_text_file(path, ["text"], class_names=["10", "5"])

    path = tmp_path / "bool.jsonl"
    pd.DataFrame({"text": [f"t{i}" for i in range(12)], "label": [True, False] * 6}).to_json(
        path, orient="records", lines=True)
    split, names = load_text_file(path, ["text"], class_names=TEXT_TASKS["boolq"].class_names)
    np.testing.assert_array_equal(split.labels[:2], [1, 0])

    path = tmp_path / "na.csv"  # a text "NA" is a text, not a missing value
    pd.DataFrame({"text": ["NA"] + [f"t{i}" for i in range(11)], "label": ["a", "b"] * 6}).to_csv(path, index=False)
    assert load_text_file(path, ["text"])[0].text_a[0] == "NA"


def test_load_text_file_errors(tmp_path):
    with pytest.raises(ValueError, match="file not found"):
        load_text_file(tmp_path / "nope.csv", ["text"])
    (tmp_path / "data.txt").write_text("x")
    with pytest.raises(ValueError, match=r"unsupported file type '\.txt'; expected one of \.csv"):
        load_text_file(tmp_path / "data.txt", ["text"])

    def write(name, **changes):
        frame = _frame()
        for column, (row, value) in changes.items():
            frame[column] = frame[column].astype(object)
            frame.loc[row, column] = value
        frame.to_csv(tmp_path / name, index=False)
        return tmp_path / name

    path = write("ok.csv")
    with pytest.raises(ValueError, match=r"no text column 'sentence'; columns are \['premise', 'hypothesis', 'label"):
        load_text_file(path, ["sentence"])
    with pytest.raises(ValueError, match="no label column 'y'"):
        load_text_file(path, ["premise"], label_column="y")
    with pytest.raises(ValueError, match="one or two column names"):
        load_text_file(path, ["premise", "hypothesis", "label"])
    with pytest.raises(ValueError, match=r"text column 'hypothesis' at row 5 \(0-based\) is empty"):
        load_text_file(write("empty.csv", hypothesis=(5, None)), ["premise", "hypothesis"])
    with pytest.raises(ValueError, match=r"text column 'premise' at row 3 \(0-based\) is empty"):
        load_text_file(write("blank.csv", premise=(3, "   ")), ["premise"])
    with pytest.raises(ValueError, match=r"label column 'label' is empty at row 7"):
        load_text_file(write("nolabel.csv", label=(7, None)), ["premise"])
    with pytest.raises(ValueError, match=r"at row 2 \(0-based\) is 'neutral'; expected one of the class names"):
        load_text_file(path, ["premise"], class_names=["neg", "pos"])
    pd.DataFrame({"text": [f"t{i}" for i in range(9)], "label": [0, 1, 1] * 3}).to_csv(tmp_path / "few.csv", index=False)
    with pytest.raises(ValueError, match="has 9 rows; expected at least 10"):
        load_text_file(tmp_path / "few.csv", ["text"])
    pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": ["a"] * 10}).to_parquet(tmp_path / "one.parquet")
    with pytest.raises(ValueError, match="single class"):
        load_text_file(tmp_path / "one.parquet", ["text"])
    pd.DataFrame({"text": [f"t{i}" for i in range(9)] + [3], "label": [0, 1] * 5}).to_json(
        tmp_path / "num.jsonl", orient="records", lines=True)
    with pytest.raises(ValueError, match=r"text column 'text' at row 9 \(0-based\) is int 3"):
        load_text_file(tmp_path / "num.jsonl", ["text"])


def test_split_fractions():
    split = _split(103, pair=True)
    fractions = {"teacher_train": 0.2, "distill": 0.5, "validation": 0.1, "test": 0.2}
    parts = split_fractions(split, fractions, seed=0)
    assert sum(len(p) for p in parts.values()) == 103
    assert sorted(np.concatenate([p.ids for p in parts.values()])) == list(split.ids)
    assert parts["distill"].labels is None and parts["test"].labels is not None and parts["test"].is_pair
    again = split_fractions(split, fractions, seed=0)
    assert all(parts[k].fingerprint() == again[k].fingerprint() for k in parts)
    with pytest.raises(ValueError, match="would be empty with n=12 rows"):
        split_fractions(_split(12), {"teacher_train": 0.5, "distill": 0.45, "validation": 0.04, "test": 0.01})
    with pytest.raises(ValueError, match="expected exactly the keys"):
        split_fractions(split, {"teacher_train": 0.5, "distill": 0.5})


def test_split_fractions_is_stratified_and_names_a_missing_class(tmp_path):
    parts = split_fractions(_split(103), seed=0)
    for name, part in parts.items():
        got = np.bincount((part.ids - 1000) % 3, minlength=3)
        assert np.all(np.abs(got - len(part) / 3) < 1), (name, got)
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(11)], "label": ["rotten"] * 10 + ["fresh"]}).to_csv(path, index=False)
    split, names = load_text_file(path, ["text"])
    with pytest.raises(ValueError, match="class 'fresh' has 1 row; each of the 3 labeled splits"):
        split_fractions(split, seed=0, class_names=names)
    pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": ["fresh"] * 10}).to_csv(path, index=False)
    with pytest.raises(ValueError, match=r"single class \('fresh'\)"):
        load_text_file(path, ["text"])


# ----------------------------------------------------------------------------- Rotten Tomatoes


@pytest.fixture(scope="module")
def rotten():
    return load_rotten_tomatoes()


@pytest.mark.slow
def test_rotten_tomatoes_corpus(rotten):
    assert 12_500 <= len(rotten) <= 12_900
    assert rotten.text_b is None and set(np.unique(rotten.labels)) == {0, 1}
    assert 0.55 <= rotten.labels.mean() <= 0.61  # fresh share
    assert max(Counter(rotten.text_a).values()) == 1
    assert all(text == text.strip() and text for text in rotten.text_a)
    raw = pd.read_csv(rotten_tomatoes_path(), dtype=str, keep_default_na=False)
    categories = raw["category"].to_numpy()[rotten.ids]
    assert "plot" not in set(categories)
    np.testing.assert_array_equal(categories == "fresh", rotten.labels == 1)


@pytest.mark.slow
def test_rotten_tomatoes_splits(rotten):
    sizes = {"teacher_train": 500, "distill": 1500, "validation": 300, "test": 700}
    splits, report = rotten_tomatoes_splits(sizes, seed=4)
    assert {k: len(v) for k, v in splits.items()} == sizes == report["sizes"]
    assert report["unused"] == len(rotten) - 3000 and report["dropped"]["plot_rows"] > 1000
    json.dumps(report)
    ids = [set(s.ids.tolist()) for s in splits.values()]
    assert sum(map(len, ids)) == len(set().union(*ids))
    assert splits["distill"].labels is None
    again, _ = rotten_tomatoes_splits(sizes, seed=4)
    other, _ = rotten_tomatoes_splits(sizes, seed=5)
    assert all(splits[k].fingerprint() == again[k].fingerprint() != other[k].fingerprint() for k in sizes)
    with pytest.raises(ValueError, match="more than the 12752 Rotten Tomatoes snippets"):
        rotten_tomatoes_splits({**sizes, "distill": 12000}, seed=0)


@pytest.mark.parametrize(("text_columns", "label_column"), [(["text", "text"], "label"), (["text", "label"], "label")])
def test_repeated_text_columns_or_the_label_as_text_are_rejected_before_reading(tmp_path, text_columns, label_column):
    path = tmp_path / "never-read.csv"  # the columns are checked first: the file need not exist
    with pytest.raises(ValueError) as info:
        load_text_file(path, text_columns, label_column)
    assert str(info.value) == (f"text_columns: expected distinct columns other than the label column 'label', got"
                               f" {text_columns} (a repeated column gives the model the same text twice; the label as"
                               " text gives it the answer)")
