"""Reading user files (every reader, by kind of fault), teacher probabilities in reduced precision,
and the mode of the files the atomic writers create."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ptdistill.checks import MAX_TEXT_TOL, ROW_SUM_TOL, check_probs, normalize_probs, row_sum_tolerance, user_tolerance
from ptdistill.families.mlp.models import MLP, MLPConfig
from ptdistill.families.mlp.split import FeatureSplit
from ptdistill.families.mlp.tabular import load_tabular
from ptdistill.families.text.data import load_text_file
from ptdistill.families.text.split import TextSplit
from ptdistill.io import (
    TMP_PREFIX,
    load_labels,
    load_teacher_probs,
    read_text,
    write_atomic,
    write_json_atomic,
    write_parquet_atomic,
)
from ptdistill.storage import open_store

N = 12


def _table(columns: list[str]) -> list[list[object]]:
    """Rows for ``columns``: numbers, with a text column ``t`` and two classes in ``y``."""
    rows = []
    for i in range(N):
        row = []
        for column in columns:
            row.append(f"text {i}" if column == "t" else i % 2 if column == "y" else 0.25 + i)
        rows.append(row)
    return rows


def _write_csv(path, columns: list[str]) -> None:
    lines = [",".join(columns)] + [",".join(map(str, row)) for row in _table(columns)]
    path.write_text("\n".join(lines) + "\n")


# Every reader of user data, called on ``path`` (columns: a, a or t, b, y).
READERS = {
    "tabular": lambda path: load_tabular(path, label_column="y"),
    "text": lambda path: load_text_file(path, ["t"], label_column="y"),
    "teacher_probs": lambda path: load_teacher_probs(path, labels_column="y"),
    "labels": lambda path: load_labels(path, "y"),
}


@pytest.mark.parametrize(("reader", "suffix"), [(r, s) for r in READERS for s in (".csv", ".parquet")]
                         + [("text", ".jsonl")])
def test_duplicate_column_names_are_rejected(tmp_path, reader, suffix):
    columns = ["a", "a", "t" if reader == "text" else "b", "y"]
    path = tmp_path / f"dup{suffix}"
    if suffix == ".csv":
        _write_csv(path, columns)
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = _table(columns)
        arrays = [pa.array([row[j] for row in rows]) for j in range(len(columns))]
        pq.write_table(pa.Table.from_arrays(arrays, names=columns), path)
    else:
        rows = _table(columns)
        path.write_text("".join('{"a": 1, "a": 2, "t": "%s", "y": %d}\n' % (row[2], row[3]) for row in rows))
    with pytest.raises(ValueError, match=r"duplicate (column name\(s\) 'a', 'a'|key\(s\) \['a'\])") as info:
        READERS[reader](path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("header", ["a, a", "a,a ", "a,A", "y,y ", "y,Y"])
def test_column_names_equal_but_for_spaces_or_case_are_rejected(tmp_path, reader, header):
    first, second = header.split(",")
    columns = [first, second, "t", "y"] if first != "y" else ["t", first, second]
    path = tmp_path / "near.csv"
    rows = [["1", "2", "x", "0"], ["3", "4", "z", "1"]] if first != "y" else [["x", "0", "0"], ["z", "1", "1"]]
    path.write_text("\n".join([",".join(columns)] + [",".join(row) for row in rows]) + "\n")
    with pytest.raises(ValueError) as info:
        READERS[reader](path)
    assert str(info.value) == (f"{path}: duplicate column name(s) {first!r}, {second!r}; expected each column name once"
                               " (names differing only in case or surrounding spaces count as the same)")


@pytest.mark.parametrize("reader", READERS)
def test_an_unnamed_index_column_from_to_csv_is_rejected(tmp_path, reader):
    path = tmp_path / "indexed.csv"
    pd.DataFrame({"a": [0.5, 0.25], "t": ["x", "z"], "y": [0, 1]}).to_csv(path)  # no index=False
    assert pd.read_csv(path).columns[0] == "Unnamed: 0"
    with pytest.raises(ValueError) as info:
        READERS[reader](path)
    assert str(info.value) == (f"{path}: column 1 has an empty header (pandas names it 'Unnamed: 0'); this is"
                               " usually the index written by DataFrame.to_csv() - write the file with index=False,"
                               " or give the column a name")


@pytest.mark.parametrize(("reader", "suffix"), [(r, s) for r in (*READERS, "split") for s in (".csv", ".parquet")]
                         + [("text", ".jsonl"), ("teacher_probs", ".npy"), ("labels", ".npy")])
def test_empty_file_and_directory_are_named(tmp_path, reader, suffix):
    """Every reader of user files, and the reader of the pipeline's own split files."""
    read = FeatureSplit.load if reader == "split" else READERS[reader]
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.\w+: is empty \(0 bytes\)"):
        read(empty)
    folder = tmp_path / f"folder{suffix}"
    folder.mkdir()
    with pytest.raises(ValueError, match=rf"folder\{suffix}: is a directory; expected a file"):
        read(folder)


