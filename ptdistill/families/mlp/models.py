"""The MLP teacher and students of the synthetic and tabular benchmarks.

Saved Hugging Face style, a directory with ``config.json`` and ``model.pt`` (the state dict),
so a pipeline step can hand a trained model to the next one and a cache can key on
:func:`weights_hash`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ptdistill.checks import int_at_least
from ptdistill.config import from_dict, to_dict
from ptdistill.io import write_atomic, write_json_atomic

__all__ = ["ACTIVATIONS", "CONFIG_NAME", "WEIGHTS_NAME", "MLP", "MLPConfig", "weights_hash"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.pt"
ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "silu": nn.SiLU}


@dataclass
class MLPConfig:
    """Architecture of an :class:`MLP`: ``input_dim -> hidden... -> num_classes`` logits.

    The default is the paper's 2-layer ReLU MLP with 128 hidden units per layer (docs/method.md §7.1,
    KDD'24 §5.1).
    """

    input_dim: int
    num_classes: int
    hidden: tuple[int, ...] = (128, 128)
    activation: str = "relu"

    def __post_init__(self) -> None:
        int_at_least("input_dim", self.input_dim, 1)
        int_at_least("num_classes", self.num_classes, 2)
        if isinstance(self.hidden, (str, bytes)) or not hasattr(self.hidden, "__iter__"):
            raise ValueError(f"hidden: expected a sequence of layer widths, got {self.hidden!r}")
        self.hidden = tuple(self.hidden)  # JSON gives a list
        for i, width in enumerate(self.hidden):
            int_at_least(f"hidden[{i}]", width, 1)
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")



class MLP(nn.Module):
    """Fully connected classifier returning logits (B, num_classes)."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.input_dim
        for hidden in config.hidden:
            layers += [nn.Linear(width, hidden), ACTIVATIONS[config.activation]()]
            width = hidden
        layers.append(nn.Linear(width, config.num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.layers(features)

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json`` and ``model.pt`` (state dict, on CPU) into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        write_atomic(directory / WEIGHTS_NAME, lambda handle: torch.save(state, handle))
        write_json_atomic(directory / CONFIG_NAME, to_dict(self.config))
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path, map_location: str | torch.device = "cpu") -> MLP:
        """Load a model written by :meth:`save_pretrained`."""
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        missing = [p.name for p in (config_path, weights_path) if not p.is_file()]
        if missing:
            raise ValueError(
                f"{directory}: missing {', '.join(missing)}; expected a directory written by MLP.save_pretrained"
            )
        try:
            data = json.loads(config_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{config_path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{config_path}: expected a JSON object, got {type(data).__name__}")
        try:
            config = from_dict(MLPConfig, data)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{config_path}: {err}") from None
        model = cls(config)
        state = _load_state(weights_path, map_location)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{weights_path}: weights do not match {config_path.name} ({err})") from None
        return model.to(map_location)


def _load_state(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises assorted types for corrupt files
        raise ValueError(f"{path}: not a readable state dict ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state dict of tensors")
    return state


def weights_hash(directory: str | Path) -> str:
    """sha256 of the saved weights' names, dtypes, shapes and values, for cache keys.

    Hashing tensor contents rather than ``model.pt``'s bytes keeps the key stable across torch
    serialisation changes.
    """
    directory = Path(directory)
    path = directory / WEIGHTS_NAME
    if not path.is_file():
        raise ValueError(f"{directory}: missing {WEIGHTS_NAME}; expected a directory written by MLP.save_pretrained")
    digest = hashlib.sha256()
    for name, tensor in sorted(_load_state(path).items()):
        tensor = tensor.detach().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
