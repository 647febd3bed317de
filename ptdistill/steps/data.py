"""prepare_data: build the four splits of the distillation protocol and open the MLflow parent run."""

from __future__ import annotations

from pathlib import Path

from ptdistill.experiments import ExperimentConfig, GaussianData, TabularData, TextData
from ptdistill.extras import require
from ptdistill.families.mlp.gaussians import GaussianTask, make_splits
from ptdistill.families.mlp.split import FeatureSplit
from ptdistill.families.mlp.tabular import SUFFIXES as TABULAR_SUFFIXES
from ptdistill.families.mlp.tabular import load_tabular, split_tabular, standardize
from ptdistill.families.text import data as text
from ptdistill.families.text.data import TEXT_TASKS
from ptdistill.families.text.models import check_max_length
from ptdistill.steps.common import RunInfo, log
from ptdistill.storage import check_location, content_key, is_remote
from ptdistill.tracking import RECIPE_TAG, Tracker, git_commit

SPLITS = ("teacher_train", "distill", "validation", "test")


def check_config(config: ExperimentConfig) -> None:
    """Check everything about ``config`` that needs no data, touching no file, bucket or hub.

    What ``compile``, ``submit`` and ``schedule`` check on the submitting machine (their data may be
    100 GB, in a bucket, or reachable from the cluster only): the data keys and the syntax of every
    location (``data.path``, ``data.source``, ``*.model.name_or_path``: a local path, a hub id or
    a well-formed ``gs://`` URI, never rewritten), then :meth:`ExperimentConfig.validate` with the
    class count when the config alone gives it (synthetic, a paper task, ``data.class_names``);
    the checks that need the count otherwise run in prepare_data (:func:`build_splits`).
    """
    data = config.data
    if isinstance(data, GaussianData):
        missing = sorted(set(SPLITS) - set(data.sizes))
        if missing:
            raise ValueError(f"data.sizes: missing {missing}; expected sizes for {list(SPLITS)}")
    elif isinstance(data, TabularData):
        if not data.path:
            raise ValueError("data.path: the tabular benchmark needs a CSV or parquet file (--set data.path=FILE)")
        _check_location("data.path", data.path, suffixes=TABULAR_SUFFIXES)
    elif isinstance(data, TextData):
        _check_text_data(data)
    config.validate(_known_num_classes(config))


def _check_location(key: str, location: str, **kwargs) -> None:
    try:
        check_location(location, **kwargs)
    except ValueError as err:
        raise ValueError(f"{key}: {err}") from None


def _check_text_data(data: TextData) -> None:
    if data.task and data.path:
        raise ValueError(f"data: set either data.task ({data.task!r}) or data.path ({data.path!r}), not both")
    if data.path:
        _check_location("data.path", data.path, suffixes=text.TEXT_SUFFIXES)
        return
    if data.task not in text.TEXT_TASKS:
        raise ValueError(f"data.task: expected one of {', '.join(text.TEXT_TASKS)} or data.path=FILE for your own"
                         f" data, got {data.task!r}")
    if data.source is not None:
        _check_location("data.source", data.source, folder=True)
        if data.revision is not None:
            raise ValueError(f"data.revision: {data.revision!r} applies to the hub only; with data.source set, pin"
                             " the data by the copy you point at (a checkout or a bucket prefix of that revision)")


def _known_num_classes(config: ExperimentConfig) -> int | None:
    """The class count the config alone gives, or None when only the data tells (a table, a text file)."""
    data = config.data
    if isinstance(data, GaussianData):
        return data.num_classes
    if isinstance(data, TextData):
        if data.path:
            return len(data.class_names) if data.class_names else None
        return TEXT_TASKS[data.task].num_classes
    return None


def remote_data(config: ExperimentConfig) -> bool:
    """Whether the config's data (``data.path`` or ``data.source``) is in object storage."""
    return any(is_remote(getattr(config.data, key, None) or "") for key in ("path", "source"))


