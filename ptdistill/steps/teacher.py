"""train_teacher and teacher inference, with the content-addressed teacher-output cache.

Teacher inference runs as one step (:func:`teacher_inference`) or, for a teacher too large or
too slow for one pod, as ``k = config.inference_shards`` shards (:func:`teacher_inference_shard`,
fanned out by ``dsl.ParallelFor``) merged by :func:`merge_teacher_shards`. Both ways write the
same teacher-output table (:func:`outputs_frame`) and fill the cache under the same key
(:meth:`_Teacher.cache_key`), so a sharded run is served from the cache an unsharded run
filled, and the other way round.

Sharding is deterministic: shard ``i`` of ``k`` takes the contiguous block :func:`shard_rows`
of each split's rows in file order (``numpy.array_split``: the first ``n % k`` shards get one
row more; with ``n < k`` the last shards get none). A shard first checks the cache key of each
split and runs no inference on a cached split. The merge puts the blocks back in the split's
order by example id, and writes nothing unless the shards cover every row of a split exactly once.

Examples per second are wall-clock rates (rows over the span from the first start to the last
finish of the runs counted), reported per split, per shard and overall in the teacher report.
"""

from __future__ import annotations

import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from ptdistill.arrays import softmax_probs
from ptdistill.evaluation import evaluate
from ptdistill.experiments import ExperimentConfig
from ptdistill.families import backend_for
from ptdistill.families.backend import Backend
from ptdistill.io import write_json_atomic
from ptdistill.steps.common import RunInfo, checkpoint_prefix, clear_checkpoints, log, publish, solo_threads
from ptdistill.storage import Store, content_key, open_store
from ptdistill.teacher_outputs import CACHE_VERSION as OUTPUTS_VERSION
from ptdistill.teacher_outputs import NEEDED, teacher_outputs
from ptdistill.tracking import Tracker, validation_curve_png

#: Bumped when the teacher-output format or the inference code changes meaning.
CACHE_VERSION = 2
#: Bumped when teacher training changes what a recipe produces (keys the trained-teacher cache).
#: 2: an entry carries the teacher's checkpoint selection (TRAINING_FILE, ``training`` in its summary).
TRAINED_CACHE_VERSION = 2
#: Written next to a trained teacher's weights: which epoch's weights it kept and its validation
#: curve (:meth:`ptdistill.engine.History.selection`); it travels with the teacher and its cache entry.
TRAINING_FILE = "training.json"
#: What describes a shard's part directory (next to ``<split>.parquet`` for each split it ran on).
SHARD_SUMMARY = "shard.json"


def trained_teacher_key(config: ExperimentConfig, num_classes: int, teacher_train: Path, validation: Path) -> str | None:
    """Where a trained teacher is cached: its recipe (:meth:`Backend.teacher_recipe`), the
    fingerprints of the two splits it learns from and the class count; None for a teacher that
    is not trained here."""
    backend = backend_for(config)
    recipe = backend.teacher_recipe(config)
    if recipe is None:
        return None
    data = [backend.load_split(path).fingerprint() for path in (teacher_train, validation)]
    return "cache/trained-teacher/" + content_key(TRAINED_CACHE_VERSION, recipe, data, num_classes)


