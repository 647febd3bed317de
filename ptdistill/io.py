"""Reading user data (tables, teacher outputs, labels) and writing result files atomically.

Every reader checks the file first (found, not a directory, not empty), decodes text files one
way (:func:`read_text`: UTF-8, a byte-order mark dropped, anything else an error naming the
byte offset) and rejects duplicate column names instead of letting pandas rename them. Errors
name the file and the column and say what was expected, before any work starts.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import secrets
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ptdistill.checks import normalize_probs, user_tolerance

log = logging.getLogger(__name__)

SUFFIXES = (".npy", ".csv", ".parquet", ".pq")
#: Columns never taken as probabilities when --prob-columns is not given.
NON_PROB_COLUMNS = ("id", "label", "labels")
UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
#: A number as text: sign, digits, optional fraction, optional exponent (groups: fraction, exponent).
_NUMBER = re.compile(r"^\s*[+-]?\d*(?:\.(\d*))?(?:[eE]([+-]?\d+))?\s*$")


# --------------------------------------------------------------------------- reading files


def check_file(path: str | Path, suffixes: Sequence[str] | None = None) -> Path:
    """``path`` as a Path if it is a non-empty regular file (with one of ``suffixes``, when given).

    Raises ValueError naming the file: not found, a directory, an unsupported suffix, or empty.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; expected a file")
    if not path.exists():
        raise ValueError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffixes is not None and suffix not in suffixes:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; expected one of {', '.join(suffixes)}")
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"{path}: is empty (0 bytes); expected data")
    return path


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file, without a leading byte-order mark (as Excel writes it).

    Any other encoding is a ValueError naming the file and the offset of the first byte that is
    not UTF-8, so that a latin-1 or UTF-16 export fails at once instead of as garbled columns. A
    NUL byte, though valid UTF-8, is rejected the same way: it is how UTF-16 without a byte-order
    mark (or a binary file) shows.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot be read ({err.strerror or err})") from None
    start = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    try:
        text = data[start:].decode("utf-8")
    except UnicodeDecodeError as err:
        offset = start + err.start
        utf16 = " (it starts with a UTF-16 byte-order mark)" if data[:2] in _UTF16_BOMS else ""
        raise ValueError(f"{path}: not UTF-8 text: byte 0x{data[offset]:02x} at offset {offset} is not valid"
                         f" UTF-8{utf16}; re-save the file as UTF-8") from None
    nul = data.find(b"\x00", start)
    if nul >= 0:  # valid UTF-8, but no text file has it: UTF-16 without a byte-order mark has one every other byte
        head = data[:1000]
        kind = "it looks like UTF-16" if head.count(0) >= len(head) // 4 else "is it a binary file?"
        raise ValueError(f"{path}: not UTF-8 text: a NUL byte at offset {nul} ({kind}); re-save the file as UTF-8")
    return text


def read_table(path: str | Path, suffixes: Sequence[str], csv_options: dict | None = None) -> pd.DataFrame:
    """A CSV, JSONL (one JSON object per line) or parquet file as a DataFrame.

    ``csv_options`` go to ``pandas.read_csv``. Raises ValueError naming the file for everything
    :func:`check_file` and :func:`read_text` reject, for a file that does not parse, and for
    duplicate column names (a CSV header ``a,a,b``, a repeated JSON key, a parquet schema).
    """
    path = check_file(path, suffixes)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path, csv_options or {})
    if suffix == ".jsonl":
        return _read_jsonl(path)
    try:
        _check_unique_columns(path, pq.read_schema(path).names)  # read_table itself fails on duplicates
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{path}: not a readable parquet file ({err})") from None
    return table.to_pandas()


def _read_csv(path: Path, options: dict) -> pd.DataFrame:
    text = read_text(path)
    if not text.strip():
        raise ValueError(f"{path}: is empty (no header row); expected a header row and data rows")
    try:
        header = pd.read_csv(io.StringIO(text), header=None, nrows=1, dtype=str, keep_default_na=False)
        frame = pd.read_csv(io.StringIO(text), **options)
    except (ValueError, pd.errors.ParserError) as err:
        raise ValueError(f"{path}: could not be read as CSV ({err})") from None
    _check_unique_columns(path, [str(name) for name in header.iloc[0]])
    return frame


