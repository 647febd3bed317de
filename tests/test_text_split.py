"""TextSplit: parquet round trip, fingerprints and the errors a bad split file gets."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ptdistill.families.text.split import TextSplit


def _pairs(n: int = 4) -> TextSplit:
    return TextSplit([f"premise {i}" for i in range(n)], [f"hypothesis {i}" for i in range(n)],
                     labels=np.arange(n) % 2, ids=np.arange(n) + 100)


def test_round_trip_keeps_everything(tmp_path):
    for split in (_pairs(), TextSplit(["only", "sentences"]), _pairs().take([2, 0], drop_labels=True)):
        loaded = TextSplit.load(split.save(tmp_path / "s.parquet"))
        assert loaded.text_a == split.text_a and loaded.text_b == split.text_b
        assert (loaded.labels is None) == (split.labels is None)
        assert loaded.fingerprint() == split.fingerprint() and loaded.ids.tolist() == split.ids.tolist()
        assert loaded.p_star is None


def test_take_selects_rows_and_can_drop_labels():
    part = _pairs().take([3, 1], drop_labels=True)
    assert part.text_a == ["premise 3", "premise 1"] and part.ids.tolist() == [103, 101] and part.labels is None
    assert _pairs().take([1]).labels.tolist() == [1] and _pairs().is_pair and not TextSplit(["a"]).is_pair


def test_fingerprint_sees_texts_labels_ids_and_the_pair_boundary():
    base = _pairs().fingerprint()
    changed = [
        TextSplit(["premise 0!", *_pairs().text_a[1:]], _pairs().text_b, _pairs().labels, _pairs().ids),
        TextSplit(_pairs().text_a, _pairs().text_b, 1 - _pairs().labels, _pairs().ids),
        TextSplit(_pairs().text_a, _pairs().text_b, _pairs().labels, _pairs().ids + 1),
        _pairs().take(range(4), drop_labels=True),
    ]
    assert len({base, *(s.fingerprint() for s in changed)}) == 5
    # "ab" + "c" and "a" + "bc" are different examples
    assert TextSplit(["ab"], ["c"]).fingerprint() != TextSplit(["a"], ["bc"]).fingerprint()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"text_a": []}, "empty split"),
    ({"text_a": ["a", 3]}, r"text_a\[1\]: expected a string, got int"),
    ({"text_a": ["a", "b"], "text_b": ["x"]}, "text_b: expected 2 strings"),
    ({"text_a": ["a", "b"], "labels": np.array([0.0, 1.0])}, "labels: expected integer class indices"),
    ({"text_a": ["a", "b"], "labels": np.array([0, -1])}, "labels: expected class indices >= 0"),
    ({"text_a": ["a", "b"], "ids": np.array([7, 7])}, "duplicates"),
])
def test_construction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TextSplit(**kwargs)


def test_load_errors_name_the_file_and_column(tmp_path):
    with pytest.raises(ValueError, match="missing.parquet: file not found"):
        TextSplit.load(tmp_path / "missing.parquet")
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ValueError, match="junk.parquet: not a readable parquet file"):
        TextSplit.load(tmp_path / "junk.parquet")
    pq.write_table(pa.table({"id": [0], "sentence": ["a"]}), tmp_path / "cols.parquet")
    with pytest.raises(ValueError, match=r"cols.parquet: missing column\(s\) \['text_a'\]"):
        TextSplit.load(tmp_path / "cols.parquet")
    pq.write_table(pa.table({"id": [0, 1], "text_a": ["a", None]}), tmp_path / "null.parquet")
    with pytest.raises(ValueError, match="null.parquet: column 'text_a' has 1 null value"):
        TextSplit.load(tmp_path / "null.parquet")
    pq.write_table(pa.table({"id": [0, 0], "text_a": ["a", "b"]}), tmp_path / "dup.parquet")
    with pytest.raises(ValueError, match="dup.parquet: ids: expected unique"):
        TextSplit.load(tmp_path / "dup.parquet")
