"""Bring-your-own numeric data: a CSV or parquet table becomes the four benchmark splits.

Everything about the file is checked before any work starts, and each error names the file
and the column (and row) at fault.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from numbers import Real
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from ptdistill.datasets import SPLITS, FeatureSplit
from ptdistill.io import read_table
from ptdistill.storage import local_copy

__all__ = ["DEFAULT_FRACTIONS", "MIN_CLASS_ROWS", "MIN_ROWS", "SUFFIXES", "Standardizer", "load_tabular", "show_class",
           "split_tabular", "standardize"]

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet", ".pq")
#: Fewer rows than this cannot fill four non-empty splits with any useful size.
MIN_ROWS = 10
DEFAULT_FRACTIONS: Mapping[str, float] = MappingProxyType(
    {"teacher_train": 0.2, "distill": 0.5, "validation": 0.1, "test": 0.2}
)
#: Fewer rows of a class than this in a labeled split make its scores there rest on a handful of
#: rows: :func:`split_tabular` warns, naming the class and its rows per split.
MIN_CLASS_ROWS = 5


def load_tabular(
    path: str | Path, label_column: str = "label", feature_columns: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (n, d) float32, labels (n,) int64 and the class names, from a CSV or parquet file.

    Features are ``feature_columns`` (default: every column but the label), all numeric.
    Labels may be strings or integers; they are mapped to 0..C-1 in sorted order and
    ``class_names[k]`` is the original value of class k, as a string. ``path`` may be a
    ``gs://`` object (read through a cached copy, :func:`ptdistill.storage.local_copy`); errors
    name it as they name a local file.
    """
    with local_copy(str(path)) as local:
        return _load_tabular(local, label_column, feature_columns)


def _load_tabular(
    path: Path, label_column: str, feature_columns: list[str] | None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    frame = read_table(path, SUFFIXES)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    if label_column not in columns:
        raise ValueError(f"{path}: no label column {label_column!r}; columns are {columns}")
    if feature_columns is None:
        feature_columns = [c for c in columns if c != label_column]
    else:
        missing = [c for c in feature_columns if c not in columns]
        if missing:
            raise ValueError(f"{path}: feature column(s) {missing} not found; columns are {columns}")
        if label_column in feature_columns:
            raise ValueError(f"{path}: feature_columns includes the label column {label_column!r}")
    if not feature_columns:
        raise ValueError(f"{path}: no feature columns; columns are {columns}")
    if len(frame) < MIN_ROWS:
        raise ValueError(f"{path}: has {len(frame)} rows; expected at least {MIN_ROWS} to make four splits")
    for column in feature_columns:
        values = frame[column]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_complex_dtype(values):
            raise ValueError(f"{path}: feature column {column!r} has dtype {values.dtype}; expected numbers")
        finite = np.isfinite(values.to_numpy(dtype=np.float64, na_value=np.nan))
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise ValueError(
                f"{path}: feature column {column!r} has a NaN or inf value (first at row {row}, 0-based);"
                " expected finite numbers"
            )
    labels, class_names = _encode_labels(frame[label_column], path, label_column)
    features = frame[feature_columns].to_numpy(dtype=np.float32)
    return features, labels, class_names


def _encode_labels(values: pd.Series, path: Path, column: str) -> tuple[np.ndarray, list[str]]:
    missing = values.isna().to_numpy()
    if missing.any():
        raise ValueError(f"{path}: label column {column!r} is empty at row {int(np.flatnonzero(missing)[0])} (0-based)")
    if pd.api.types.is_bool_dtype(values):
        raw = values.to_numpy(dtype=bool)
    elif pd.api.types.is_numeric_dtype(values):
        as_float = values.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(as_float)) or not np.all(as_float == np.round(as_float)):
            raise ValueError(
                f"{path}: label column {column!r} holds non-integer numbers; expected class names or indices"
            )
        raw = values.to_numpy(dtype=np.int64)  # sorted numerically: class 2 before class 10
    else:  # strings, or mixed objects compared as strings
        raw = values.astype(str).to_numpy(dtype=object)
    classes, codes = np.unique(raw, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(
            f"{path}: label column {column!r} has a single class ({show_class(classes[0])}); expected at least 2"
            " classes"
        )
    return codes.astype(np.int64), [str(c) for c in classes]


def show_class(value: object) -> str:
    """A class as the user wrote it in a message: ``0`` for a number, ``'fresh'`` for a name."""
    text = str(value.item() if isinstance(value, np.generic) else value)
    return text if text.lstrip("+-").isdigit() or text in ("True", "False") else repr(text)


def split_tabular(
    features: np.ndarray,
    labels: np.ndarray,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, FeatureSplit]:
    """Seeded split into the named parts (names from ``SPLITS``, fractions summing to 1), stratified by label.

    Sizes are ``floor(fraction * n)`` with the left-over rows given to the largest remainders,
    so they add up to n. Each class is shared out in proportion: the rows of class k in split s
    are ``n_k * size_s / n`` rounded down or up (:func:`_allocate`), drawn from a seeded
    permutation of the class's rows. Every class must appear in every labeled split (all but
    ``distill``): a class with fewer rows than there are labeled splits is a ValueError naming
    it and its count; a class that would get no row of a labeled split by proportion gets one
    from its largest split (another class gives one back where it can, else that split grows
    by a row). A class with fewer than ``MIN_CLASS_ROWS`` rows in a labeled split is logged as
    a warning with its rows per split. ``class_names[k]`` names label k in messages.

    ``ids`` are the row numbers in the input; rows keep their input order within a split.
    ``distill`` gets ``labels=None``: the distillation set is unlabeled (its draw is stratified
    all the same, so it covers the classes like the others).
    """
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2:
        raise ValueError(f"features: expected shape (n, d), got {features.shape}")
    if labels.shape != (len(features),):
        raise ValueError(f"labels: expected shape ({len(features)},) to match features, got {labels.shape}")
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown or not fractions:
        raise ValueError(f"fractions: unknown or no split names {unknown}; expected names from {list(SPLITS)}")
    for name, fraction in fractions.items():
        if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction <= 1:
            raise ValueError(f"fractions[{name!r}]: expected a number in (0, 1], got {fraction!r}")
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise ValueError(f"fractions: expected values summing to 1, got {total:.6g}")
    n = len(features)
    names = [s for s in SPLITS if s in fractions]
    exact = np.array([fractions[s] * n for s in names])
    sizes = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - sizes), kind="stable")[: n - sizes.sum()]:
        sizes[i] += 1
    empty = [f"{s!r} (fraction {fractions[s]:g})" for s, size in zip(names, sizes) if size == 0]
    if empty:
        raise ValueError(
            f"fractions: split(s) {', '.join(empty)} would be empty with n={n} rows; use more rows or larger fractions"
        )
    classes, codes = np.unique(labels, return_inverse=True)
    shown = [show_class(class_names[c] if class_names is not None and 0 <= c < len(class_names) else c)
             for c in classes]
    labeled = [i for i, name in enumerate(names) if name != "distill"]
    counts = _allocate(np.bincount(codes, minlength=len(classes)), sizes, labeled, shown, names)
    _warn_small_classes(counts, labeled, shown, names, sizes)
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for k in range(len(classes)):
        rows = rng.permutation(np.flatnonzero(codes == k))
        for part, chunk in zip(parts, np.split(rows, np.cumsum(counts[k])[:-1])):
            part.append(chunk)
    splits = {}
    for name, part in zip(names, parts):
        rows = np.sort(np.concatenate(part))
        splits[name] = FeatureSplit(
            features=features[rows], labels=None if name == "distill" else labels[rows], ids=rows
        )
    return splits


