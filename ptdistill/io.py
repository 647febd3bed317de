"""Reading teacher outputs and labels from .npy, CSV and parquet files.

Errors name the file and the column and say what was expected, before any work starts.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

SUFFIXES = (".npy", ".csv", ".parquet", ".pq")
#: Columns never taken as probabilities when --prob-columns is not given.
NON_PROB_COLUMNS = ("id", "label", "labels")


def _read(path: str | Path) -> np.ndarray | pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(SUFFIXES)}")


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = frame[column]
    if not pd.api.types.is_numeric_dtype(values):
        raise ValueError(f"{path}: column {column!r} has dtype {values.dtype}; expected numbers")
    return values.to_numpy()


def load_labels(path: str | Path, column: str | None = None) -> torch.Tensor:
    """Integer labels (N,) from a 1-D .npy array or a table column (default: ``label``, or the only column)."""
    path = Path(path)
    data = _read(path)
    if isinstance(data, np.ndarray):
        if data.ndim != 1:
            raise ValueError(f"{path}: expected a 1-D array of labels, got shape {data.shape}")
        values = data
    else:
        if column is None:
            column = "label" if "label" in data.columns else (data.columns[0] if len(data.columns) == 1 else None)
        if column is None or column not in data.columns:
            raise ValueError(
                f"{path}: no labels column {column or 'label'!r}; columns are {list(data.columns)}"
                " (name one with --labels-column)"
            )
        values = _numeric(data, column, path)
    return _as_labels(values, path, column)


def _as_labels(values: np.ndarray, path: Path, column: str | None) -> torch.Tensor:
    where = f"{path}" + (f", column {column!r}" if column else "")
    if not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"{where}: labels must be integers, got dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.floating):
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise ValueError(f"{where}: labels must be whole numbers (class indices)")
    return torch.tensor(values.astype(np.int64))


def load_teacher_probs(
    path: str | Path,
    *,
    labels_column: str | None = None,
    prob_columns: list[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Teacher probabilities (N, C) float64, and labels if ``labels_column`` names a column.

    A .npy file holds the (N, C) array.  In a table the probabilities are ``prob_columns``,
    else a list-valued ``probs`` column (as ptdistill writes teacher outputs), else every
    numeric column other than the labels column and ``id``/``label``/``labels``.
    """
    path = Path(path)
    data = _read(path)
    if isinstance(data, np.ndarray):
        if labels_column:
            raise ValueError(f"{path}: a .npy file has no columns; pass the labels with --labels")
        if data.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D array (examples, classes), got shape {data.shape}")
        if not np.issubdtype(data.dtype, np.floating):
            raise ValueError(f"{path}: expected floating-point probabilities, got dtype {data.dtype}")
        return torch.tensor(data, dtype=torch.float64), None
    labels = None
    if labels_column is not None:
        if labels_column not in data.columns:
            raise ValueError(f"{path}: no labels column {labels_column!r}; columns are {list(data.columns)}")
        labels = _as_labels(_numeric(data, labels_column, path), path, labels_column)
    if prob_columns:
        missing = [c for c in prob_columns if c not in data.columns]
        if missing:
            raise ValueError(f"{path}: probability columns {missing} not found; columns are {list(data.columns)}")
        columns = prob_columns
    elif "probs" in data.columns and not pd.api.types.is_numeric_dtype(data["probs"]):
        try:
            probs = np.stack([np.asarray(v, dtype=np.float64) for v in data["probs"]])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: column 'probs' must hold equal-length lists of numbers ({err})") from None
        return torch.from_numpy(probs), labels
    else:
        columns = [c for c in data.columns if c != labels_column and str(c).lower() not in NON_PROB_COLUMNS]
    for column in columns:
        _numeric(data, column, path)
    if len(columns) < 2:
        raise ValueError(f"{path}: expected at least 2 probability columns, found {columns}")
    return torch.tensor(data[columns].to_numpy(dtype=np.float64)), labels


def _write_atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """``write(temp_path)`` beside ``path``, then rename it, so no half-written file is ever seen."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | Path, payload: dict) -> Path:
    """Write JSON to ``path`` atomically."""
    return _write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=1)))


def write_parquet_atomic(path: str | Path, table: pa.Table) -> Path:
    """Write a parquet file to ``path`` atomically."""
    return _write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_parquet_table(path: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> pa.Table:
    """A parquet file's table with the ``required`` columns; a missing or unreadable file, or a
    missing column, is a ValueError naming the file and what was expected."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{path}: not a readable parquet file ({err})") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        expected = ", ".join(map(repr, required)) + (f" and optionally {', '.join(map(repr, optional))}"
                                                      if optional else "")
        raise ValueError(f"{path}: missing column(s) {missing}; expected {expected}; found {table.column_names}")
    return table