@pytest.mark.parametrize("reader", ["tabular", "text", "teacher_probs", "labels"])
def test_blank_csv_names_the_file(tmp_path, reader):
    path = tmp_path / "blank.csv"
    path.write_text("\n  \n")
    with pytest.raises(ValueError, match=r"blank\.csv: is empty \(no header row\)"):
        READERS[reader](path)


# --------------------------------------------------------------------------- encodings


def test_byte_order_mark_is_dropped_in_jsonl_and_csv(tmp_path):
    jsonl = tmp_path / "bom.jsonl"
    lines = "".join(json.dumps({"text": f"t {i}", "label": i % 2}) + "\n" for i in range(N))
    jsonl.write_bytes(b"\xef\xbb\xbf" + lines.encode())
    split, names = load_text_file(jsonl, ["text"])
    assert split.text_a[0] == "t 0" and names == ["0", "1"]

    csv = tmp_path / "bom.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + "x,label\n".encode() + "".join(f"{i},{i % 2}\n" for i in range(N)).encode())
    features, labels, _ = load_tabular(csv)
    np.testing.assert_array_equal(features[:, 0], np.arange(N))  # first column is 'x', not '\ufeffx'
    assert load_labels(csv, "label").tolist() == [i % 2 for i in range(N)]
    assert read_text(csv).startswith("x,label")


def test_other_encodings_are_rejected_with_the_byte_offset(tmp_path):
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes("text,label\n".encode() + "café,0\n".encode("latin-1") + b"tea,1\n" * N)
    for read in (lambda: load_text_file(latin1, ["text"]), lambda: load_tabular(latin1)):
        with pytest.raises(ValueError, match=r"latin1\.csv: not UTF-8 text: byte 0xe9 at offset 14 .*re-save the file as"
                                             " UTF-8"):
            read()
    utf16 = tmp_path / "utf16.jsonl"
    utf16.write_bytes('{"text": "a", "label": 0}\n'.encode("utf-16"))
    with pytest.raises(ValueError, match=r"utf16\.jsonl: not UTF-8 text: byte 0xff at offset 0 .*UTF-16 byte-order"):
        load_text_file(utf16, ["text"])


@pytest.mark.parametrize(("encoding", "offset"), [("utf-16-le", 1), ("utf-16-be", 0)])
@pytest.mark.parametrize("reader", READERS)
def test_utf16_without_a_byte_order_mark_is_rejected(tmp_path, reader, encoding, offset):
    """UTF-16 without a BOM decodes as "valid" UTF-8 with a NUL every other byte (columns 'a\\x00', ...)."""
    path = tmp_path / "wide.csv"
    path.write_bytes("".join(f"{row}\n" for row in ["a,t,y", *(f"{i / 10},x{i},{i % 2}" for i in range(N))])
                     .encode(encoding))
    assert not path.read_bytes().startswith((b"\xff\xfe", b"\xfe\xff"))
    with pytest.raises(ValueError) as info:
        READERS[reader](path)
    assert str(info.value) == (f"{path}: not UTF-8 text: a NUL byte at offset {offset} (it looks like UTF-16);"
                               " re-save the file as UTF-8")


