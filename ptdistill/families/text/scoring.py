"""Teacher inference: class logits of a classification model or of an LM through a verbalizer.

A classification teacher's logits come from :func:`ptdistill.families.text.batching.classification_logits`.
A generative teacher (T5 / Flan-T5, or a decoder-only LM) scores each class by its label word:
the class logit is the SUM of the log-probabilities of the label word's tokens given the prompt
(:func:`verbalizer_logits`), and the class probabilities are the softmax of those scores over the
C classes (:func:`ptdistill.arrays.softmax_probs`) — the LM's distribution renormalised over the label words.

Seq2seq (``model.config.is_encoder_decoder``): the prompt goes through the encoder once per
batch; the decoder is run with teacher forcing on the C label-token sequences at once (the
encoder states repeated C times, label sequences right-padded, padding masked out of the sum).
The label tokens are ``tokenizer(word, add_special_tokens=False)`` followed by EOS when
``Verbalizer.include_eos`` (T5 emits ``label </s>``; scoring EOS too compares a word against a
longer word it is a prefix of properly). The decoder starts from
``config.decoder_start_token_id`` (T5: the pad id). Prompts longer than ``max_length`` tokens
are truncated on the right, as T5 was trained. One batch's scores are
:func:`seq2seq_class_scores`, differentiable: fine-tuning a seq2seq teacher on its verbalizer
(:class:`ptdistill.families.text.verbalizer_model.VerbalizerClassifier`) trains exactly these scores.

Causal: the class c text is ``prompt + separator + word`` (``separator`` defaults to one space).
Its tokens are those of the full string; the prompt part is the longest prefix the full string's
tokens share with the prompt's own tokenisation (and with the other classes'), so a tokenizer
that merges across the boundary is still scored on one common context. The class score is the
sum of the log-probabilities of the tokens after that prefix. Sequences are LEFT-padded, with
``position_ids`` counted from each row's first real token, so every row ends at the last column
and only the last ``max label tokens + 1`` positions' logits are computed (``logits_to_keep``).
Each example is run as C sequences (prompt + word c); prompts longer than ``max_length`` keep
their last ``max_length`` tokens (the instruction at the end of a causal prompt matters most),
and a leading BOS is kept. ``include_eos`` does not apply to causal scoring.
"""

from __future__ import annotations

import inspect
import string
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ptdistill.arrays import softmax_probs
from ptdistill.families.text.batching import bucketed_batches, classification_logits, collate, encode, model_device
from ptdistill.families.text.models import (
    HFModelSpec,
    checkpoint_num_labels,
    load_classifier,
    load_generative,
    load_tokenizer,
)
from ptdistill.families.text.split import TextSplit

__all__ = [
    "Seq2SeqLabels", "TeacherScorer", "Verbalizer", "seq2seq_class_scores", "seq2seq_labels",
    "teacher_logits", "verbalizer_logits",
]

_FIELDS = ("text_a", "text_b")


@dataclass(frozen=True)
class Verbalizer:
    """A prompt template and one label word per class (in class order).

    ``prompt`` uses ``{text_a}`` and optionally ``{text_b}`` (``str.format`` fields; write ``{{``
    for a literal brace), e.g. ``"sst2 sentence: {text_a}"`` or ``"mnli hypothesis: {text_b}
    premise: {text_a}"``. ``include_eos`` (seq2seq): score the EOS after the label word too.
    ``separator`` (causal): what joins the prompt and the label word.
    """

    prompt: str
    label_words: tuple[str, ...]
    include_eos: bool = True
    separator: str = " "

    def __post_init__(self) -> None:
        if not isinstance(self.prompt, str):
            raise ValueError(f"prompt: expected a template string, got {type(self.prompt).__name__}")
        try:
            fields = [name for _, name, _, _ in string.Formatter().parse(self.prompt) if name is not None]
        except ValueError as err:
            raise ValueError(f"prompt: not a valid template ({err}): {self.prompt!r}") from None
        bad = sorted({name for name in fields if name not in _FIELDS})
        if bad:
            raise ValueError(f"prompt: unknown field(s) {bad} in {self.prompt!r}; expected {{text_a}} and optionally "
                             "{text_b} (write {{ and }} for literal braces)")
        if "text_a" not in fields and "text_b" not in fields:
            raise ValueError(f"prompt: expected a {{text_a}} (and optionally {{text_b}}) field, got {self.prompt!r}")
        if isinstance(self.label_words, str):
            raise ValueError(f"label_words: expected one word per class, got a single string {self.label_words!r}")
        words = tuple(self.label_words)
        if len(words) < 2:
            raise ValueError(f"label_words: expected at least 2 classes, got {list(words)}")
        for i, word in enumerate(words):
            if not isinstance(word, str) or not word.strip():
                raise ValueError(f"label_words[{i}]: expected a non-empty string, got {word!r}")
        if len(set(words)) != len(words):
            raise ValueError(f"label_words: expected distinct words, got {list(words)}")
        if not isinstance(self.include_eos, bool):
            raise ValueError(f"include_eos: expected a bool, got {self.include_eos!r}")
        if not isinstance(self.separator, str):
            raise ValueError(f"separator: expected a string, got {self.separator!r}")
        object.__setattr__(self, "label_words", words)

    @property
    def num_classes(self) -> int:
        return len(self.label_words)

    @property
    def needs_text_b(self) -> bool:
        return any(name == "text_b" for _, name, _, _ in string.Formatter().parse(self.prompt))

    def format(self, split: TextSplit) -> list[str]:
        """The prompt of every example of ``split``, in order."""
        if self.needs_text_b and split.text_b is None:
            raise ValueError(f"prompt {self.prompt!r} uses {{text_b}} but the split has no text_b (single sentences)")
        text_b = split.text_b if split.text_b is not None else [""] * len(split)
        return [self.prompt.format(text_a=a, text_b=b) for a, b in zip(split.text_a, text_b)]

    def prompt_split(self, split: TextSplit) -> TextSplit:
        """``split`` with each example's prompt as ``text_a`` (no ``text_b``), its labels and ids kept:
        what a seq2seq verbalizer's encoder reads, e.g. to fine-tune it with ``fit_text``."""
        return TextSplit(self.format(split), labels=split.labels, ids=split.ids)


