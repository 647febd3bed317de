"""Bring-your-own numeric data: a CSV or parquet table becomes the four benchmark splits.

Everything about the file is checked before any work starts, and each error names the file
and the column (and row) at fault.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from numbers import Real
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from ptdistill.datasets import SPLITS, FeatureSplit

__all__ = ["DEFAULT_FRACTIONS", "MIN_ROWS", "SUFFIXES", "Standardizer", "load_tabular", "split_tabular", "standardize"]

SUFFIXES = (".csv", ".parquet", ".pq")
#: Fewer rows than this cannot fill four non-empty splits with any useful size.
MIN_ROWS = 10
DEFAULT_FRACTIONS: Mapping[str, float] = MappingProxyType(
    {"teacher_train": 0.2, "distill": 0.5, "validation": 0.1, "test": 0.2}
)


def load_tabular(
    path: str | Path, label_column: str = "label", feature_columns: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features (n, d) float32, labels (n,) int64 and the class names, from a CSV or parquet file.

    Features are ``feature_columns`` (default: every column but the label), all numeric.
    Labels may be strings or integers; they are mapped to 0..C-1 in sorted order and
    ``class_names[k]`` is the original value of class k, as a string.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(SUFFIXES)}")
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
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
            f"{path}: label column {column!r} has a single class ({classes[0]!r}); expected at least 2 classes"
        )
    return codes.astype(np.int64), [str(c) for c in classes]


def split_tabular(
    features: np.ndarray,
    labels: np.ndarray,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> dict[str, FeatureSplit]:
    """Random split into the named parts (names from ``SPLITS``, fractions summing to 1).

    Sizes are ``floor(fraction * n)`` with the left-over rows given to the largest remainders,
    so they add up to n. ``ids`` are the row numbers in the input; rows keep their input order
    within a split. ``distill`` gets ``labels=None``: the distillation set is unlabeled.
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
    order = np.random.default_rng(seed).permutation(n)
    splits = {}
    for name, part in zip(names, np.split(order, np.cumsum(sizes)[:-1])):
        rows = np.sort(part)
        splits[name] = FeatureSplit(
            features=features[rows], labels=None if name == "distill" else labels[rows], ids=rows
        )
    return splits


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