def train_teacher(config: ExperimentConfig, info: RunInfo, teacher_train: Path, validation: Path, out_dir: Path) -> dict:
    """Train (or pin, for a pretrained teacher) the benchmark's teacher into ``out_dir``.

    With ``config.cache_teacher`` a teacher trained before from the same recipe and data is
    copied from the artifact store instead (``cache: hit`` in the summary and the parent's
    ``teacher_train_cache`` tag): experiments that vary only the students or the search stop
    paying for the teacher each run. A new entry's files go under a unique folder first and its
    ``entry.json`` (which names that folder) is created only if absent, last: a crash mid-upload
    leaves no entry, and of two runs training the same teacher at once (on a GPU, not
    necessarily to the same weights) the first to finish wins and the other removes its copy,
    so an entry never mixes files of two teachers.

    A teacher trained here (now or from the cache) has its checkpoint selection in ``training``
    and in TRAINING_FILE, and on the parent run (:func:`log_teacher_training`).
    """
    solo_threads()
    out_dir = Path(out_dir)
    store = open_store(info.artifact_store)
    key = trained_teacher_key(config, info.num_classes, teacher_train, validation) if config.cache_teacher else None
    if key is not None and store.exists(f"{key}/entry.json"):
        entry = json.loads(store.read_text(f"{key}/entry.json"))
        store.download_dir(f"{key}/{entry['folder']}", out_dir)
        summary = entry["summary"] | {"cache": "hit"}
        log.info("teacher: cache hit (%s), training skipped", store.uri(key))
    else:
        summary = backend_for(config).train_teacher(config, info.num_classes, Path(teacher_train), Path(validation),
                                                    out_dir, checkpoint_prefix(info, "teacher"))
        clear_checkpoints(info, "teacher")
        if summary["training"] is not None:
            write_json_atomic(out_dir / TRAINING_FILE, summary["training"])
        if key is not None:
            folder = f"model-{uuid.uuid4().hex}"
            store.upload_dir(f"{key}/{folder}", out_dir)
            entry = json.dumps({"folder": folder, "summary": summary}).encode()
            if not store.write_if_absent(f"{key}/entry.json", entry):
                for stale in store.list(f"{key}/{folder}/"):  # another run cached this recipe first
                    store.delete(stale)
        summary["cache"] = "miss" if key is not None else "off"
    Tracker(info.tracking_uri).set_tags(info.parent_run_id, {"teacher_id": summary["teacher_id"],
                                                             "teacher_train_cache": summary["cache"]})
    log_teacher_training(info, summary["training"])
    publish(info, "teacher", out_dir)
    return summary


def log_teacher_training(info: RunInfo, training: dict | None) -> None:
    """The teacher's checkpoint selection on the parent run; nothing for a teacher not trained here (None).

    Tag ``teacher_select``; metrics ``teacher_epochs_run`` and, with validation, the selected
    epoch's ``teacher_selected_epoch``, ``teacher_val_accuracy``, ``teacher_val_nll`` (nats),
    ``teacher_val_ece`` as scored during training (teacher inference's ``teacher_validation_*``,
    measured later on the weights kept, must agree up to float rounding); the curves
    ``teacher_epoch_val_accuracy``, ``teacher_epoch_val_nll`` and ``teacher_epoch_val_ece`` (step =
    epoch, 1-based); and the plot ``teacher_validation_curve.png`` of NLL and accuracy per epoch
    with the selected epoch marked.
    """
    if training is None:
        return
    tracker = Tracker(info.tracking_uri)
    curve = training["curve"]
    metrics = {"teacher_epochs_run": training["epochs_run"]}
    if training["epoch"] is not None:
        metrics |= {"teacher_selected_epoch": training["epoch"], **{
            f"teacher_val_{k}": training[f"val_{k}"] for k in ("accuracy", "nll", "ece")}}
    tracker.log_metrics(info.parent_run_id, metrics, curves={
        f"teacher_epoch_val_{k}": list(zip(curve["epoch"], curve[k])) for k in ("accuracy", "nll", "ece")})
    tracker.set_tags(info.parent_run_id, {"teacher_select": training["select"]})
    if curve["epoch"]:
        with tempfile.TemporaryDirectory(prefix="ptdistill-teacher-") as tmp:
            tracker.log_parent_artifacts(info.parent_run_id, [validation_curve_png(
                curve, training["epoch"], training["select"], Path(tmp) / "teacher_validation_curve.png")])


def teacher_training(teacher_dir: Path) -> dict | None:
    """The checkpoint selection train_teacher wrote next to the teacher (TRAINING_FILE); None for a
    teacher not trained here (a pretrained one)."""
    path = Path(teacher_dir) / TRAINING_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def outputs_frame(ids: np.ndarray, logits: np.ndarray, teacher_id: str) -> pd.DataFrame:
    """The teacher-output table: id, logits, probs (softmax of logits) and teacher id per example."""
    logits = np.asarray(logits, dtype=np.float64)
    return pd.DataFrame({"id": ids, "logits": list(logits), "probs": list(softmax_probs(logits)), "teacher_id": teacher_id})


def read_teacher_output_probs(path: str | Path) -> np.ndarray:
    """Teacher probabilities (N, C) float64 from the ``probs`` column of a teacher-output parquet file
    that a pipeline step wrote (already checked when written; for a user's file of teacher
    probabilities, which is checked and renormalised, see :func:`ptdistill.io.load_teacher_probs`)."""
    frame = pd.read_parquet(path, columns=["probs"])
    return np.stack(frame["probs"].to_numpy()).astype(np.float64)


