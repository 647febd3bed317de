"""Bring your own teacher outputs (``teacher.outputs=URI``): a teacher scored once, elsewhere.

A teacher behind an API, or too large to load where the pipeline runs, is scored on the data
beforehand; the pipeline then skips ``train_teacher`` and ``teacher_inference`` and reads the
file instead (:func:`ptdistill.steps.teacher.import_teacher_outputs`).

**One file for the whole data set.** ptdistill draws the splits itself (seeded and stratified,
in ``prepare_data``), so a user cannot know before a run which example lands in which split,
and a file per split or a split column the user fills in would have to be redone for every
``split_seed`` or ``fractions``. So the file holds the teacher's outputs on every example of
the data, identified the way ptdistill identifies examples: by their **example id**, which is
the 0-based row number in the data file for the tabular benchmark and for text files
(``data.path``), and the CSV row number for rotten-tomatoes. Rows of teacher-train examples
may be there (they are not used), so "score every row of my CSV" is all it takes.

* **Alignment.** An integer ``id`` column names each row's example; without one, row ``i`` is
  the example with id ``i`` (the file's rows follow the data file's rows). Every
  distill, validation and test example must have exactly one row, and a row whose id is no
  example of the data is refused (it means the file belongs to other data).
* **Benchmarks whose ids repeat across splits** (synthetic: ids ``0..n-1`` in each split;
  GLUE tasks: test ids are rows of the official validation split) need a ``split`` column
  (``distill``, ``validation``, ``test``; ``teacher_train`` rows are ignored); ids, or the row
  order without an ``id`` column, then count within each split.
* **Values.** ``.npy``: an (N, C) float array (no id or split: row order). Parquet or CSV: one
  numeric column per class (every column but ``id``, ``split``, ``label``/``labels``), in
  class order, or, when the columns are exactly the class names (in any order), matched by
  name; or one list-valued column ``probs``, ``log_probs`` or ``logits`` (as ptdistill writes
  teacher outputs).
* **Kind** (``teacher.outputs_kind``): ``probs``, ``log_probs``, ``logits`` or ``auto``
  (default), which decides by this rule, ``tol`` being :func:`ptdistill.checks.user_tolerance`
  (the bfloat16 softmax's 7.8e-3, wider for CSV values rounded to a few decimals):

  1. every value in [0, 1] and every row sums to 1 within ``tol`` -> probabilities;
  2. every value <= 0 and every row's exp sums to 1 within ``tol`` -> log-probabilities;
  3. values of both signs -> logits;
  4. anything else (values in [0, 1] or all <= 0 whose rows do not sum to 1; non-negative
     values above 1, as scores, percentages or counts are) is refused, naming the key to set.

  A list column's name declares its kind. Logits become probabilities by a float64 softmax;
  probabilities and exp(log-probabilities) are checked and renormalised in float64 by
  :func:`ptdistill.checks.normalize_probs` at ``tol``. The three kinds of the same teacher thus
  give the same probabilities (to float64 rounding).

Every error is a one-line ``ValueError`` naming the file (its URI) and, where it applies, the
column, row, split and ids. The file is read through :mod:`ptdistill.storage`, so ``gs://``
works like a local path; it is hashed (sha256) for the content-addressed cache.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ptdistill import checks
from ptdistill.io import check_file, csv_decimals, in_class_order, numeric_column, read_array_or_table
from ptdistill.storage import check_location, is_remote, local_copy

__all__ = ["CACHE_VERSION", "ID_COLUMN", "KINDS", "NEEDED", "SPLIT_COLUMN", "SUFFIXES", "TeacherOutputs", "align",
           "check_before_run", "check_spec", "file_sha256", "read_outputs", "teacher_outputs"]

#: Bumped when reading or aligning a file changes meaning (part of the cache key of the imported outputs).
CACHE_VERSION = 1
KINDS = ("auto", "probs", "log_probs", "logits")
SUFFIXES = (".parquet", ".pq", ".csv", ".npy")
ID_COLUMN, SPLIT_COLUMN = "id", "split"
#: The splits the pipeline reads teacher outputs of; ``teacher_train`` rows may be present and are ignored.
NEEDED = ("distill", "validation", "test")
ALL_SPLITS = ("teacher_train", *NEEDED)
_NOT_VALUES = (ID_COLUMN, SPLIT_COLUMN, "label", "labels")
#: List-valued columns that hold a whole row of outputs, by kind; with ``auto``, the first present wins.
_LIST_COLUMNS = ("probs", "log_probs", "logits")
_SET_KIND = "set teacher.outputs_kind to probs, log_probs or logits"


@dataclass
class TeacherOutputs:
    """A teacher-outputs file as read: probabilities (N, C) float64 rows summing to 1, and how to align them.

    ``logits`` (N, C) float64: the given logits, else the log of the probabilities (``-inf`` for
    a zero). ``ids`` (N,) int64: the ``id`` column, else None (row order); ``splits`` (N,) str:
    the ``split`` column, else None. ``kind`` is what the values were read as and ``detected``
    whether ``auto`` decided it.
    """

    uri: str
    sha256: str
    kind: str
    detected: bool
    probs: np.ndarray
    logits: np.ndarray
    ids: np.ndarray | None
    splits: np.ndarray | None

    def describe(self) -> dict:
        """JSON-ready: where the outputs came from (for the teacher report and the run's tags)."""
        return {"uri": self.uri, "sha256": self.sha256, "kind": self.kind, "detected": self.detected,
                "rows": len(self.probs), "classes": self.probs.shape[1],
                "aligned_by": (f"{SPLIT_COLUMN} and " if self.splits is not None else "")
                + (f"{ID_COLUMN} column" if self.ids is not None else "row order")}


def check_spec(uri: str, kind: str) -> None:
    """``teacher.outputs`` / ``teacher.outputs_kind`` as config values, reading nothing (no file access,
    no request: compiling needs no credentials); raises ValueError."""
    if kind not in KINDS:
        raise ValueError(f"teacher.outputs_kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    if uri:
        try:
            check_location(uri, suffixes=SUFFIXES)
        except ValueError as err:
            raise ValueError(f"teacher.outputs: {err}") from None


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_outputs(path: str | Path, uri: str, kind: str, class_names: Sequence[str], sha256: str = "") -> TeacherOutputs:
    """Read and check the local copy ``path`` of ``uri`` (see the module docstring); errors name ``uri``."""
    path = Path(path)
    try:
        return _read_outputs(path, uri, kind, list(class_names), sha256 or file_sha256(path))
    except ValueError as err:
        raise ValueError(str(err).replace(str(path), uri)) from None


def _read_outputs(path: Path, uri: str, kind: str, class_names: list[str], sha256: str) -> TeacherOutputs:
    data = read_array_or_table(path)
    ids = splits = None
    decimals = None
    if isinstance(data, np.ndarray):
        if data.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D array (examples, classes), got shape {data.shape}")
        if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
            raise ValueError(f"{path}: expected numbers, got dtype {data.dtype}")
        values, columns = data.astype(np.float64), None
    else:
        data.columns = [str(c) for c in data.columns]
        ids = _ids(data, path)
        splits = _splits(data, path)
        values, columns, listed = _values(data, path, kind, class_names)
        if listed:
            kind = listed
        elif path.suffix.lower() == ".csv":
            decimals = csv_decimals(path, columns)
    if values.shape[1] != len(class_names):
        what = f"columns {columns}" if columns else "columns"
        raise ValueError(f"{path}: has {values.shape[1]} class {what}; the data has {len(class_names)} classes"
                         f" {class_names}")
    if values.shape[0] == 0:
        raise ValueError(f"{path}: has no rows; expected the teacher's outputs on every example")
    _check_finite(values, path, columns)
    tolerance = checks.user_tolerance(len(class_names), decimals=decimals)
    detected = kind == "auto"
    if detected:
        kind = _detect(values, tolerance, path)
    probs, logits = _to_probs(values, kind, tolerance, path)
    return TeacherOutputs(uri, sha256, kind, detected, probs, logits, ids, splits)


def _ids(frame: pd.DataFrame, path: Path) -> np.ndarray | None:
    if ID_COLUMN not in frame.columns:
        return None
    values = frame[ID_COLUMN]
    if pd.api.types.is_float_dtype(values):
        numbers = values.to_numpy()
        if np.isfinite(numbers).all() and (numbers == np.round(numbers)).all():
            return numbers.astype(np.int64)
    if not pd.api.types.is_integer_dtype(values):
        raise ValueError(f"{path}: column {ID_COLUMN!r} has dtype {values.dtype}; expected integer example ids"
                         " (0-based row numbers of the data)")
    return values.to_numpy(dtype=np.int64)


def _splits(frame: pd.DataFrame, path: Path) -> np.ndarray | None:
    if SPLIT_COLUMN not in frame.columns:
        return None
    values = frame[SPLIT_COLUMN].astype(str).str.strip().to_numpy(dtype=object)
    unknown = sorted(set(values) - set(ALL_SPLITS))
    if unknown:
        raise ValueError(f"{path}: column {SPLIT_COLUMN!r} holds {unknown}; expected {', '.join(ALL_SPLITS)}"
                         " (teacher_train rows are ignored)")
    return values


def _values(frame: pd.DataFrame, path: Path, kind: str, class_names: list[str]) -> tuple[np.ndarray, list[str], str]:
    """(values (N, C) float64, the columns they came from, the kind a list column declares or "")."""
    wanted = _LIST_COLUMNS if kind == "auto" else (kind,)
    listed = [c for c in wanted if c in frame.columns and frame[c].dtype == object]
    if listed:
        column = listed[0]
        try:
            values = np.stack([np.asarray(v, dtype=np.float64) for v in frame[column]])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: column {column!r} must hold equal-length lists of numbers ({err})") from None
        return values, [column], column
    columns = [c for c in frame.columns if c.lower() not in _NOT_VALUES]
    for column in columns:
        numeric_column(frame, column, path)
    columns = in_class_order(columns, class_names)  # named after the classes: matched by name, not position
    return np.ascontiguousarray(frame[columns].to_numpy(dtype=np.float64)), columns, ""


def _check_finite(values: np.ndarray, path: Path, columns: list[str] | None) -> None:
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = (int(i[0]) for i in np.nonzero(bad))
        where = f"column {columns[col]!r}" if columns and len(columns) == values.shape[1] else f"class {col}"
        raise ValueError(f"{path}: {where} row {row} is {values[row, col]}; expected finite values")


def _check_sums_to_one(sums: np.ndarray, tolerance: float, path: Path, which: str, kind: str) -> None:
    """ValueError naming the first row whose sum ``sums[row]`` is further than ``tolerance`` from 1:
    the values are then neither ``kind`` nor clearly logits (``which`` says what was seen of them)."""
    off = np.abs(sums - 1) > tolerance
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ValueError(f"{path}: cannot tell what the values are: {which} {row} sums to {sums[row]:.6g}, not 1"
                         f" (within {tolerance:.2g}), so they are neither {kind} nor clearly logits; {_SET_KIND}")


def _detect(values: np.ndarray, tolerance: float, path: Path) -> str:
    """The kind by the module docstring's rule; raises ValueError naming ``teacher.outputs_kind`` when unsure."""
    if (values >= 0).all() and (values <= 1).all():
        _check_sums_to_one(values.sum(1), tolerance, path, "all are in [0, 1] but row", "probabilities")
        return "probs"
    if (values <= 0).all():
        _check_sums_to_one(np.exp(values).sum(1), tolerance, path, "all are <= 0 but the exp of row",
                           "log-probabilities")
        return "log_probs"
    if (values < 0).any():
        return "logits"
    row = int(np.flatnonzero((values > 1).any(1))[0])
    raise ValueError(f"{path}: cannot tell what the values are: all are >= 0 and row {row} has values above 1"
                     f" (scores, percentages or counts are not probabilities, and logits take both signs);"
                     f" {_SET_KIND}")


def _to_probs(values: np.ndarray, kind: str, tolerance: float, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, logits) float64 of ``values`` read as ``kind``."""
    if kind == "logits":
        z = np.exp(values - values.max(1, keepdims=True))
        return z / z.sum(1, keepdims=True), values
    raw = np.exp(values) if kind == "log_probs" else values
    name = f"{path} (read as {'exp of log-probabilities' if kind == 'log_probs' else 'probabilities'})"
    try:
        probs = checks.normalize_probs(name, torch.tensor(raw), tolerance=tolerance).numpy()
    except ValueError as err:
        raise ValueError(str(err).replace(checks._LOGITS_HINT, " - logits? set teacher.outputs_kind=logits"))
    with np.errstate(divide="ignore"):
        return probs, np.log(probs)


def align(outputs: TeacherOutputs, split_ids: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Row positions in ``outputs`` of each needed split's examples, in the split's order.

    ``split_ids`` maps every split of the data (``teacher_train`` included, so that a row of a
    teacher-train example is not taken for one of other data) to its example ids. Raises
    ValueError naming the file, the split and some ids for: ids given twice, rows of no example,
    examples without a row, and ids that repeat across splits when there is no split column.
    """
    if outputs.ids is not None:
        how = f"by the {ID_COLUMN!r} column"
    elif outputs.splits is not None:
        how = "by row order within each split (no 'id' column: row i of a split is its example with id i)"
    else:
        how = "by row order (no 'id' column: row i is the example with id i)"
    if outputs.splits is None:
        _check_unique_ids(outputs.uri, split_ids)
        got = outputs.ids if outputs.ids is not None else np.arange(len(outputs.probs), dtype=np.int64)
        _check_rows(outputs.uri, "the data", got, np.concatenate(list(split_ids.values())), how)
        positions = {name: np.arange(len(got)) for name in NEEDED}
        groups = {name: got for name in NEEDED}
    else:
        positions = {name: np.flatnonzero(outputs.splits == name) for name in NEEDED}
        groups = {name: np.arange(len(rows), dtype=np.int64) if outputs.ids is None else outputs.ids[rows]
                  for name, rows in positions.items()}
        for name in NEEDED:
            _check_rows(outputs.uri, f"split {name!r}", groups[name], split_ids[name], how)
    found = {name: pd.Index(groups[name]).get_indexer(split_ids[name]) for name in NEEDED}
    missing = {name: split_ids[name][rows < 0] for name, rows in found.items() if (rows < 0).any()}
    if missing:
        total = sum(len(ids) for ids in missing.values())
        listed = ", ".join(f"{name} {len(ids)} of {len(found[name])} (id(s) {_some(ids)})" for name, ids in missing.items())
        raise ValueError(f"{outputs.uri}: {total} of the {sum(len(r) for r in found.values())} distill, validation and"
                         f" test examples have no row: {listed}; expected a row for every one (rows are matched {how})")
    return {name: positions[name][rows] for name, rows in found.items()}


def _check_unique_ids(uri: str, split_ids: Mapping[str, np.ndarray]) -> None:
    """ValueError asking for a split column when an example id is in two splits of the data."""
    ids = np.concatenate(list(split_ids.values()))
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        repeated = int(values[counts > 1][0])
        names = np.repeat(list(split_ids), [len(v) for v in split_ids.values()])
        raise ValueError(f"{uri}: this data's example ids repeat across splits (id {repeated} is in"
                         f" {' and '.join(names[ids == repeated])}), so an id alone does not name an example; add a"
                         f" {SPLIT_COLUMN!r} column ({', '.join(NEEDED)})")


def _check_rows(uri: str, where: str, got: np.ndarray, known: np.ndarray, how: str) -> None:
    """ValueError unless ``got`` has no id twice and none outside ``known`` (the examples of ``where``)."""
    values, counts = np.unique(got, return_counts=True)
    duplicate = values[counts > 1]
    if len(duplicate):
        raise ValueError(f"{uri}: {len(duplicate)} id(s) of {where} have more than one row: {_some(duplicate)};"
                         f" expected one row per example (rows are matched {how})")
    stray = np.setdiff1d(got, known)
    if len(stray):
        raise ValueError(f"{uri}: {len(stray)} row(s) match no example of {where}: id(s) {_some(stray)}; is the file"
                         f" for other data? (rows are matched {how})")


def _some(ids: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return f"[{shown}{', ...' if len(ids) > limit else ''}]"


def teacher_outputs(uri: str, kind: str, class_names: Sequence[str],
                    split_ids: Mapping[str, np.ndarray]) -> tuple[TeacherOutputs, dict[str, np.ndarray]]:
    """Fetch, read, check and align ``uri``: the outputs and the row positions of each needed split."""
    check_spec(uri, kind)
    if not is_remote(uri):
        check_file(Path(uri).expanduser(), SUFFIXES)
    with local_copy(uri) as path:  # a gs:// object: a copy cached by its generation and md5
        outputs = read_outputs(path, uri, kind, class_names)
    return outputs, align(outputs, split_ids)


def check_before_run(spec, class_names: Sequence[str] | None = None,
                     split_ids: Mapping[str, np.ndarray] | None = None) -> None:
    """``ptdistill run``'s up-front check of a local ``spec.outputs`` (a teacher config), with the
    errors the pipeline's import_teacher_outputs step would give; a remote file is checked there.
    Without the data (``class_names`` None: the data is in a bucket) only the file itself is
    checked: present, not empty, readable as its type."""
    if not getattr(spec, "outputs", "") or is_remote(spec.outputs):
        return
    if class_names is None or split_ids is None:
        read_array_or_table(check_file(Path(spec.outputs).expanduser(), SUFFIXES))
    else:
        teacher_outputs(spec.outputs, spec.outputs_kind, class_names, split_ids)
