"""The benchmark protocol's splits, shared by every model family: their names, the checks of a
split's labels and ids, and the one stratified split rule of own data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from numbers import Real
from types import MappingProxyType

import numpy as np

__all__ = ["DEFAULT_FRACTIONS", "MIN_CLASS_ROWS", "MIN_ROWS", "SPLITS", "check_ids", "check_split_labels", "show_class",
           "stratified_rows"]

log = logging.getLogger(__name__)

#: The benchmark's split names, in protocol order; ``distill`` is unlabeled.
SPLITS = ("teacher_train", "distill", "validation", "test")
#: Fewer rows than this cannot fill four non-empty splits with any useful size.
MIN_ROWS = 10
DEFAULT_FRACTIONS: Mapping[str, float] = MappingProxyType(
    {"teacher_train": 0.2, "distill": 0.5, "validation": 0.1, "test": 0.2}
)
#: Fewer rows of a class than this in a labeled split make its scores there rest on a handful of
#: rows: :func:`stratified_rows` warns, naming the class and its rows per split.
MIN_CLASS_ROWS = 5


def show_class(value: object) -> str:
    """A class as the user wrote it in a message: ``0`` for a number, ``'fresh'`` for a name."""
    text = str(value.item() if isinstance(value, np.generic) else value)
    return text if text.lstrip("+-").isdigit() or text in ("True", "False") else repr(text)


def check_split_labels(labels, n: int, against: str) -> np.ndarray:
    """Class indices of a split as a writable int64 copy (parquet arrays are read-only); ``against``
    names what their length must match."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer class indices, got dtype {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},) to match {against}, got {labels.shape}")
    if labels.min() < 0:
        raise ValueError(f"labels: expected class indices >= 0, got {int(labels.min())}")
    return np.array(labels, dtype=np.int64)


def check_ids(ids, n: int) -> np.ndarray:
    """Unique int64 example ids of a split of ``n`` examples; ``None`` gives ``0..n-1``."""
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids)
    if not np.issubdtype(ids.dtype, np.integer) or ids.shape != (n,):
        raise ValueError(f"ids: expected integers of shape ({n},), got dtype {ids.dtype} shape {ids.shape}")
    if len(np.unique(ids)) != n:
        raise ValueError("ids: expected unique example ids, found duplicates")
    return np.ascontiguousarray(ids, dtype=np.int64)


def stratified_rows(
    labels: np.ndarray,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Row numbers (sorted int64) of each named part of a seeded split (names from ``SPLITS``, fractions
    summing to 1), stratified by ``labels`` (n,).

    Sizes are ``floor(fraction * n)`` with the left-over rows given to the largest remainders,
    so they add up to n. Each class is shared out in proportion: the rows of class k in split s
    are ``n_k * size_s / n`` rounded down or up (:func:`_allocate`), drawn from a seeded
    permutation of the class's rows. Every class must appear in every labeled split (all but
    ``distill``): a class with fewer rows than there are labeled splits is a ValueError naming
    it and its count; a class that would get no row of a labeled split by proportion gets one
    from its largest split (another class gives one back where it can, else that split grows
    by a row). A class with fewer than ``MIN_CLASS_ROWS`` rows in a labeled split is logged as
    a warning with its rows per split. ``class_names[k]`` names label k in messages.

    Every family splits its own data through this one rule, so numeric and text data split alike.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels: expected shape (n,), got {labels.shape}")
    unknown = sorted(set(fractions) - set(SPLITS))
    if unknown or not fractions:
        raise ValueError(f"fractions: unknown or no split names {unknown}; expected names from {list(SPLITS)}")
    for name, fraction in fractions.items():
        if isinstance(fraction, bool) or not isinstance(fraction, Real) or not 0 < fraction <= 1:
            raise ValueError(f"fractions[{name!r}]: expected a number in (0, 1], got {fraction!r}")
    total = sum(fractions.values())
    if abs(total - 1) > 1e-6:
        raise ValueError(f"fractions: expected values summing to 1, got {total:.6g}")
    n = len(labels)
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
    return {name: np.sort(np.concatenate(part)) for name, part in zip(names, parts)}


def _allocate(
    class_counts: np.ndarray, sizes: np.ndarray, labeled: list[int], shown: list[str], names: list[str]
) -> np.ndarray:
    """Rows of each class per split, (K, S) int: row sums ``class_counts``, column sums ``sizes``.

    Controlled rounding of ``n_k * size_s / n``: every cell is that value rounded down or, where
    it is not whole, up (:func:`_cells_to_round_up`), so each cell is less than one row from its
    exact share. Then every class gets at least one row in each ``labeled`` split (see
    :func:`stratified_rows`).
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