def shard_rows(n: int, shard: int, num_shards: int) -> np.ndarray:
    """Row positions (not ids) of shard ``shard`` (0-based) of ``num_shards`` in a split of ``n`` rows."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard: expected 0 <= shard < {num_shards}, got {shard}")
    return np.array_split(np.arange(n, dtype=np.int64), num_shards)[shard]


def throughput(timings: list[dict]) -> dict:
    """Rows, wall seconds and examples/s of the inference runs among ``timings`` (those with a start)."""
    ran = [t for t in timings if "started" in t]
    if not ran:
        return {}
    rows = sum(t["rows"] for t in ran)
    seconds = max(max(t["finished"] for t in ran) - min(t["started"] for t in ran), 1e-9)
    return {"rows": rows, "seconds": seconds, "examples_per_second": rows / seconds}


@dataclass
class _Teacher:
    """One teacher's side of inference: its backend and identity, and the cache it fills."""

    config: ExperimentConfig
    info: RunInfo
    teacher_id: str
    weights: str
    #: What besides teacher and data changes the outputs (cache key); default: the backend's inference settings.
    settings: dict | None = None
    backend: Backend = field(init=False)
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.backend = backend_for(self.config)
        self.store = open_store(self.info.artifact_store)
        if self.settings is None:
            self.settings = {**self.backend.inference_settings(self.config), "version": CACHE_VERSION}

    @classmethod
    def of(cls, config: ExperimentConfig, info: RunInfo, teacher_dir: Path) -> _Teacher:
        return cls(config, info, *backend_for(config).teacher_identity(config, Path(teacher_dir)))

    def cache_key(self, name: str, split: Any) -> str:
        """The cache key of the teacher's outputs on the whole split ``name``."""
        return ("cache/teacher/" + content_key(self.teacher_id, self.weights, split.fingerprint(), name, self.settings)
                + ".parquet")

    def logits(self, teacher_dir: Path, name: str, split: Any) -> tuple[np.ndarray, dict]:
        """The teacher's logits on ``split`` (rows of split ``name``) and how long they took."""
        started = time.time()
        logits = self.backend.teacher_logits(self.config, self.info.num_classes, Path(teacher_dir), split)
        timing = {"rows": len(split), "started": started, "finished": time.time()}
        if logits.shape != (len(split), self.info.num_classes):
            raise ValueError(f"teacher {self.teacher_id}: expected logits of shape ({len(split)}, "
                             f"{self.info.num_classes}) on {name}, got {logits.shape}")
        timing |= throughput([timing])
        log.info("teacher logits on %s: %d examples in %.2f s (%.1f ex/s)", name, len(split), timing["seconds"],
                 timing["examples_per_second"])
        return logits, timing

    def serve(self, name: str, split: Any, output: Path, make: Callable[[], tuple[pd.DataFrame, dict]]) -> dict:
        """Write the outputs on split ``name`` to ``output``: from the cache, else ``make()``'s table, then cached."""
        key = self.cache_key(name, split)
        if self.store.exists(key):
            Path(output).write_bytes(self.store.read_bytes(key))
            log.info("teacher outputs for %s: cache hit (%s), inference skipped", name, self.store.uri(key))
            return {"cache": "hit", "uri": self.store.uri(key)}
        frame, entry = make()
        frame.to_parquet(output)
        self.store.write_if_absent(key, Path(output).read_bytes())
        log.info("teacher outputs for %s cached at %s", name, self.store.uri(key))
        return {"cache": "miss", "uri": self.store.uri(key), **entry}

    def finish(self, report: dict, splits: dict[str, Any], outputs: dict[str, Path], timings: list[dict]) -> dict:
        """Score the labeled splits and log it all to the parent run: metrics, examples/s, cache outcome."""
        tracker = Tracker(self.info.tracking_uri)
        for name, split in splits.items():
            if split.labels is not None:
                metrics = evaluate(read_teacher_output_probs(outputs[name]), split.labels, split.p_star,
                                   self.config.task_metric)
                entry = report["splits"][name]
                entry["metrics"] = {k: v for k, v in metrics.items() if not isinstance(v, list)}
                tracker.log_metrics(self.info.parent_run_id,
                                    {f"teacher_{name}_{k}": v for k, v in entry["metrics"].items()})
        report |= throughput(timings)
        if "examples_per_second" in report:
            tracker.log_metrics(self.info.parent_run_id, {"teacher_examples_per_second": report["examples_per_second"]})
        tracker.set_tags(self.info.parent_run_id, {"teacher_cache": ",".join(
            f"{n}:{r['cache']}" for n, r in report["splits"].items())})
        return report