def verbalizer_logits(
    model: torch.nn.Module,
    tokenizer,
    split: TextSplit,
    verbalizer: Verbalizer,
    batch_size: int = 64,
    max_length: int = 128,
    progress: bool = False,
) -> np.ndarray:
    """Class scores (n, C) float32: summed log-probs of each label word's tokens given the prompt.

    ``model`` is a seq2seq LM (``config.is_encoder_decoder``) or a causal LM; see the module
    docstring for how each is scored. Rows are in the split's order; ``batch_size`` counts
    examples (a batch runs ``batch_size * C`` label sequences). The model is left in the train /
    eval mode it came in.
    """
    if max_length < 8:
        raise ValueError(f"max_length: expected at least 8 tokens, got {max_length}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an integer >= 1, got {batch_size}")
    prompts = verbalizer.format(split)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if getattr(model.config, "is_encoder_decoder", False):
                return _seq2seq_scores(model, tokenizer, prompts, verbalizer, batch_size, max_length, progress)
            return _causal_scores(model, tokenizer, prompts, verbalizer, batch_size, max_length, progress)
    finally:
        model.train(was_training)


def _token_log_probs(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over positions of log softmax(logits)[target], where ``mask``; logits (R, L, V) -> (R,) float32."""
    targets, mask = targets.to(logits.device), mask.to(logits.device)  # under device_map, logits are on the last GPU
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.where(mask.bool(), logp, 0.0).sum(dim=-1)  # not logp * mask: a masked -inf would give nan


def _decoder_start(model) -> int:
    for source in (model.config, getattr(model, "generation_config", None)):
        start = getattr(source, "decoder_start_token_id", None) if source is not None else None
        if start is not None:
            return int(start)
    pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        raise ValueError(f"{type(model).__name__}: no decoder_start_token_id (or pad_token_id) in its config")
    return int(pad)


@dataclass(frozen=True)
class Seq2SeqLabels:
    """A seq2seq verbalizer's C label-token sequences, right-padded to the longest (W tokens), on CPU.

    ``targets`` (C, W) long: the label tokens (``+ EOS`` when ``include_eos``), 0 after the end;
    ``decoder_inputs`` (C, W) long: the decoder start token then the targets shifted right;
    ``mask`` (C, W) float32: 1.0 on real label tokens.
    """

    targets: torch.Tensor
    decoder_inputs: torch.Tensor
    mask: torch.Tensor


def seq2seq_labels(model, tokenizer, verbalizer: Verbalizer) -> Seq2SeqLabels:
    """The teacher-forcing tensors of ``verbalizer``'s label words for the seq2seq ``model``."""
    labels = []
    for word in verbalizer.label_words:
        ids = list(tokenizer(word, add_special_tokens=False)["input_ids"])
        if verbalizer.include_eos:
            if tokenizer.eos_token_id is None:
                raise ValueError(f"include_eos: tokenizer {type(tokenizer).__name__} has no eos token")
            ids.append(tokenizer.eos_token_id)
        if not ids:
            raise ValueError(f"label word {word!r} tokenizes to no tokens")
        labels.append(ids)
    num_classes, width = len(labels), max(len(ids) for ids in labels)
    start = _decoder_start(model)
    targets = torch.zeros((num_classes, width), dtype=torch.long)
    decoder_inputs = torch.full((num_classes, width), start, dtype=torch.long)
    mask = torch.zeros((num_classes, width), dtype=torch.float32)
    for c, ids in enumerate(labels):
        targets[c, : len(ids)] = torch.tensor(ids)
        decoder_inputs[c, 1 : len(ids)] = torch.tensor(ids[:-1])
        mask[c, : len(ids)] = 1.0
    return Seq2SeqLabels(targets, decoder_inputs, mask)


def seq2seq_class_scores(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         labels: Seq2SeqLabels) -> torch.Tensor:
    """Class scores (B, C) float32 of a batch of prompts: summed log-probs of each label's tokens.

    ``input_ids`` / ``attention_mask`` (B, L): the prompts' token ids, right-padded (``collate``). The
    encoder runs once; the decoder runs teacher-forced on the B * C (prompt, label) pairs, row
    ``b * C + c`` being example b, class c. Differentiable: :func:`verbalizer_logits` calls it
    under ``inference_mode``, :class:`ptdistill.families.text.verbalizer_model.VerbalizerClassifier` with
    gradients (fine-tuning the LM on its verbalizer's class scores).
    """
    device = input_ids.device
    targets, decoder_inputs, mask = (t.to(device) for t in (labels.targets, labels.decoder_inputs, labels.mask))
    num_classes, n = targets.shape[0], input_ids.shape[0]
    hidden = model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    logits = model(
        encoder_outputs=(hidden.repeat_interleave(num_classes, dim=0),),
        attention_mask=attention_mask.repeat_interleave(num_classes, dim=0),
        decoder_input_ids=decoder_inputs.repeat(n, 1),
        decoder_attention_mask=mask.long().repeat(n, 1),
        use_cache=False,
    ).logits
    return _token_log_probs(logits, targets.repeat(n, 1), mask.repeat(n, 1)).view(n, num_classes)


def _seq2seq_scores(model, tokenizer, prompts, verbalizer, batch_size, max_length, progress) -> np.ndarray:
    device = model_device(model)
    sources = encode(tokenizer, TextSplit(prompts), max_length)  # as fit_text encodes a prompt_split
    sources = [{"input_ids": s["input_ids"]} for s in sources]
    labels = seq2seq_labels(model, tokenizer, verbalizer)
    out = np.empty((len(prompts), verbalizer.num_classes), dtype=np.float32)
    batches = list(bucketed_batches([len(s["input_ids"]) for s in sources], batch_size))
    for rows in tqdm(batches, desc="verbalize", unit="batch", disable=not progress):
        batch = collate(tokenizer, [sources[i] for i in rows], device)
        out[rows] = seq2seq_class_scores(model, batch["input_ids"], batch["attention_mask"], labels).cpu().numpy()
    return out


def _common_prefix(sequences: list[list[int]]) -> int:
    first, size = sequences[0], min(len(s) for s in sequences)
    for k in range(size):
        if any(s[k] != first[k] for s in sequences[1:]):
            return k
    return size


def _accepts(model, name: str) -> bool:
    """Whether ``model.forward`` names ``name`` (arguments swallowed by ``**kwargs`` are not passed)."""
    return name in inspect.signature(model.forward).parameters


def _causal_scores(model, tokenizer, prompts, verbalizer, batch_size, max_length, progress) -> np.ndarray:
    device = model_device(model)
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token; set tokenizer.pad_token first "
                         "(load_tokenizer sets it to the eos token)")
    num_classes = verbalizer.num_classes
    prompt_ids = tokenizer(prompts, return_attention_mask=False)["input_ids"]
    full_ids = [tokenizer([p + verbalizer.separator + word for p in prompts], return_attention_mask=False)["input_ids"]
                for word in verbalizer.label_words]
    bos = tokenizer.bos_token_id
    prefixes: list[list[int]] = []
    continuations: list[list[list[int]]] = []
    for i, prompt in enumerate(prompt_ids):
        fulls = [list(full_ids[c][i]) for c in range(num_classes)]
        j = _common_prefix([list(prompt), *fulls])
        if j == 0:
            raise ValueError(f"example {i}: the prompt and label words share no leading token (empty prompt?)")
        conts = [full[j:] for full in fulls]
        for c, cont in enumerate(conts):
            if not cont:
                raise ValueError(f"example {i}: label word {verbalizer.label_words[c]!r} adds no tokens to the prompt")
        prefix = list(prompt[:j])
        if len(prefix) > max_length:
            keep_bos = bos is not None and prefix[0] == bos
            prefix = prefix[:1] + prefix[len(prefix) - max_length + 1 :] if keep_bos else prefix[-max_length:]
        prefixes.append(prefix)
        continuations.append(conts)
    pass_positions = _accepts(model, "position_ids")
    keep_logits = _accepts(model, "logits_to_keep")
    pad = tokenizer.pad_token_id
    out = np.empty((len(prompts), num_classes), dtype=np.float32)
    lengths = [len(p) + max(len(c) for c in conts) for p, conts in zip(prefixes, continuations)]
    batches = list(bucketed_batches(lengths, batch_size))
    for rows in tqdm(batches, desc="verbalize", unit="batch", disable=not progress):
        sequences = [(prefixes[i], cont) for i in rows for cont in continuations[i]]  # row b * C + c
        width = max(len(p) + len(c) for p, c in sequences)
        tail = max(len(c) for _, c in sequences)
        input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
        attention = torch.zeros((len(sequences), width), dtype=torch.long)
        target_mask = torch.zeros((len(sequences), tail), dtype=torch.float32)
        for r, (prefix, cont) in enumerate(sequences):
            size = len(prefix) + len(cont)
            input_ids[r, width - size :] = torch.tensor(prefix + cont)
            attention[r, width - size :] = 1
            target_mask[r, tail - len(cont) :] = 1.0
        inputs = {"input_ids": input_ids.to(device), "attention_mask": attention.to(device)}
        if pass_positions:
            inputs["position_ids"] = (attention.cumsum(-1) - 1).clamp(min=0).to(device)
        if keep_logits:
            inputs["logits_to_keep"] = tail + 1
        logits = model(**inputs, use_cache=False).logits[:, -(tail + 1) : -1]
        scores = _token_log_probs(logits, inputs["input_ids"][:, width - tail :], target_mask.to(device))
        out[rows] = scores.view(len(rows), num_classes).cpu().numpy()
    return out


