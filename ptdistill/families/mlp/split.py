"""Feature-vector datasets: one split of examples as arrays, stored as one parquet file.

A :class:`FeatureSplit` is what the synthetic and tabular benchmarks hand to training and
evaluation. The distillation split is unlabeled (``labels=None``) so that no code path can
train a student on labels by accident; ``p_star`` holds the true posterior when it is known
(synthetic data) and is ``None`` otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ptdistill.io import read_parquet_table, write_parquet_atomic
from ptdistill.splits import check_ids, check_split_labels

__all__ = ["FeatureSplit"]



#: Parquet columns; ``label`` and ``p_star`` are absent when the split has none.
ID_COLUMN, FEATURES_COLUMN, LABEL_COLUMN, PSTAR_COLUMN = "id", "features", "label", "p_star"


@dataclass(eq=False)
class FeatureSplit:
    """Examples of one split: ``features`` (n, d) float32, ``labels`` (n,) int64 or None,
    ``p_star`` (n, C) float64 or None, ``ids`` (n,) int64 (default ``0..n-1``).

    Arrays are converted to those dtypes on construction; shapes are checked so that a bad
    split fails where it is built, not in the middle of training.
    """

    features: np.ndarray
    labels: np.ndarray | None = None
    p_star: np.ndarray | None = None
    ids: np.ndarray | None = None

    def __post_init__(self) -> None:
        features = np.asarray(self.features)
        if features.ndim != 2 or features.shape[0] < 1 or features.shape[1] < 1:
            raise ValueError(f"features: expected shape (n, d) with n, d >= 1, got {features.shape}")
        if not (np.issubdtype(features.dtype, np.floating) or np.issubdtype(features.dtype, np.integer)):
            raise ValueError(f"features: expected numbers, got dtype {features.dtype}")
        self.features = np.ascontiguousarray(features, dtype=np.float32)
        if not np.isfinite(self.features).all():
            row = int(np.flatnonzero(~np.isfinite(self.features).all(1))[0])
            raise ValueError(f"features: contain NaN or inf (first in row {row}) after conversion to float32")
        n = features.shape[0]
        if self.labels is not None:
            self.labels = check_split_labels(self.labels, n, "features")
        if self.p_star is not None:
            p_star = np.asarray(self.p_star, dtype=np.float64)
            if p_star.ndim != 2 or p_star.shape[0] != n or p_star.shape[1] < 2:
                raise ValueError(f"p_star: expected shape ({n}, C) with C >= 2, got {p_star.shape}")
            if not np.isfinite(p_star).all() or (p_star < 0).any():
                raise ValueError("p_star: expected finite, non-negative probabilities")
            self.p_star = np.ascontiguousarray(p_star)
        self.ids = check_ids(self.ids, n)

    def __len__(self) -> int:
        return self.features.shape[0]

    @property
    def dim(self) -> int:
        """Number of input features d."""
        return self.features.shape[1]

    def take(self, rows: np.ndarray) -> FeatureSplit:
        """The examples at ``rows`` (positions, not ids), in that order (as ``TextSplit.take``)."""
        rows = np.asarray(rows, dtype=np.int64)
        optional = {name: None if getattr(self, name) is None else getattr(self, name)[rows]
                    for name in ("labels", "p_star")}
        return FeatureSplit(features=self.features[rows], ids=self.ids[rows], **optional)

    def fingerprint(self) -> str:
        """sha256 over every array's name, dtype, shape and bytes: a cache key for this split's content."""
        digest = hashlib.sha256()
        for name in ("ids", "features", "labels", "p_star"):
            array = getattr(self, name)
            if array is None:
                digest.update(f"{name}:none;".encode())
                continue
            digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the split to one parquet file, atomically (temp file + rename)."""
        path = Path(path)
        columns = {
            ID_COLUMN: pa.array(self.ids, pa.int64()),
            FEATURES_COLUMN: _list_column(self.features, pa.float32()),
        }
        if self.labels is not None:
            columns[LABEL_COLUMN] = pa.array(self.labels, pa.int64())
        if self.p_star is not None:
            columns[PSTAR_COLUMN] = _list_column(self.p_star, pa.float64())
        table = pa.table(columns)
        return write_parquet_atomic(path, table)

    @classmethod
    def load(cls, path: str | Path) -> FeatureSplit:
        """Read a split written by :meth:`save`; errors name the file and the column."""
        path = Path(path)
        table = read_parquet_table(path, (ID_COLUMN, FEATURES_COLUMN), (LABEL_COLUMN, PSTAR_COLUMN))
        if table.num_rows == 0:
            raise ValueError(f"{path}: has no rows; expected at least one example")
        ids = _int_column(table, ID_COLUMN, path)
        labels = _int_column(table, LABEL_COLUMN, path) if LABEL_COLUMN in table.column_names else None
        features = _matrix_column(table, FEATURES_COLUMN, path)
        p_star = _matrix_column(table, PSTAR_COLUMN, path) if PSTAR_COLUMN in table.column_names else None
        try:
            return cls(features=features, labels=labels, p_star=p_star, ids=ids)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None


def _list_column(matrix: np.ndarray, value_type: pa.DataType) -> pa.ListArray:
    n, d = matrix.shape
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.reshape(-1), value_type))


def _int_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    column = table.column(name)
    if not pa.types.is_integer(column.type):
        raise ValueError(f"{path}: column {name!r} has type {column.type}; expected integers")
    if column.null_count:
        raise ValueError(f"{path}: column {name!r} has {column.null_count} null value(s); expected none")
    return column.to_numpy()


def _matrix_column(table: pa.Table, name: str, path: Path) -> np.ndarray:
    """A list<float> column as an (n, k) array, checking every row has the same length k."""
    column = table.column(name).combine_chunks()
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)) or not pa.types.is_floating(
        column.type.value_type
    ):
        raise ValueError(f"{path}: column {name!r} has type {column.type}; expected list<float>")
    if column.null_count:
        raise ValueError(f"{path}: column {name!r} has {column.null_count} null row(s); expected none")
    lengths = pc.list_value_length(column).to_numpy()
    if (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise ValueError(
            f"{path}: column {name!r} row {row} has {lengths[row]} values, row 0 has {lengths[0]};"
            " expected equal-length lists"
        )
    values = column.flatten()
    if values.null_count:
        raise ValueError(f"{path}: column {name!r} has null values inside lists; expected numbers")
    return values.to_numpy(zero_copy_only=False).reshape(len(lengths), int(lengths[0]))
