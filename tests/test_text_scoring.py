"""Teacher inference (ptdistill.families.text.scoring): verbalizer scores against a hand computation,
batching / bucketing invariance, classification teachers against an unbatched forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from text_fixtures import tiny_bert, tiny_gpt2, tiny_t5

from ptdistill.arrays import softmax_probs
from ptdistill.families.text.models import HFModelSpec, load_classifier, load_generative, load_tokenizer
from ptdistill.families.text.scoring import TeacherScorer, Verbalizer, teacher_logits, verbalizer_logits
from ptdistill.families.text.split import TextSplit

# slow: builds and scores tiny transformer models.
pytestmark = pytest.mark.slow

TEXT_A = [
    "the movie was good",
    "an awful, boring film and not fun at all",
    "it is great",
    "this was a very bad movie with the worst dialogue of the year, so boring",
    "fun",
    "good acting but a bad plot",
    "the music is great and the cast is great",
    "not so good",
    "a film",
    "yes",
    "it was fun, very fun, and the plot works",
]
TEXT_B = ["a b", "the plot", "no", "it is bad", "yes it is", "c d e", "premise", "x", "the film is fun", "q", "z z"]
PAIRS = TextSplit(TEXT_A, TEXT_B)
WORDS = ("positive", "not_entailment", "bad")  # not_entailment is several tokens for both tokenizers
PROMPT = "review: {text_a} question: {text_b} sentiment:"


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    spec = HFModelSpec(str(tiny_t5(tmp_path_factory.mktemp("t5"))), kind="seq2seq")
    return spec, load_generative(spec, device="cpu"), load_tokenizer(spec)


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    spec = HFModelSpec(str(tiny_gpt2(tmp_path_factory.mktemp("gpt2"))), kind="causal")
    return spec, load_generative(spec, device="cpu"), load_tokenizer(spec)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("bert"), num_labels=3)


# ----------------------------------------------------------------------------------------- Verbalizer


def test_verbalizer_formats_prompts_and_validates():
    v = Verbalizer("mnli hypothesis: {text_b} premise: {text_a}", ["yes", "maybe", "no"])
    assert v.label_words == ("yes", "maybe", "no") and v.num_classes == 3 and v.needs_text_b
    assert v.format(TextSplit(["p1", "p2"], ["h1", "h2"])) == ["mnli hypothesis: h1 premise: p1",
                                                            "mnli hypothesis: h2 premise: p2"]
    with pytest.raises(ValueError, match="text_b"):
        v.format(TextSplit(["p1"]))
    single = Verbalizer("sst2 sentence: {text_a} {{braces}}", ("negative", "positive"))
    assert single.format(TextSplit(["a {x} b"])) == ["sst2 sentence: a {x} b {braces}"]
    for prompt, words, match in [
        ("{text_a} {label}", ("a", "b"), "unknown field"),
        ("{0}", ("a", "b"), "unknown field"),
        ("no fields", ("a", "b"), "text_a"),
        ("{text_a", ("a", "b"), "not a valid template"),
        ("{text_a}", "ab", "single string"),
        ("{text_a}", ("a",), "at least 2"),
        ("{text_a}", ("a", "a"), "distinct"),
        ("{text_a}", ("a", " "), r"label_words\[1\]"),
    ]:
        with pytest.raises(ValueError, match=match):
            Verbalizer(prompt, words)


def test_softmax_probs():
    logits = np.array([[0.0, 1.0, 2.0], [1000.0, -1000.0, 0.0], [3.0, 3.0, 3.0]], dtype=np.float32)
    probs = softmax_probs(logits)
    assert probs.dtype == np.float64 and probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(probs[0], np.exp([0, 1, 2]) / np.exp([0, 1, 2]).sum(), rtol=1e-12)
    np.testing.assert_allclose(probs[1], [1.0, 0.0, 0.0], atol=1e-300)
    np.testing.assert_allclose(probs[2], 1 / 3)
    with pytest.raises(ValueError, match="non-finite"):
        softmax_probs(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="shape"):
        softmax_probs(np.zeros(3))


# ----------------------------------------------------------------------------------------- seq2seq


def _hand_seq2seq(model, tokenizer, prompt: str, word: str, include_eos: bool, max_length: int = 128) -> float:
    """log p(word [</s>] | prompt), one decoder step at a time with explicit decoder_input_ids."""
    source = torch.tensor([tokenizer(prompt, truncation=True, max_length=max_length)["input_ids"]])
    target = tokenizer(word, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if include_eos else [])
    total, decoded = 0.0, [model.config.decoder_start_token_id]
    with torch.no_grad():
        for token in target:
            logits = model(input_ids=source, decoder_input_ids=torch.tensor([decoded])).logits[0, -1]
            total += torch.log_softmax(logits.double(), dim=-1)[token].item()
            decoded.append(token)
    return total


@pytest.mark.parametrize("include_eos", [True, False])
def test_seq2seq_scores_match_hand_computation(t5, include_eos):
    _, model, tokenizer = t5
    assert len(tokenizer("not_entailment", add_special_tokens=False)["input_ids"]) >= 2
    verbalizer = Verbalizer(PROMPT, WORDS, include_eos=include_eos)
    scores = verbalizer_logits(model, tokenizer, PAIRS, verbalizer, batch_size=4)
    assert scores.shape == (len(PAIRS), 3) and scores.dtype == np.float32
    for i in (0, 3):  # a short and the longest example (others in its batch are padded)
        prompt = verbalizer.format(PAIRS)[i]
        hand = [_hand_seq2seq(model, tokenizer, prompt, word, include_eos) for word in WORDS]
        np.testing.assert_allclose(scores[i], hand, atol=1e-5, rtol=0)


def test_seq2seq_truncates_prompts_to_max_length(t5):
    _, model, tokenizer = t5
    verbalizer = Verbalizer(PROMPT, WORDS)
    prompt = verbalizer.format(PAIRS)[3]
    assert len(tokenizer(prompt)["input_ids"]) > 10
    scores = verbalizer_logits(model, tokenizer, PAIRS, verbalizer, batch_size=3, max_length=10)
    hand = [_hand_seq2seq(model, tokenizer, prompt, word, True, max_length=10) for word in WORDS]
    np.testing.assert_allclose(scores[3], hand, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------- causal


def _hand_causal(model, tokenizer, prompt: str, word: str) -> float:
    """log p(tokens of " word" | prompt): prompt + " " + word tokenised, one forward per continuation token."""
    prompt_ids = tokenizer(prompt)["input_ids"]
    full = tokenizer(prompt + " " + word)["input_ids"]
    assert full[: len(prompt_ids)] == prompt_ids and len(full) > len(prompt_ids)
    total = 0.0
    with torch.no_grad():
        for t in range(len(prompt_ids), len(full)):
            logits = model(input_ids=torch.tensor([full[:t]])).logits[0, -1]
            total += torch.log_softmax(logits.double(), dim=-1)[full[t]].item()
    return total


def test_causal_scores_match_hand_computation(gpt2):
    _, model, tokenizer = gpt2
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # load_tokenizer set it
    prompt_ids = tokenizer("sentiment:")["input_ids"]
    assert len(tokenizer("sentiment: not_entailment")["input_ids"]) - len(prompt_ids) >= 2
    verbalizer = Verbalizer(PROMPT, WORDS)
    scores = verbalizer_logits(model, tokenizer, PAIRS, verbalizer, batch_size=4)
    assert scores.shape == (len(PAIRS), 3) and scores.dtype == np.float32
    for i in (3, 4):  # the longest and a short example (left-padded in its batch)
        prompt = verbalizer.format(PAIRS)[i]
        hand = [_hand_causal(model, tokenizer, prompt, word) for word in WORDS]
        np.testing.assert_allclose(scores[i], hand, atol=1e-5, rtol=0)


def test_causal_keeps_the_end_of_long_prompts(gpt2):
    _, model, tokenizer = gpt2
    verbalizer = Verbalizer("{text_a} sentiment:", WORDS)
    prompt = verbalizer.format(PAIRS)[3]
    prompt_ids = tokenizer(prompt)["input_ids"]
    assert len(prompt_ids) > 12
    scores = verbalizer_logits(model, tokenizer, PAIRS, verbalizer, batch_size=5, max_length=12)
    hand = []
    with torch.no_grad():
        for word in WORDS:
            full = tokenizer(prompt + " " + word)["input_ids"]
            context, total = prompt_ids[-12:], 0.0
            for token in full[len(prompt_ids):]:
                logits = model(input_ids=torch.tensor([context])).logits[0, -1]
                total += torch.log_softmax(logits.double(), dim=-1)[token].item()
                context = context + [token]
            hand.append(total)
    np.testing.assert_allclose(scores[3], hand, atol=1e-5, rtol=0)


# ----------------------------------------------------------------------------------------- both


@pytest.mark.parametrize("kind", ["t5", "gpt2"])
def test_scores_do_not_depend_on_order_or_batching(kind, request):
    _, model, tokenizer = request.getfixturevalue(kind)
    verbalizer = Verbalizer(PROMPT, WORDS)
    reference = verbalizer_logits(model, tokenizer, PAIRS, verbalizer, batch_size=1)
    np.testing.assert_allclose(verbalizer_logits(model, tokenizer, PAIRS, verbalizer, batch_size=7), reference,
                               atol=1e-5, rtol=0)
    perm = np.random.default_rng(0).permutation(len(PAIRS))
    shuffled = verbalizer_logits(model, tokenizer, PAIRS.take(perm), verbalizer, batch_size=3)
    np.testing.assert_allclose(shuffled, reference[perm], atol=1e-5, rtol=0)
    assert np.isfinite(reference).all() and model.training is False


def test_teacher_scorer_generative(t5, gpt2):
    verbalizer = Verbalizer(PROMPT, WORDS)
    for spec, model, tokenizer in (t5, gpt2):
        expected = verbalizer_logits(model, tokenizer, PAIRS, verbalizer, batch_size=4)
        got = teacher_logits(spec, PAIRS, verbalizer, num_labels=3, device="cpu")
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    scorer = TeacherScorer(t5[0], verbalizer, device="cpu")
    probs = scorer.probs(PAIRS)
    assert probs.shape == (len(PAIRS), 3) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    with pytest.raises(ValueError, match="verbalizer: required"):
        TeacherScorer(t5[0])
    with pytest.raises(ValueError, match="does not match"):
        TeacherScorer(t5[0], verbalizer, num_labels=2)
    with pytest.raises(ValueError, match="text_b"):
        teacher_logits(t5[0], TextSplit(["a"]), verbalizer, device="cpu")


# ----------------------------------------------------------------------------------------- classification


def test_classification_teacher_matches_unbatched_forward(bert_dir):
    spec = HFModelSpec(str(bert_dir), batch_size=4)
    scorer = TeacherScorer(spec, device="cpu")
    assert scorer.num_labels == 3
    got = scorer.logits(PAIRS)
    assert got.shape == (len(PAIRS), 3) and got.dtype == np.float32
    model = load_classifier(spec, 3, device="cpu", training=False)
    tokenizer = load_tokenizer(spec)
    expected, without_types = [], []
    with torch.no_grad():
        for a, b in zip(TEXT_A, TEXT_B):
            inputs = tokenizer(a, b, return_tensors="pt")
            assert inputs["token_type_ids"].sum() > 0
            expected.append(model(**inputs).logits[0].numpy())
            inputs["token_type_ids"].zero_()
            without_types.append(model(**inputs).logits[0].numpy())
    np.testing.assert_allclose(got, np.array(expected), atol=1e-5, rtol=0)
    assert np.abs(got - np.array(without_types)).max() > 1e-4  # token_type_ids reach the model
    singles = TextSplit(TEXT_A)
    with torch.no_grad():
        single = np.array([model(**tokenizer(a, return_tensors="pt")).logits[0].numpy() for a in TEXT_A])
    np.testing.assert_allclose(teacher_logits(spec, singles, num_labels=3, device="cpu"), single, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="own head"):
        TeacherScorer(spec, Verbalizer(PROMPT, WORDS))