class TeacherScorer:
    """A teacher loaded once per ``spec.kind``, giving class logits (n, C) float32 for splits.

    ``kind="classification"``: the checkpoint's classification head (``num_labels`` defaults to
    its config's); no verbalizer. ``"seq2seq"`` / ``"causal"``: a :class:`Verbalizer` is required
    and ``num_labels``, if given, must equal its number of label words. Loading happens here;
    :meth:`logits` is inference only (time it for examples per second).
    """

    def __init__(
        self,
        spec: HFModelSpec,
        verbalizer: Verbalizer | None = None,
        num_labels: int | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if spec.kind == "classification":
            if verbalizer is not None:
                raise ValueError("verbalizer: a classification teacher uses its own head; pass verbalizer=None")
            if num_labels is None:
                num_labels = checkpoint_num_labels(spec)
        else:
            if verbalizer is None:
                raise ValueError(f"verbalizer: required for a {spec.kind} teacher (prompt and label words)")
            if num_labels is not None and num_labels != verbalizer.num_classes:
                raise ValueError(f"num_labels: {num_labels} does not match the verbalizer's "
                                 f"{verbalizer.num_classes} label words {list(verbalizer.label_words)}")
            num_labels = verbalizer.num_classes
        self.spec, self.verbalizer, self.num_labels = spec, verbalizer, num_labels
        self.tokenizer = load_tokenizer(spec)
        if spec.kind == "classification":
            self.model = load_classifier(spec, num_labels, device=device, training=False)
        else:
            self.model = load_generative(spec, device=device)

    def logits(self, split: TextSplit, progress: bool = False) -> np.ndarray:
        """Class logits (n, C) float32 of ``split``, in its order."""
        spec = self.spec
        if spec.kind == "classification":
            logits = classification_logits(self.model, self.tokenizer, split, spec.batch_size, spec.max_length,
                                           progress)
        else:
            logits = verbalizer_logits(self.model, self.tokenizer, split, self.verbalizer, spec.batch_size,
                                       spec.max_length, progress)
        if logits.shape != (len(split), self.num_labels):
            raise ValueError(f"teacher logits: expected shape {(len(split), self.num_labels)}, got {logits.shape}")
        return logits

    __call__ = logits

    def probs(self, split: TextSplit, progress: bool = False) -> np.ndarray:
        """Class probabilities (n, C) float64: :func:`ptdistill.arrays.softmax_probs` of :meth:`logits`."""
        return softmax_probs(self.logits(split, progress))


def teacher_logits(
    spec: HFModelSpec,
    split: TextSplit,
    verbalizer: Verbalizer | None = None,
    num_labels: int | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Load the teacher of ``spec`` and return its class logits (n, C) float32 on ``split``."""
    return TeacherScorer(spec, verbalizer, num_labels, device).logits(split, progress)