def teacher_inference(
    config: ExperimentConfig, info: RunInfo, teacher_dir: Path, splits: dict[str, Path], outputs: dict[str, Path]
) -> dict:
    """Teacher probabilities on each split, served from the cache when teacher, data and settings match.

    The report (what the report step reads) carries the teacher's checkpoint selection as
    ``training`` (:func:`teacher_training`; None for a teacher not trained here).
    """
    solo_threads()
    teacher = _Teacher.of(config, info, teacher_dir)
    loaded = {name: teacher.backend.load_split(path) for name, path in splits.items()}
    report: dict = {"teacher_id": teacher.teacher_id, "training": teacher_training(teacher_dir), "splits": {}}
    for name, split in loaded.items():
        report["splits"][name] = teacher.serve(name, split, outputs[name],
                                               partial(_whole_split, teacher, teacher_dir, name, split))
    return teacher.finish(report, loaded, outputs, list(report["splits"].values()))


def _whole_split(teacher: _Teacher, teacher_dir: Path, name: str, split: Any) -> tuple[pd.DataFrame, dict]:
    logits, timing = teacher.logits(teacher_dir, name, split)
    return outputs_frame(split.ids, logits, teacher.teacher_id), timing


def teacher_inference_shard(config: ExperimentConfig, info: RunInfo, teacher_dir: Path, splits: dict[str, Path],
                            shard: int, num_shards: int, out_dir: Path) -> dict:
    """Shard ``shard`` of ``num_shards``: the teacher's outputs on its block of each split not yet cached.

    Writes ``<out_dir>/<split>.parquet`` (an :func:`outputs_frame` table of the block) for each
    split it ran on and ``<out_dir>/shard.json``, the summary it returns. Uses the threads the
    runner gives it (no :func:`solo_threads`: shards run side by side).
    """
    teacher = _Teacher.of(config, info, teacher_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary: dict = {"shard": shard, "num_shards": num_shards, "teacher_id": teacher.teacher_id,
                     "weights": teacher.weights, "training": teacher_training(teacher_dir), "splits": {}}
    for name, path in splits.items():
        split = teacher.backend.load_split(path)
        key, rows = teacher.cache_key(name, split), shard_rows(len(split), shard, num_shards)
        entry: dict = {"key": key, "rows": len(rows)}
        if teacher.store.exists(key):
            log.info("shard %d/%d, %s: cache hit (%s), inference skipped", shard, num_shards, name,
                     teacher.store.uri(key))
            entry["cache"] = "hit"
        else:
            entry["cache"] = "miss"
            if len(rows):
                block = split.take(rows)
                logits, timing = teacher.logits(teacher_dir, name, block)
                outputs_frame(block.ids, logits, teacher.teacher_id).to_parquet(out_dir / f"{name}.parquet")
                entry |= timing
        summary["splits"][name] = entry
    summary |= throughput(list(summary["splits"].values()))
    (out_dir / SHARD_SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary


def merge_teacher_shards(config: ExperimentConfig, info: RunInfo, parts: list[Path], splits: dict[str, Path],
                         outputs: dict[str, Path]) -> dict:
    """The shards' parts (directories written by :func:`teacher_inference_shard`) as one teacher output per split.

    Same outputs, cache entries and MLflow logging as :func:`teacher_inference`; the report
    adds each shard's summary (``shards``) and wall-clock examples/s per split and overall.
    Raises ``ValueError`` naming the split and the ids when the shards do not cover a split
    that is not cached exactly once.
    """
    parts = [Path(p) for p in parts]
    summaries = [json.loads((p / SHARD_SUMMARY).read_text()) for p in parts]
    identities = {(s["teacher_id"], s["weights"]) for s in summaries}
    if len(identities) != 1:
        raise ValueError(f"teacher shards: expected the parts of one teacher, got {len(parts)} part(s) of "
                         f"{sorted(t for t, _ in identities)}")
    teacher = _Teacher(config, info, *identities.pop())
    loaded = {name: teacher.backend.load_split(path) for name, path in splits.items()}
    report: dict = {"teacher_id": teacher.teacher_id, "training": summaries[0]["training"], "splits": {},
                    "shards": sorted(summaries, key=lambda s: s["shard"])}
    for name, split in loaded.items():
        report["splits"][name] = teacher.serve(name, split, outputs[name],
                                               partial(_merged_split, teacher, parts, summaries, name, split))
    timings = [entry for s in summaries for entry in s["splits"].values()]
    return teacher.finish(report, loaded, outputs, timings)


def _merged_split(teacher: _Teacher, parts: list[Path], summaries: list[dict], name: str,
                  split: Any) -> tuple[pd.DataFrame, dict]:
    ran = [(p, s) for p, s in zip(parts, summaries) if "started" in s["splits"][name]]
    pieces = [pd.read_parquet(p / f"{name}.parquet", columns=["id", "logits"]) for p, _ in ran]
    ids = np.concatenate([np.empty(0, np.int64), *(piece["id"].to_numpy(np.int64) for piece in pieces)])
    counts = "/".join(str(k) for k in sorted({s["num_shards"] for s in summaries}))
    shards = f"parts of shards {sorted(s['shard'] for s in summaries)} of {counts}"
    check_coverage(name, split.ids, ids, shards)
    logits = np.concatenate([np.stack(piece["logits"].to_numpy()) for piece in pieces])
    order = pd.Index(ids).get_indexer(split.ids)
    entry = {**throughput([s["splits"][name] for _, s in ran]), "shards": len(ran)}
    return outputs_frame(split.ids, logits[order], teacher.teacher_id), entry


def import_teacher_outputs(config: ExperimentConfig, info: RunInfo, splits: dict[str, Path],
                           outputs: dict[str, Path]) -> dict:
    """The teacher outputs of ``config.teacher.outputs`` (scored elsewhere) as teacher_inference's outputs.

    ``splits`` holds all four splits (teacher-train only to tell its rows from rows of other data);
    ``outputs`` the distill, validation and test files to write, the same ``outputs_frame`` tables
    as inference writes. The file is checked and aligned before anything is written
    (:mod:`ptdistill.teacher_outputs`; ValueError naming the file otherwise). Cached under a key
    of the file's sha256, the declared kind, the class names and each split's fingerprint; the
    report gives the test metrics of the given outputs and ``source`` (URI, sha256, kind).
    """
    solo_threads()
    spec = config.teacher
    if not spec.outputs:
        raise ValueError("teacher.outputs: not set; import_teacher_outputs needs the URI of the teacher's outputs")
    backend = backend_for(config)
    loaded = {name: backend.load_split(path) for name, path in splits.items()}
    given, rows = teacher_outputs(spec.outputs, spec.outputs_kind, info.class_names,
                                  {name: split.ids for name, split in loaded.items()})
    source = given.describe()
    teacher = _Teacher(config, info, f"outputs:{given.sha256[:16]}", given.sha256,
                       {"outputs_kind": spec.outputs_kind, "classes": info.class_names, "version": OUTPUTS_VERSION})
    report: dict = {"teacher_id": teacher.teacher_id, "source": source, "training": None, "splits": {}}
    needed = {name: loaded[name] for name in NEEDED}
    for name, split in needed.items():
        frame = pd.DataFrame({"id": split.ids, "logits": list(given.logits[rows[name]]),
                              "probs": list(given.probs[rows[name]]), "teacher_id": teacher.teacher_id})
        report["splits"][name] = teacher.serve(name, split, outputs[name], lambda frame=frame: (frame, {}))
    log.info("teacher outputs from %s (sha256 %s, %s%s): no teacher trained or run", given.uri, given.sha256[:12],
             given.kind, " detected" if given.detected else "")
    Tracker(info.tracking_uri).set_tags(info.parent_run_id, {
        "teacher_id": teacher.teacher_id, "teacher_outputs": given.uri, "teacher_outputs_sha256": given.sha256,
        "teacher_outputs_kind": given.kind})
    return teacher.finish(report, needed, outputs, [])


def check_coverage(name: str, expected: np.ndarray, got: np.ndarray, shards: str = "") -> None:
    """Raise ``ValueError`` naming split ``name`` unless ``got`` holds every id of ``expected`` exactly once."""
    values, counts = np.unique(got, return_counts=True)
    problems = [f"{len(ids)} {what} {_some(ids)}" for what, ids in (
        ("missing id(s)", np.setdiff1d(expected, got)), ("duplicate id(s)", values[counts > 1]),
        ("id(s) not in the split", np.setdiff1d(got, expected))) if len(ids)]
    if problems:
        raise ValueError(f"teacher shards do not cover split {name!r} exactly once ({shards or 'no shard info'}): "
                         + "; ".join(problems))


def _some(ids: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(i)) for i in ids[:limit])
    return f"[{shown}{', ...' if len(ids) > limit else ''}]"