def test_a_nul_byte_in_a_utf8_file_is_rejected(tmp_path):
    path = tmp_path / "nul.csv"
    path.write_bytes(b"a,y\n0.5,0\n0.\x005,1\n" + b"0.25,1\n" * 100)
    with pytest.raises(ValueError) as info:
        read_text(path)
    assert str(info.value) == f"{path}: not UTF-8 text: a NUL byte at offset 12 (is it a binary file?); re-save the file as UTF-8"


# --------------------------------------------------------------------------- probabilities in reduced precision


def _softmax_rows(c: int, dtype: torch.dtype, n: int = 500) -> torch.Tensor:
    logits = torch.randn(n, c, generator=torch.Generator().manual_seed(c)) * 4
    return torch.softmax(logits, -1).to(dtype)


@pytest.mark.parametrize("c", [3, 10, 30, 100])
def test_half_precision_softmax_rows_are_accepted_and_renormalised(tmp_path, c, caplog):
    half = _softmax_rows(c, torch.float16)
    assert (half.double().sum(-1) - 1).abs().max() > ROW_SUM_TOL  # the strict float32 check would reject it
    path = tmp_path / "probs.npy"
    np.save(path, half.numpy())
    assert np.load(path).dtype == np.float16
    with caplog.at_level("INFO", logger="ptdistill.checks"):
        probs, _ = load_teacher_probs(path)
    assert probs.dtype == torch.float64
    assert (probs.sum(-1) - 1).abs().max() < 1e-12
    torch.testing.assert_close(probs, half.double() / half.double().sum(-1, keepdim=True))
    assert len([r for r in caplog.records if "renormalised" in r.getMessage() and str(path) in r.getMessage()]) == 1

    bf16 = _softmax_rows(c, torch.bfloat16)
    check_probs("bf16", bf16)  # the tensor's own dtype sets the tolerance
    with pytest.raises(ValueError, match="rows must sum to 1"):
        check_probs("as float64", bf16.double())  # the same values claimed to be float64: strict
    renormalised = normalize_probs("bf16", bf16.double(), tolerance=row_sum_tolerance(c, dtype=torch.bfloat16))
    assert (renormalised.sum(-1) - 1).abs().max() < 1e-12


def test_float16_parquet_columns_are_accepted(tmp_path):
    half = _softmax_rows(4, torch.float16).numpy()
    path = tmp_path / "probs.parquet"
    frame = pd.DataFrame({f"p{k}": half[:, k] for k in range(4)})
    frame["label"] = np.arange(len(frame)) % 4
    frame.to_parquet(path)
    probs, labels = load_teacher_probs(path, labels_column="label")
    assert (probs.sum(-1) - 1).abs().max() < 1e-12 and labels.shape == (len(frame),)


@pytest.mark.parametrize(("c", "decimals"), [(3, 3), (10, 3), (100, 4)])
def test_probabilities_rounded_in_a_csv_are_accepted(tmp_path, c, decimals):
    probs = _softmax_rows(c, torch.float64).numpy()
    path = tmp_path / "probs.csv"
    pd.DataFrame(probs, columns=[f"p{k}" for k in range(c)]).to_csv(path, index=False, float_format=f"%.{decimals}f")
    rounded = pd.read_csv(path).to_numpy()
    assert np.abs(rounded.sum(1) - 1).max() > ROW_SUM_TOL
    loaded, _ = load_teacher_probs(path)
    assert (loaded.sum(-1) - 1).abs().max() < 1e-12
    np.testing.assert_allclose(loaded.numpy(), rounded / rounded.sum(1, keepdims=True), rtol=0, atol=1e-15)