def _allocate(
    class_counts: np.ndarray, sizes: np.ndarray, labeled: list[int], shown: list[str], names: list[str]
) -> np.ndarray:
    """Rows of each class per split, (K, S) int: row sums ``class_counts``, column sums ``sizes``.

    Controlled rounding of ``n_k * size_s / n``: every cell is that value rounded down or, where
    it is not whole, up (:func:`_cells_to_round_up`), so each cell is less than one row from its
    exact share. Then every class gets at least one row in each ``labeled`` split (see
    :func:`split_tabular`).
    """
    n = int(class_counts.sum())
    need = len(labeled)
    short = [(shown[k], int(c)) for k, c in enumerate(class_counts) if c < need]
    if short:
        listed = ", ".join(f"class {name} has {count} row{'s' * (count != 1)}" for name, count in short)
        raise ValueError(
            f"labels: {listed}; each of the {need} labeled splits ({', '.join(names[s] for s in labeled)}) needs"
            f" at least one row of every class, so every class needs at least {need} rows (add rows of it or drop it)"
        )
    product = np.outer(class_counts, sizes)
    counts, remainder = product // n, product % n
    counts += _cells_to_round_up(remainder, class_counts - counts.sum(1), sizes - counts.sum(0))
    floor = np.isin(np.arange(len(sizes)), labeled).astype(int)  # rows a split must keep of each class
    for k, s in zip(*np.nonzero(counts[:, labeled] == 0)):
        s = labeled[s]
        donor = int(np.argmax(np.where(counts[k] > floor, counts[k], -1)))
        counts[k, donor] -= 1
        counts[k, s] += 1
        giver = int(np.argmax(np.where(np.arange(len(class_counts)) != k, counts[:, s], 0)))
        if counts[giver, s] > 1:  # keep the split sizes: another class hands one row back
            counts[giver, s] -= 1
            counts[giver, donor] += 1
    return counts