class _DuplicateKeys(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict:
    counts = Counter(key for key, _ in pairs)
    duplicated = [key for key, count in counts.items() if count > 1]
    if duplicated:
        raise _DuplicateKeys(duplicated)
    return dict(pairs)


def _read_jsonl(path: Path) -> pd.DataFrame:
    records = []
    # "\n" only: str.splitlines would also split at U+2028, which JSON allows inside strings.
    for number, line in enumerate(read_text(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line, object_pairs_hook=_unique_pairs)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {number} is not valid JSON ({err.msg} at column {err.colno})") from None
        except _DuplicateKeys as err:
            raise ValueError(f"{path}: line {number} has duplicate key(s) {err.args[0]}; expected each key once"
                             " (JSON keeps only the last)") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number} is a JSON {type(record).__name__}; expected one object per line")
        records.append(record)
    if not records:
        raise ValueError(f"{path}: has no JSON objects; expected one object per line")
    frame = pd.DataFrame.from_records(records)
    _check_unique_columns(path, [str(name) for name in frame.columns])
    return frame


def _check_unique_columns(path: Path, names: Sequence[str]) -> None:
    """Raise ValueError for column names that pandas would keep apart but a reader would not.

    Names equal after ``strip()`` and ``casefold()`` (``a,a``, ``a, a``, ``a,A``) are rejected,
    naming them as written: with ``y,Y`` or ``y,y `` and label ``y`` the other one is a copy of
    the label that the model would train on. An empty CSV header cell (pandas' ``Unnamed: i``,
    usually the index that ``DataFrame.to_csv()`` writes without ``index=False``) is rejected too,
    since it would be trained on as a feature.
    """
    for position, name in enumerate(names):
        if name.strip() == "":
            raise ValueError(f"{path}: column {position + 1} has an empty header (pandas names it 'Unnamed:"
                             f" {position}'); this is usually the index written by DataFrame.to_csv() - write the"
                             " file with index=False, or give the column a name")
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.strip().casefold(), []).append(name)
    duplicated = [group for group in groups.values() if len(group) > 1]
    if duplicated:
        raise ValueError(f"{path}: duplicate column name(s) {', '.join(map(repr, duplicated[0]))}"
                         + "".join(f"; {', '.join(map(repr, g))}" for g in duplicated[1:])
                         + "; expected each column name once (names differing only in case or surrounding spaces"
                         " count as the same)")


def read_array_or_table(path: str | Path) -> np.ndarray | pd.DataFrame:
    """A ``.npy`` file as its array (no pickles), a CSV/parquet file as a DataFrame
    (:func:`read_table`); raises ValueError naming the file."""
    path = check_file(path, SUFFIXES)
    if path.suffix.lower() != ".npy":
        return read_table(path, SUFFIXES)
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path}: not a readable .npy file ({err})") from None