def build_splits(config: ExperimentConfig) -> tuple[dict[str, FeatureSplit], list[str]]:
    """The four splits and the class names: reads the data (local, ``gs://`` or the hub) and fails on
    bad data, on a config the class count rules out, and (for text) on a ``max_length`` above a
    model's position limit, before anything is written. Everything :func:`check_config` checks
    is checked first, so a bad config fails without reading any data."""
    check_config(config)
    data = config.data
    if isinstance(data, GaussianData):
        task = GaussianTask(num_classes=data.num_classes, dim=data.dim, sigma=data.sigma, data_seed=data.data_seed)
        splits, class_names = make_splits(task, data.sizes, seed=data.split_seed), [str(c) for c in range(data.num_classes)]
    elif isinstance(data, TabularData):
        features, labels, class_names = load_tabular(data.path, data.label_column, data.feature_columns)
        try:
            splits = split_tabular(features, labels, data.fractions, seed=data.split_seed, class_names=class_names)
        except ValueError as err:
            raise ValueError(f"{data.path}: {err}") from None
        # Scaled with teacher-train statistics only: no model sees validation/test statistics.
        splits = standardize(splits)[0]
    elif isinstance(data, TextData):
        require("text", "ptdistill.families.text")  # one line naming the extra, before any text is read
        splits, class_names = _text_splits(data)
        _check_text_models(config)
    else:
        raise ValueError(f"data: unsupported data config {type(data).__name__}")
    config.validate(len(class_names))
    return splits, class_names


def _check_text_models(config: ExperimentConfig) -> None:
    """Each model's max_length against its checkpoint's position limit (only its config is read)."""
    for key in ("student",) if config.teacher.outputs else ("teacher", "student"):  # given outputs: no teacher
        check_max_length(getattr(config, key).model, f"{key}.model")


def _text_splits(data: TextData) -> tuple[dict, list[str]]:
    """A paper task through ``datasets`` (docs/method.md §7.3), rotten-tomatoes, or your own text file
    (keys checked by :func:`check_config`)."""
    if data.path:
        split, class_names = text.load_text_file(data.path, data.text_columns, data.label_column, data.class_names)
        try:
            return text.split_fractions(split, data.fractions, seed=data.split_seed, class_names=class_names), class_names
        except ValueError as err:
            raise ValueError(f"{data.path}: {err}") from None
    info = text.TEXT_TASKS[data.task]
    sizes = data.sizes or dict(info.sizes)
    if data.task == "rotten-tomatoes":
        splits, report = text.rotten_tomatoes_splits(sizes, seed=data.split_seed)
    else:
        train, test = text.load_task(data.task, source=data.source, revision=data.revision)
        splits, report = text.protocol_split(train, test, sizes, seed=data.split_seed)
    log.info("%s splits: %s", data.task, report)
    return splits, list(info.class_names)


def prepare_data(
    config: ExperimentConfig,
    run_name: str,
    tracking_uri: str,
    artifact_store: str,
    outputs: dict[str, Path],
    run_info: Path,
) -> RunInfo:
    """Write the splits to ``outputs[split]``, start the parent run, write the run info."""
    splits, class_names = build_splits(config)
    for name in SPLITS:
        splits[name].save(outputs[name])
        log.info("%s: %d examples", name, len(splits[name]))
    fingerprint = content_key({name: splits[name].fingerprint() for name in SPLITS})
    parent = Tracker(tracking_uri).start_parent(
        config.benchmark,
        run_name,
        tags={"kfp.run_name": run_name, "kfp.pipeline_name": f"ptdistill-{config.benchmark}",
              "benchmark": config.benchmark, "data_fingerprint": fingerprint, RECIPE_TAG: config.recipe,
              "git_commit": git_commit() or "unknown"},
        params={"seeds": config.seeds, "methods": [m.name for m in config.methods],
                **{f"data.{k}": v for k, v in vars(config.data).items()}},
    )
    info = RunInfo(
        benchmark=config.benchmark,
        run_name=run_name,
        parent_run_id=parent,
        tracking_uri=tracking_uri,
        artifact_store=artifact_store,
        fingerprint=fingerprint,
        num_classes=len(class_names),
        class_names=class_names,
    )
    info.save(run_info)
    return info