def _cells_to_round_up(remainder: np.ndarray, row_need: np.ndarray, col_need: np.ndarray) -> np.ndarray:
    """A 0/1 table, 1 only where ``remainder > 0``, with row sums ``row_need`` and column sums ``col_need``.

    A bipartite b-matching: cells are taken by largest remainder first, then augmenting paths
    (row -> free cell -> column, or on through a taken cell to the row that holds it) fill the
    rows still short. A solution exists because the fractional remainders (``remainder / n``)
    are one, so a path exists while a row is short.
    """
    up = np.zeros(remainder.shape, dtype=np.int64)
    row_need, col_need = row_need.copy(), col_need.copy()
    for k, s in zip(*np.unravel_index(np.argsort(-remainder, axis=None, kind="stable"), remainder.shape)):
        if remainder[k, s] > 0 and row_need[k] > 0 and col_need[s] > 0:
            up[k, s], row_need[k], col_need[s] = 1, row_need[k] - 1, col_need[s] - 1
    while row_need.any():
        start = int(np.flatnonzero(row_need)[0])
        via_row: dict[int, int] = {}  # column -> the row that reaches it through a free cell
        via_col = {start: -1}  # row -> the column it would give up (-1: the start row)
        queue, end = [start], None
        while queue and end is None:
            k = queue.pop(0)
            for s in np.flatnonzero((remainder[k] > 0) & (up[k] == 0)):
                if int(s) in via_row:
                    continue
                via_row[int(s)] = k
                if col_need[s] > 0:
                    end = int(s)
                    break
                for j in np.flatnonzero(up[:, s]):
                    if int(j) not in via_col:
                        via_col[int(j)] = int(s)
                        queue.append(int(j))
        if end is None:
            raise AssertionError("controlled rounding found no augmenting path")  # impossible, see above
        col_need[end] -= 1
        row_need[start] -= 1
        s = end
        while s != -1:  # flip the path: each row on it takes its column and gives up the one it held
            k = via_row[s]
            up[k, s] = 1
            s = via_col[k]
            if s != -1:
                up[k, s] = 0
    return up


def _warn_small_classes(
    counts: np.ndarray, labeled: list[int], shown: list[str], names: list[str], sizes: np.ndarray
) -> None:
    small = [k for k in range(len(counts)) if counts[k, labeled].min() < MIN_CLASS_ROWS]
    if not small:
        return
    where = "; ".join(
        f"class {shown[k]} ({counts[k].sum()} rows): " + ", ".join(f"{names[s]} {counts[k, s]}" for s in range(len(names)))
        for k in small
    )
    grown = [f"{names[s]} {sizes[s]} -> {counts[:, s].sum()}" for s in range(len(names)) if counts[:, s].sum() != sizes[s]]
    log.warning(
        "fewer than %d rows of a class in a labeled split, so its scores there rest on a handful of rows: %s%s",
        MIN_CLASS_ROWS, where, f" (split sizes moved so every class is in every labeled split: {', '.join(grown)})"
        if grown else "",
    )


@dataclass(frozen=True, eq=False)
class Standardizer:
    """Per-feature ``(x - mean) / std``; a constant feature gets std 1 (it is only centred)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> Standardizer:
        """Mean and std (population) of each column of ``features`` (n, d)."""
        x = np.asarray(features, dtype=np.float64)
        std = x.std(0)
        return cls(mean=x.mean(0), std=np.where(std > 0, std, 1.0))

    def transform(self, features: np.ndarray) -> np.ndarray:
        """Standardized float32 copy of ``features``."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1:] != self.mean.shape:
            raise ValueError(f"features: expected {self.mean.shape[0]} columns as fitted, got shape {features.shape}")
        return ((features - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-ready dict, so a pipeline can apply the same transform to new data."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Standardizer:
        """Inverse of :meth:`to_dict`."""
        return cls(mean=np.asarray(data["mean"], dtype=np.float64), std=np.asarray(data["std"], dtype=np.float64))


def standardize(
    splits: Mapping[str, FeatureSplit], fit_split: str = "teacher_train"
) -> tuple[dict[str, FeatureSplit], Standardizer]:
    """Standardize every split with the mean/std of ``fit_split`` only.

    Why only the teacher's training split: the teacher is trained first and its input scaling is
    then fixed; students must see inputs scaled the same way as the teacher did, and statistics
    of the validation and test splits must not influence any model (the test split is for
    evaluation only). Using the distillation split too would change the teacher's inputs after
    the fact.
    """
    if fit_split not in splits:
        raise ValueError(f"fit_split: {fit_split!r} is not among the splits {list(splits)}")
    scaler = Standardizer.fit(splits[fit_split].features)
    return {name: replace(split, features=scaler.transform(split.features)) for name, split in splits.items()}, scaler