def numeric_column(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    """``frame[column]`` as an array; a ValueError naming ``path`` and the column if it is not numeric."""
    values = frame[column]
    if not pd.api.types.is_numeric_dtype(values):
        raise ValueError(f"{path}: column {column!r} has dtype {values.dtype}; expected numbers")
    return values.to_numpy()


def load_labels(path: str | Path, column: str | None = None) -> torch.Tensor:
    """Integer labels (N,) from a 1-D .npy array or a table column (default: ``label``, or the only column)."""
    path = Path(path)
    data = read_array_or_table(path)
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
        values = numeric_column(data, column, path)
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
    """Teacher probabilities (N, C) float64 with rows summing to 1, and labels if ``labels_column`` names a column.

    A .npy file holds the (N, C) array.  In a table the probabilities are ``prob_columns``,
    else a list-valued ``probs`` column (as ptdistill writes teacher outputs), else every
    numeric column other than the labels column and ``id``/``label``/``labels``.

    Rows may sum to 1 as closely as a bfloat16 softmax does, whatever the stored dtype, or as CSV
    values rounded to 2 or more decimals allow (see :func:`ptdistill.checks.user_tolerance`);
    such rows are renormalised in float64, with one warning giving the largest deviation. Rows
    further off, all-zero rows, values above 1 or negative values are a ValueError naming the row.
    """
    path = Path(path)
    data = read_array_or_table(path)
    name = str(path)
    if isinstance(data, np.ndarray):
        if labels_column:
            raise ValueError(f"{path}: a .npy file has no columns; pass the labels with --labels")
        if data.ndim != 2:
            raise ValueError(f"{path}: expected a 2-D array (examples, classes), got shape {data.shape}")
        if not np.issubdtype(data.dtype, np.floating):
            raise ValueError(f"{path}: expected floating-point probabilities, got dtype {data.dtype}")
        if data.dtype not in (np.float16, np.float32, np.float64):  # torch has no long double
            data = data.astype(np.float64)
        probs = torch.from_numpy(data)
        return normalize_probs(name, probs), None
    labels = None
    if labels_column is not None:
        if labels_column not in data.columns:
            raise ValueError(f"{path}: no labels column {labels_column!r}; columns are {list(data.columns)}")
        labels = _as_labels(numeric_column(data, labels_column, path), path, labels_column)
    if prob_columns:
        missing = [c for c in prob_columns if c not in data.columns]
        if missing:
            raise ValueError(f"{path}: probability columns {missing} not found; columns are {list(data.columns)}")
        columns = prob_columns
    elif "probs" in data.columns and not pd.api.types.is_numeric_dtype(data["probs"]):
        try:
            probs = torch.from_numpy(np.stack([np.asarray(v) for v in data["probs"]]).astype(np.float64))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{path}: column 'probs' must hold equal-length lists of numbers ({err})") from None
        return normalize_probs(name, probs), labels
    else:
        columns = [c for c in data.columns if c != labels_column and str(c).lower() not in NON_PROB_COLUMNS]
    for column in columns:
        numeric_column(data, column, path)
    if len(columns) < 2:
        raise ValueError(f"{path}: expected at least 2 probability columns, found {columns}")
    columns = in_class_order(columns, [str(k) for k in range(len(columns))])
    probs = torch.from_numpy(np.ascontiguousarray(data[columns].to_numpy(dtype=np.float64)))
    decimals = csv_decimals(path, columns) if path.suffix.lower() == ".csv" else None
    return normalize_probs(name, probs, tolerance=user_tolerance(len(columns), decimals=decimals)), labels


def in_class_order(columns: list, class_names: list[str]) -> list:
    """``columns`` reordered to ``class_names`` when they are named exactly after the classes (as
    strings, in any order: a file whose columns read ``1, 0`` holds class 1 first); else unchanged,
    taken by position."""
    by_name = {str(c): c for c in columns}
    if len(by_name) == len(columns) and sorted(by_name) == sorted(class_names):
        return [by_name[name] for name in class_names]
    return list(columns)


def csv_decimals(path: Path, columns: list[str]) -> int:
    """The most digits after the decimal point among ``columns`` of a CSV (``1.5e-05`` has 6): the
    precision the values were written with."""
    raw = read_table(path, (".csv",), {"dtype": str, "keep_default_na": False, "usecols": columns})
    most = 0
    for column in columns:
        parts = raw[column].str.extract(_NUMBER)
        digits = parts[0].fillna("").str.len() - pd.to_numeric(parts[1]).fillna(0)
        if len(digits):
            most = max(most, int(digits.max()))
    return most


# --------------------------------------------------------------------------- writing files


#: Names of in-flight temporary files start with this (``LocalStore.list`` skips them).
TMP_PREFIX = ".ptdistill-tmp-"


def write_atomic(path: str | Path, write: Callable[[IO[bytes]], object],
                 publish: Callable[[str, Path], None] = os.replace) -> Path:
    """``write(file)`` into a temporary file beside ``path``, then ``publish(temporary, path)`` it.

    ``publish`` is ``os.replace`` (overwrite) or a create-only ``os.link`` (see
    ``LocalStore.write_if_absent``). Readers see the old file, no file, or the complete new one,
    never a half-written one; the temporary file (``.ptdistill-tmp-<name>.<hex>.tmp``) is removed
    whatever happens. The file is created with mode 0o666 minus the process umask (0644 under the
    usual umask 022), like any file ``open`` creates, not with ``tempfile.mkstemp``'s private 0600.
    The one atomic writer of the project.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TMP_PREFIX}{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        publish(str(tmp), path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | Path, payload: dict) -> Path:
    """Write JSON to ``path`` atomically."""
    return write_atomic(path, lambda handle: handle.write(json.dumps(payload, indent=1).encode()))


def write_parquet_atomic(path: str | Path, table: pa.Table) -> Path:
    """Write a parquet file to ``path`` atomically."""
    return write_atomic(path, lambda handle: pq.write_table(table, handle))


def read_parquet_table(path: str | Path, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> pa.Table:
    """A parquet file's table with the ``required`` columns; a missing, empty or unreadable file (or a
    directory), or a missing column, is a ValueError naming the file and what was expected."""
    path = check_file(path)
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
