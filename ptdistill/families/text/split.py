"""One split of a text-classification benchmark: sentence (pairs), labels and ids, as one parquet file.

The text counterpart of :class:`ptdistill.families.mlp.split.FeatureSplit`, with the same contract: the
distillation split is unlabeled (``labels=None``), ``ids`` are unique and stable across the
pipeline, and :meth:`fingerprint` keys the teacher-output cache. ``p_star`` is always ``None``
(the true posterior of real text is unknown); it is there so generic evaluation code reads both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from ptdistill.io import read_parquet_table, write_parquet_atomic
from ptdistill.splits import check_ids, check_split_labels

__all__ = ["TextSplit"]

ID_COLUMN, TEXT_A_COLUMN, TEXT_B_COLUMN, LABEL_COLUMN = "id", "text_a", "text_b", "label"


@dataclass(eq=False)
class TextSplit:
    """``text_a`` (n,) strings, ``text_b`` (n,) strings or None (single-sentence tasks),
    ``labels`` (n,) int64 or None, ``ids`` (n,) int64 (default ``0..n-1``)."""

    text_a: list[str]
    text_b: list[str] | None = None
    labels: np.ndarray | None = None
    ids: np.ndarray | None = None

    p_star = None  # unknown for real text; see the module docstring

    def __post_init__(self) -> None:
        self.text_a = _strings("text_a", self.text_a)
        n = len(self.text_a)
        if n == 0:
            raise ValueError("text_a: expected at least one example, got an empty split")
        if self.text_b is not None:
            self.text_b = _strings("text_b", self.text_b)
            if len(self.text_b) != n:
                raise ValueError(f"text_b: expected {n} strings to match text_a, got {len(self.text_b)}")
        if self.labels is not None:
            self.labels = check_split_labels(self.labels, n, "text_a")
        self.ids = check_ids(self.ids, n)

    def __len__(self) -> int:
        return len(self.text_a)

    @property
    def is_pair(self) -> bool:
        """Whether examples are sentence pairs (MNLI, MRPC, RTE, BoolQ)."""
        return self.text_b is not None

    def take(self, rows: Sequence[int] | np.ndarray, drop_labels: bool = False) -> TextSplit:
        """The examples at ``rows`` (positions, not ids), in that order; optionally without labels."""
        rows = np.asarray(rows, dtype=np.int64)
        return TextSplit(
            text_a=[self.text_a[i] for i in rows],
            text_b=None if self.text_b is None else [self.text_b[i] for i in rows],
            labels=None if drop_labels or self.labels is None else self.labels[rows],
            ids=self.ids[rows],
        )

    def fingerprint(self) -> str:
        """sha256 over ids, texts and labels: a cache key for this split's content."""
        digest = hashlib.sha256()
        digest.update(f"ids:{self.ids.shape};".encode())
        digest.update(self.ids.tobytes())
        for name in ("text_a", "text_b"):
            texts = getattr(self, name)
            digest.update(f"{name}:{'none' if texts is None else len(texts)};".encode())
            for text in texts or ():
                encoded = text.encode("utf-8")
                digest.update(len(encoded).to_bytes(8, "little") + encoded)
        digest.update(b"labels:none;" if self.labels is None else b"labels;" + self.labels.tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the split to one parquet file, atomically (temp file + rename)."""
        path = Path(path)
        columns = {ID_COLUMN: pa.array(self.ids, pa.int64()), TEXT_A_COLUMN: pa.array(self.text_a, pa.string())}
        if self.text_b is not None:
            columns[TEXT_B_COLUMN] = pa.array(self.text_b, pa.string())
        if self.labels is not None:
            columns[LABEL_COLUMN] = pa.array(self.labels, pa.int64())
        return write_parquet_atomic(path, pa.table(columns))

    @classmethod
    def load(cls, path: str | Path) -> TextSplit:
        """Read a split written by :meth:`save`; errors name the file and the column."""
        path = Path(path)
        table = read_parquet_table(path, (ID_COLUMN, TEXT_A_COLUMN), (TEXT_B_COLUMN, LABEL_COLUMN))
        for name in table.column_names:
            if table.column(name).null_count:
                raise ValueError(f"{path}: column {name!r} has {table.column(name).null_count} null value(s)")
        get = table.column
        try:
            return cls(
                text_a=get(TEXT_A_COLUMN).to_pylist(),
                text_b=get(TEXT_B_COLUMN).to_pylist() if TEXT_B_COLUMN in table.column_names else None,
                labels=get(LABEL_COLUMN).to_numpy() if LABEL_COLUMN in table.column_names else None,
                ids=get(ID_COLUMN).to_numpy(),
            )
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def _strings(name: str, values: Sequence[str]) -> list[str]:
    values = list(values)
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"{name}[{i}]: expected a string, got {type(value).__name__} {value!r}")
    return values