def test_a_row_far_from_one_is_rejected_and_logits_get_the_hint(tmp_path):
    path = tmp_path / "probs.csv"
    path.write_text("p0,p1,p2\n0.200,0.300,0.500\n0.300,0.300,0.300\n")  # row 1 sums to 0.9: not rounding
    with pytest.raises(ValueError, match=r"probs\.csv: rows must sum to 1 \(within 0\.0078\), row 1 sums to 0\.9$"):
        load_teacher_probs(path)
    logits = tmp_path / "logits.npy"
    np.save(logits, np.log(_softmax_rows(3, torch.float32).numpy()))
    with pytest.raises(ValueError, match="negative values .*did you pass logits"):
        load_teacher_probs(logits)
    scores = tmp_path / "scores.csv"
    scores.write_text("p0,p1\n2.5,0.5\n0.5,0.5\n")
    with pytest.raises(ValueError, match="row 0 sums to 3 - did you pass logits"):
        load_teacher_probs(scores)
    percent = tmp_path / "percent.csv"
    percent.write_text("p0,p1\n20,80\n55.5,44.5\n")
    with pytest.raises(ValueError, match=r"row 0 sums to 100 - percentages\? divide by 100$"):
        load_teacher_probs(percent)


def test_row_sum_tolerance_follows_the_precision():
    assert row_sum_tolerance(3, dtype=torch.float32) == row_sum_tolerance(3, dtype=torch.float64) == ROW_SUM_TOL
    assert row_sum_tolerance(3, dtype=torch.float16) == pytest.approx(2 * 2**-11, rel=1e-3)
    assert row_sum_tolerance(3, dtype=torch.bfloat16) == pytest.approx(2 * 2**-8, rel=1e-6)
    assert row_sum_tolerance(3, decimals=3) == pytest.approx(1.5e-3)
    assert row_sum_tolerance(100, decimals=4) == pytest.approx(5e-3)
    assert row_sum_tolerance(3, decimals=8) == ROW_SUM_TOL
    assert row_sum_tolerance(3, decimals=0) == row_sum_tolerance(3, decimals=1) == ROW_SUM_TOL  # taken as exact
    assert row_sum_tolerance(1000, decimals=2) == MAX_TEXT_TOL  # capped
    assert user_tolerance(3) == pytest.approx(2 * 2**-8, rel=1e-6)


@pytest.mark.parametrize("source", ["float32 npy", "list<float32> parquet", "csv"])
def test_bf16_softmax_saved_as_float32_is_accepted(tmp_path, source, caplog):
    """What ``.float().numpy()`` of a bf16 softmax gives: float32 values that sum to 1 only to 3e-3."""
    bf16 = _softmax_rows(5, torch.bfloat16).float().numpy()
    assert bf16.dtype == np.float32 and np.abs(bf16.astype(np.float64).sum(1) - 1).max() > 1e-3
    if source == "float32 npy":
        path = tmp_path / "probs.npy"
        np.save(path, bf16)
    elif source == "csv":
        path = tmp_path / "probs.csv"
        pd.DataFrame(bf16, columns=[f"p{k}" for k in range(5)]).to_csv(path, index=False)  # exact bf16 values
    else:
        path = tmp_path / "probs.parquet"
        pq.write_table(pa.table({"probs": pa.array(list(bf16), pa.list_(pa.float32()))}), path)
    with caplog.at_level("WARNING", logger="ptdistill.checks"):
        probs, _ = load_teacher_probs(path)
    assert (probs.sum(-1) - 1).abs().max() < 1e-12
    np.testing.assert_allclose(probs.numpy(), bf16 / bf16.astype(np.float64).sum(1, keepdims=True), rtol=1e-6)
    assert len([r for r in caplog.records if "renormalised" in r.getMessage()]) == 1


