"""Tokenising a :class:`TextSplit` once, and batching it with dynamic padding.

Inference sorts examples by token length before batching (length bucketing), so a batch pads
to its own longest example rather than the split's: on this corpus of review snippets that
halves the padded tokens. Training batches are drawn in a seeded random order and padded the
same dynamic way. Both paths share :func:`encode` and :func:`collate`, so an example is
tokenised identically for teacher, student and evaluation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ptdistill.families.text.split import TextSplit

__all__ = ["bucketed_batches", "classification_logits", "collate", "encode", "model_device"]


#: One tokenised example: ``input_ids`` and, for BERT-style pair encodings, ``token_type_ids``.
Encoded = dict[str, list[int]]


def encode(tokenizer, split: TextSplit, max_length: int) -> list[Encoded]:
    """Token ids of every example (sentence pairs joined the tokenizer's way), truncated to ``max_length``."""
    if max_length < 8:
        raise ValueError(f"max_length: expected at least 8 tokens, got {max_length}")
    encoded = tokenizer(split.text_a, split.text_b, truncation=True, max_length=max_length,
                        return_attention_mask=False)
    keys = [k for k in ("input_ids", "token_type_ids") if k in encoded]
    return [{k: list(encoded[k][i]) for k in keys} for i in range(len(split))]


def collate(tokenizer, examples: list[Encoded], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Right-pad ``examples`` to the longest one: ``input_ids``, ``attention_mask`` (and ``token_type_ids``)."""
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token first")
    width = max(len(e["input_ids"]) for e in examples)
    batch = {"input_ids": torch.full((len(examples), width), tokenizer.pad_token_id, dtype=torch.long),
             "attention_mask": torch.zeros((len(examples), width), dtype=torch.long)}
    if "token_type_ids" in examples[0]:
        batch["token_type_ids"] = torch.zeros((len(examples), width), dtype=torch.long)
    for row, example in enumerate(examples):
        size = len(example["input_ids"])
        batch["attention_mask"][row, :size] = 1
        for key, values in example.items():
            batch[key][row, :size] = torch.tensor(values, dtype=torch.long)
    return {k: v.to(device) for k, v in batch.items()}


def bucketed_batches(lengths: list[int] | np.ndarray, batch_size: int) -> Iterator[np.ndarray]:
    """Row indices in batches of similar length, longest first (an out-of-memory error shows at once)."""
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    for lo in range(0, len(order), batch_size):
        yield order[lo : lo + batch_size]


def model_device(model: torch.nn.Module) -> torch.device:
    """Where the model's inputs go: its first parameter's device (the embedding layer under ``device_map``)."""
    return next(model.parameters()).device


def classification_logits(
    model: torch.nn.Module,
    tokenizer,
    split: TextSplit,
    batch_size: int = 64,
    max_length: int = 128,
    progress: bool = False,
) -> np.ndarray:
    """Logits (n, C) float32 of a sequence-classification model, in the split's order, in eval mode."""
    sequences = encode(tokenizer, split, max_length)
    device = model_device(model)
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    batches = list(bucketed_batches([len(s["input_ids"]) for s in sequences], batch_size))
    with torch.inference_mode():
        for rows in tqdm(batches, desc="classify", unit="batch", disable=not progress):
            logits = model(**collate(tokenizer, [sequences[i] for i in rows], device)).logits.float().cpu().numpy()
            if out is None:
                out = np.empty((len(split), logits.shape[1]), dtype=np.float32)
            out[rows] = logits
    model.train(was_training)
    return out
