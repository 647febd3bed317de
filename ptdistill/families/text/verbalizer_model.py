"""Fine-tuning a seq2seq LM teacher on its verbalizer's class scores ("T5 with label words").

:class:`VerbalizerClassifier` wraps a seq2seq LM (T5 / Flan-T5) and a :class:`Verbalizer` into
the sequence classifier :func:`ptdistill.families.text.trainer.fit_text` trains: ``forward(input_ids,
attention_mask)`` on a batch of prompts returns ``.logits`` (B, C), the summed log-probs of each
class's label-word tokens, computed by :func:`ptdistill.families.text.scoring.seq2seq_class_scores`, the
function teacher inference (:func:`ptdistill.families.text.scoring.verbalizer_logits`) runs per batch.
``fit_text``'s cross-entropy on the labels then trains the LM so that the softmax of its label
words' scores fits the labels, and the fine-tuned LM is scored at inference exactly as trained::

    model = VerbalizerClassifier(load_generative(spec, training=True), tokenizer, verbalizer)
    fit_text(model, tokenizer, verbalizer.prompt_split(train), config,
             validation=verbalizer.prompt_split(validation), max_length=spec.max_length)
    save_model(model.lm, tokenizer, out_dir)  # a plain seq2seq checkpoint

The inputs are the prompts: train on :meth:`Verbalizer.prompt_split` of a split, which fit_text
tokenises as inference does (truncated on the right at ``max_length``).

Causal LMs are not supported: their verbalizer scores each example's own tokenisation of
``prompt + separator + word`` (the boundary depends on the text), left-padded, with prompts
truncated on the left, none of which a batch of right-padded prompt token ids carries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ptdistill.families.text.scoring import Seq2SeqLabels, Verbalizer, seq2seq_class_scores, seq2seq_labels

__all__ = ["VerbalizerClassifier", "VerbalizerClassifierConfig", "VerbalizerOutput"]


@dataclass
class VerbalizerClassifierConfig:
    """What ``fit_text`` reads of a classifier's config: its number of classes."""

    num_labels: int


@dataclass
class VerbalizerOutput:
    """The forward's result: ``logits`` (B, C) float32, the class scores."""

    logits: torch.Tensor


class VerbalizerClassifier(nn.Module):
    """A seq2seq LM as a C-class sequence classifier through ``verbalizer`` (see the module docstring).

    ``lm`` is trained in place (the wrapper's parameters are the LM's); the label tokens are
    (persistent) buffers, so a ``fit_text`` checkpoint of another verbalizer is another run.
    Activation checkpointing is the LM's.
    """

    def __init__(self, lm: nn.Module, tokenizer, verbalizer: Verbalizer) -> None:
        super().__init__()
        if not isinstance(verbalizer, Verbalizer):
            raise ValueError(f"verbalizer: expected a Verbalizer, got {type(verbalizer).__name__}")
        if not getattr(getattr(lm, "config", None), "is_encoder_decoder", False):
            raise ValueError(f"{type(lm).__name__}: fine-tuning through a verbalizer supports seq2seq LMs (T5, "
                             "Flan-T5: config.is_encoder_decoder) only, not causal LMs; fine-tune a seq2seq or a "
                             "classification teacher, or score the causal LM without fine-tuning")
        self.lm = lm
        self.verbalizer = verbalizer
        self.config = VerbalizerClassifierConfig(num_labels=verbalizer.num_classes)
        labels = seq2seq_labels(lm, tokenizer, verbalizer)
        device = next(lm.parameters()).device
        self.register_buffer("label_targets", labels.targets.to(device))
        self.register_buffer("label_decoder_inputs", labels.decoder_inputs.to(device))
        self.register_buffer("label_mask", labels.mask.to(device))

    @property
    def label_tokens(self) -> Seq2SeqLabels:
        return Seq2SeqLabels(self.label_targets, self.label_decoder_inputs, self.label_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> VerbalizerOutput:
        """Class scores of a batch of prompts; ``token_type_ids`` (BERT-style collates) are ignored."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return VerbalizerOutput(seq2seq_class_scores(self.lm, input_ids, attention_mask, self.label_tokens))

    # Activation checkpointing (fit_text's config.gradient_checkpointing): the LM's.

    @property
    def supports_gradient_checkpointing(self) -> bool:
        return bool(getattr(self.lm, "supports_gradient_checkpointing", False))

    @property
    def is_activation_checkpointing(self) -> bool:
        return bool(self.lm.is_activation_checkpointing)

    def activation_checkpointing_enable(self, **kwargs) -> None:
        self.lm.activation_checkpointing_enable(**kwargs)

    def activation_checkpointing_disable(self) -> None:
        self.lm.activation_checkpointing_disable()