@pytest.mark.parametrize(("rows", "message"), [
    ("2,0,0\n", "rows must sum to 1 (within 0.0078), row 0 sums to 2 - did you pass logits? apply softmax first"),
    ("0.5,0.5,0\n1,1,0\n", "rows must sum to 1 (within 0.0078), row 1 sums to 2 - did you pass logits? apply softmax first"),
    ("0.5,0.5,0\n0,0,0\n", "rows must sum to 1 (within 0.0078), row 1 sums to 0"),
])
def test_integer_csv_rows_are_exact_not_rounded(tmp_path, rows, message):
    path = tmp_path / "probs.csv"
    path.write_text("p0,p1,p2\n" + rows)
    with pytest.raises(ValueError) as caught:
        load_teacher_probs(path)
    assert str(caught.value) == f"{path}: {message}"
    with pytest.raises(ValueError, match="rows must sum to 1"):  # float32 keeps the strict check
        check_probs("p", torch.tensor([[0.5, 0.5005]], dtype=torch.float32))


# --------------------------------------------------------------------------- file modes


@pytest.fixture
def umask():
    def set_umask(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_umask
    os.umask(old)


def _write_everything(folder) -> list:
    store = open_store(str(folder / "store"))  # the local store writes through the same write_atomic
    store.write_bytes("a/bytes.bin", b"x")
    store.write_if_absent("a/once.bin", b"y")
    return [
        folder / "store" / "a" / "bytes.bin",
        folder / "store" / "a" / "once.bin",
        write_json_atomic(folder / "result.json", {"a": 1}),
        write_parquet_atomic(folder / "table.parquet", pa.table({"a": [1, 2]})),
        FeatureSplit(features=np.zeros((3, 2)), labels=np.arange(3)).save(folder / "split"),
        TextSplit(text_a=["a", "b"]).save(folder / "text_split"),
        *(MLP(MLPConfig(input_dim=2, num_classes=2, hidden=(4,))).save_pretrained(folder / "model").iterdir()),
    ]


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_written_files_follow_the_umask(tmp_path, umask, mask, mode):
    umask(mask)
    files = _write_everything(tmp_path)
    assert len(files) == 8
    assert {str(f.relative_to(tmp_path)): oct(stat.S_IMODE(f.stat().st_mode)) for f in files} == {
        str(f.relative_to(tmp_path)): oct(mode) for f in files}
    assert not [p for p in tmp_path.rglob("*.tmp")]
    assert open_store(str(tmp_path / "store")).list("a/") == ["a/bytes.bin", "a/once.bin"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_probability_columns_named_by_class_index_are_taken_by_name(tmp_path, suffix):
    """Columns ``1, 0`` hold class 1 first: matched by name, not position (and no negative strides)."""
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    frame = pd.DataFrame({"1": probs[:, 1], "0": probs[:, 0], "label": [0, 1, 0]})
    path = tmp_path / f"t{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)
    got, labels = load_teacher_probs(path, labels_column="label")
    np.testing.assert_allclose(got.numpy(), probs, atol=1e-12)
    assert labels.tolist() == [0, 1, 0]
    positional = pd.DataFrame({"p_b": probs[:, 1], "p_a": probs[:, 0]})  # other names: by position
    positional.to_parquet(tmp_path / "p.parquet")
    np.testing.assert_allclose(load_teacher_probs(tmp_path / "p.parquet")[0].numpy(), probs[:, ::-1], atol=1e-12)


def test_write_atomic_leaves_the_old_file_when_the_writer_fails(tmp_path):
    path = write_json_atomic(tmp_path / "result.json", {"a": 1})

    def fail(handle):
        handle.write(b"half")
        raise RuntimeError("writer died")

    with pytest.raises(RuntimeError, match="writer died"):
        write_atomic(path, fail)
    assert path.read_text() == '{\n "a": 1\n}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_an_in_flight_temporary_file_is_not_a_store_key(tmp_path):
    store = open_store(str(tmp_path))
    store.write_bytes("a/kept.bin", b"x")
    (tmp_path / "a" / f"{TMP_PREFIX}kept.bin.0123456789ab.tmp").write_bytes(b"half")  # another writer's
    assert store.list("a/") == ["a/kept.bin"]
