"""Bring-your-own numeric data: a CSV or parquet table becomes the four benchmark splits.

Everything about the file is checked before any work starts, and each error names the file
and the column (and row) at fault.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ptdistill.families.mlp.split import FeatureSplit
from ptdistill.io import read_table
from ptdistill.splits import DEFAULT_FRACTIONS, MIN_ROWS, show_class, stratified_rows
from ptdistill.storage import local_copy

__all__ = ["SUFFIXES", "Standardizer", "load_tabular", "split_tabular", "standardize"]

log = logging.getLogger(__name__)

SUFFIXES = (".csv", ".parquet", ".pq")


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


def split_tabular(
    features: np.ndarray,
    labels: np.ndarray,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, FeatureSplit]:
    """Seeded split of a feature table into the named parts, stratified by label
    (:func:`ptdistill.splits.stratified_rows` draws the rows).

    ``ids`` are the row numbers in the input; rows keep their input order within a split.
    ``distill`` gets ``labels=None``: the distillation set is unlabeled (its draw is stratified
    all the same, so it covers the classes like the others).
    """
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2:
        raise ValueError(f"features: expected shape (n, d), got {features.shape}")
    if labels.shape != (len(features),):
        raise ValueError(f"labels: expected shape ({len(features)},) to match features, got {labels.shape}")
    return {
        name: FeatureSplit(features=features[rows], labels=None if name == "distill" else labels[rows], ids=rows)
        for name, rows in stratified_rows(labels, fractions, seed, class_names).items()
    }



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
