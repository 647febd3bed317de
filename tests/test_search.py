"""Selection criteria, the coefficient search (Algorithm 1 and the implicit refinement), plots."""

from __future__ import annotations

import importlib.util
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill.proxy import brier, get_criterion, nll, proxy_teacher, q_score, quality, search
from ptdistill.proxy.search import flip_fraction, small_split_warning
from ptdistill.proxy.plot import plot_proxy
from ptdistill.synthetic import noisy_teacher

REFERENCE = Path(__file__).parents[2] / "shared/reference/proxy_fsolve.py"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def hand_q(q: np.ndarray, labels: np.ndarray) -> float:
    """docs/method.md §5, KDD'24 Eq. (20): Q = (mean_n ||q_n - y_n||_2)^2 + (mean_n sum_c q_nc log q_nc)^2,
    with 0 log 0 = 0."""
    y = np.eye(q.shape[-1])[labels]
    dist = np.sqrt(((q - y) ** 2).sum(-1)).mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        neg_entropy = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0)), 0.0).sum(-1).mean()
    return float(dist**2 + neg_entropy**2)


def hand_brier(q: np.ndarray, labels: np.ndarray) -> float:
    y = np.eye(q.shape[-1])[labels]
    return float(((q - y) ** 2).sum(-1).mean())


def hand_nll(q: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(q[np.arange(len(labels)), labels]).mean())


def random_probs(rng: np.random.Generator, shape) -> np.ndarray:
    p = rng.dirichlet(np.ones(shape[-1]), size=shape[:-1])
    return p


# ---------------------------------------------------------------- criteria


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(2, 12), st.integers(0, 2**32 - 1))
def test_criteria_equal_hand_computations(n, c, seed):
    rng = np.random.default_rng(seed)
    q = random_probs(rng, (n, c))
    q[0, 0] = 0.0  # a zero probability (0 log 0 = 0) ...
    q[0] /= q[0].sum()
    labels = rng.integers(0, c, n)
    labels[0] = 1  # ... not on the label, so NLL stays finite
    qt, lt = torch.from_numpy(q), torch.from_numpy(labels)
    np.testing.assert_allclose(float(quality(qt, lt)), hand_q(q, labels), rtol=1e-12)
    np.testing.assert_allclose(float(q_score(qt, lt)), hand_q(q, labels), rtol=1e-12)
    np.testing.assert_allclose(float(brier(qt, lt)), hand_brier(q, labels), rtol=1e-12)
    np.testing.assert_allclose(float(nll(qt, lt)), hand_nll(q, labels), rtol=1e-12)
    assert get_criterion("q") is q_score and get_criterion("brier") is brier and get_criterion("nll") is nll


def test_criteria_reduce_last_two_dims():
    rng = np.random.default_rng(1)
    k, n, c = 4, 17, 5
    q = random_probs(rng, (k, n, c))
    labels = rng.integers(0, c, n)
    qt, lt = torch.from_numpy(q), torch.from_numpy(labels)
    for fn, hand in ((quality, hand_q), (q_score, hand_q), (brier, hand_brier), (nll, hand_nll)):
        out = fn(qt, lt)
        assert out.shape == (k,)
        np.testing.assert_allclose(out.numpy(), [hand(q[i], labels) for i in range(k)], rtol=1e-12)


def test_quality_rejects_bad_input():
    q = torch.full((4, 3), 1 / 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="labels"):
        quality(q, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="labels"):
        quality(q, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="proxy_probs"):
        quality(torch.full((3,), 1 / 3), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"proxy_probs.*logits"):
        quality(torch.log(q), torch.tensor([0, 1, 2, 0]))
    with pytest.raises(ValueError, match="criterion"):
        get_criterion("accuracy")


# ---------------------------------------------------------------- Algorithm 1


def _load_reference():
    if not REFERENCE.exists():
        return None
    spec = importlib.util.spec_from_file_location("proxy_fsolve_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_strategy_is_algorithm_1():
    n, c, max_order, trials, seed, low, high = 30, 3, 3, 5, 7, -1.0, 10.0
    teacher, labels = noisy_teacher(n, c, seed=3)
    result = search(teacher, labels, max_order=max_order, trials=trials, low=low, high=high, seed=seed)

    # Hand-rolled Algorithm 1: one generator, one (C, M) draw per trial, strict < global argmin.
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    drawn, scores = [], []
    best_score, best_eps, best_order = np.inf, None, None
    for m in range(1, max_order + 1):
        for _ in range(trials):
            eps = rng.uniform(low, high, size=(c, m))
            q = proxy_teacher(teacher, torch.from_numpy(eps)).numpy()
            score = hand_q(q, y)
            drawn.append(eps)
            scores.append(score)
            if score < best_score:
                best_score, best_eps, best_order = score, eps, m
    np.testing.assert_array_equal(result.eps, best_eps)
    assert result.order == best_order == result.eps.shape[1]
    np.testing.assert_allclose(result.score, best_score, rtol=1e-10)
    assert result.strategy == "random" and result.criterion == "q"

    table = result.table
    assert len(table) == max_order * trials
    assert list(table["candidate"]) == list(range(max_order * trials))
    assert list(table["order"]) == [m for m in range(1, max_order + 1) for _ in range(trials)]
    assert set(table["source"]) == {"random"}
    for row, eps, score in zip(table.itertuples(), drawn, scores):
        np.testing.assert_array_equal(np.asarray(row.eps), eps)
        np.testing.assert_allclose(row.q, score, rtol=1e-10)
    assert (table["converged"] == 1.0).all() and (table["max_grad"] <= 1e-8).all()

    # The paper-style reference solver picks the same coefficients with the same score.
    ref = _load_reference()
    if ref is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_score, ref_eps = ref.search(teacher.numpy(), y, max_order, trials, low, high, seed)
        np.testing.assert_array_equal(ref_eps, result.eps)
        np.testing.assert_allclose(ref_score, result.score, rtol=1e-6)


def test_random_search_is_deterministic_per_seed():
    teacher, labels = noisy_teacher(20, 3, seed=0)
    a = search(teacher, labels, max_order=2, trials=4, seed=5)
    b = search(teacher, labels, max_order=2, trials=4, seed=5)
    c = search(teacher, labels, max_order=2, trials=4, seed=6)
    np.testing.assert_array_equal(a.eps, b.eps)
    assert a.table.drop(columns="eps").equals(b.table.drop(columns="eps"))
    assert not np.array_equal(np.asarray(a.table["eps"][0]), np.asarray(c.table["eps"][0]))


@pytest.mark.parametrize("criterion", ["brier", "nll", "q"])
def test_criterion_selects_by_its_column(criterion):
    teacher, labels = noisy_teacher(60, 4, seed=2)
    result = search(teacher, labels, max_order=2, trials=6, seed=1, criterion=criterion)
    table = result.table
    best = int(np.argmin(table[criterion].to_numpy()))
    assert result.criterion == criterion
    assert result.score == table[criterion].min()
    np.testing.assert_array_equal(result.eps, np.asarray(table["eps"][best]))
    assert result.order == table["order"][best]
    # The columns are the criteria of each candidate's proxy teacher.
    q = proxy_teacher(teacher, torch.tensor(table["eps"][3], dtype=torch.float64)).numpy()
    y = labels.numpy()
    np.testing.assert_allclose(
        [table["q"][3], table["brier"][3], table["nll"][3]],
        [hand_q(q, y), hand_brier(q, y), hand_nll(q, y)],
        rtol=1e-10,
    )


def test_criteria_can_disagree():
    # Not an assertion of the library's choice, a sanity check that the columns are distinct.
    teacher, labels = noisy_teacher(60, 4, seed=2)
    table = search(teacher, labels, max_order=1, trials=8, seed=1).table
    assert not np.allclose(table["q"], table["brier"])


@pytest.mark.parametrize("trials", [1, 3])
def test_random_search_accepts_few_trials(trials):
    teacher, labels = noisy_teacher(20, 3, seed=0)
    result = search(teacher, labels, max_order=2, trials=trials, seed=0)
    assert len(result.table) == 2 * trials


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(strategy="grid"), "strategy"),
        (dict(criterion="accuracy"), "criterion"),
        (dict(max_order=0), "max_order"),
        (dict(max_order=2.0), "max_order"),
        (dict(trials=0), "trials"),
        (dict(low=1.0, high=1.0), "low"),
        (dict(low=2.0, high=1.0), "low"),
        (dict(strategy="implicit", starts=0), "starts"),
        (dict(strategy="implicit", steps=0), "steps"),
        (dict(strategy="implicit", trials=2, starts=3), "starts"),
    ],
)
def test_bad_settings_rejected(kwargs, name):
    teacher, labels = noisy_teacher(10, 3, seed=0)
    base = dict(max_order=1, trials=2)
    with pytest.raises(ValueError, match=name):
        search(teacher, labels, **{**base, **kwargs})


@pytest.mark.parametrize(
    "labels,name",
    [
        (torch.tensor([0, 1, 2, 3, 0, 1, 2, 0, 1, 2]), "labels"),  # 3 is out of range
        (torch.tensor([0, 1, 2, -1, 0, 1, 2, 0, 1, 2]), "labels"),
        (torch.tensor([0, 1, 2]), "labels"),  # shape mismatch
        (torch.zeros(10), "labels"),  # floats
    ],
)
def test_bad_labels_rejected(labels, name):
    teacher, _ = noisy_teacher(10, 3, seed=0)
    with pytest.raises(ValueError, match=name):
        search(teacher, labels, max_order=1, trials=2)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_non_int64_labels_accepted(dtype):
    teacher, labels = noisy_teacher(20, 3, seed=0)
    expect = search(teacher, labels, max_order=1, trials=4)
    got = search(teacher, labels.to(dtype), max_order=1, trials=4)
    assert got.score == expect.score
    np.testing.assert_allclose(float(quality(teacher, labels.to(dtype))), float(quality(teacher, labels)))


def test_bad_teacher_rejected():
    teacher, labels = noisy_teacher(10, 3, seed=0)
    with pytest.raises(ValueError, match=r"teacher_probs.*logits"):
        search(torch.log(teacher), labels, max_order=1, trials=2)
    with pytest.raises(ValueError, match="teacher_probs"):
        search(teacher[0], labels[:1], max_order=1, trials=2)


# ---------------------------------------------------------------- implicit strategy


@pytest.mark.parametrize("n,c,criterion", [(80, 3, "q"), (100, 10, "brier")])
def test_implicit_never_worse_than_random(n, c, criterion):
    teacher, labels = noisy_teacher(n, c, seed=12)
    kw = dict(max_order=2, trials=6, seed=3, criterion=criterion)
    rnd = search(teacher, labels, strategy="random", **kw)
    imp = search(teacher, labels, strategy="implicit", starts=2, steps=8, **kw)
    assert imp.score <= rnd.score
    # It contains the random candidates, in the same order, first.
    head = imp.table.iloc[: len(rnd.table)]
    assert (head["source"] == "random").all()
    np.testing.assert_array_equal(head[criterion].to_numpy(), rnd.table[criterion].to_numpy())
    for a, b in zip(head["eps"], rnd.table["eps"]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    tail = imp.table.iloc[len(rnd.table) :]
    assert len(tail) == 2 * 2 and (tail["source"] == "implicit").all()
    assert set(imp.table["source"]) == {"random", "implicit"}
    assert imp.settings["starts"] == 2 and imp.settings["steps"] == 8


def test_implicit_strictly_improves_on_ten_classes():
    teacher, labels = noisy_teacher(200, 10, seed=0)
    kw = dict(max_order=2, trials=8, seed=0)
    rnd = search(teacher, labels, strategy="random", **kw)
    imp = search(teacher, labels, strategy="implicit", starts=2, steps=20, **kw)
    assert imp.score < rnd.score - 1e-6
    assert imp.table.loc[imp.table["q"].idxmin(), "source"] == "implicit"
    # The reported score is the criterion of the chosen coefficients' (re-solved) proxy teacher.
    q = proxy_teacher(teacher, torch.from_numpy(imp.eps)).numpy()
    np.testing.assert_allclose(imp.score, hand_q(q, labels.numpy()), rtol=1e-9)
    # Refined coefficients stay in [low, high].
    assert imp.eps.min() >= -1.0 and imp.eps.max() <= 10.0


# ---------------------------------------------------------------- SearchResult


def test_to_dict_is_json_and_round_trips_eps():
    teacher, labels = noisy_teacher(30, 3, seed=1)
    result = search(teacher, labels, max_order=3, trials=4, seed=7)
    d = json.loads(json.dumps(result.to_dict()))
    got = np.asarray(d["eps"], dtype=np.float64)
    assert got.shape == result.eps.shape == (3, result.order)
    np.testing.assert_array_equal(got, result.eps)
    assert d["order"] == result.order and d["score"] == result.score
    assert d["criterion"] == "q" and d["strategy"] == "random"
    assert d["settings"]["trials"] == 4 and d["settings"]["seed"] == 7
    assert len(d["candidates"]) == 12
    assert {"candidate", "order", "source", "q", "brier", "nll", "converged", "max_grad", "eps"} <= set(
        d["candidates"][0]
    )


def test_to_dict_candidates_keep_full_precision():
    teacher, labels = noisy_teacher(30, 3, seed=1)
    result = search(teacher, labels, max_order=3, trials=4, seed=7)
    d = json.loads(json.dumps(result.to_dict()))
    best = int(np.argmin([row["q"] for row in d["candidates"]]))
    np.testing.assert_array_equal(np.asarray(d["candidates"][best]["eps"]), result.eps)
    assert d["candidates"][best]["q"] == result.score


# ---------------------------------------------------------------- plot


@pytest.mark.parametrize("c", [3, 30])
def test_plot_proxy_writes_png(tmp_path, c):
    teacher, labels = noisy_teacher(60, c, seed=c)
    eps = torch.from_numpy(np.random.default_rng(0).uniform(-1, 10, (c, 2)))
    proxy = proxy_teacher(teacher, eps)
    out = plot_proxy(teacher, proxy, labels, tmp_path / "sub" / "plot.png", title=f"C={c}")
    assert out == tmp_path / "sub" / "plot.png"
    data = out.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


# --------------------------------------------------------------------------- flips and a too-small validation split

#: Three unsure rows (0.55 for class 0) and one sure one; every label says class 1.
UNSURE = torch.tensor([[0.55, 0.45]] * 3 + [[0.97, 0.03]], dtype=torch.float64)


def test_flips_are_the_share_of_teacher_decisions_the_proxy_overturns():
    """eps = (0, 1): the proxy moves to class 1 on the three unsure rows only: 3 of 4 decisions flip."""
    q = proxy_teacher(UNSURE, torch.tensor([[0.0], [1.0]], dtype=torch.float64))
    assert q[:3, 1].gt(0.5).all() and q[3, 0] > 0.5
    assert flip_fraction(q, UNSURE).item() == 0.75
    assert flip_fraction(proxy_teacher(UNSURE, torch.tensor([[1.0], [0.0]], dtype=torch.float64)), UNSURE).item() == 0


def test_every_candidate_reports_its_flips_and_the_choice_keeps_most_teacher_decisions():
    labels = torch.ones(4, dtype=torch.long)  # the labels reward a proxy that overturns the teacher
    with pytest.warns(UserWarning, match="validation split too small"):
        chosen = search(UNSURE, labels, max_order=1, trials=20, low=0.0, high=10.0)
    table = chosen.table
    for row in table.itertuples():  # each candidate's flips, by hand
        q = proxy_teacher(UNSURE, torch.tensor(row.eps, dtype=torch.float64)).numpy()
        assert row.flips == np.mean(q.argmax(1) != UNSURE.numpy().argmax(1))
    assert set(table["flips"]) == {0.0, 0.75} and (table["eligible"] == (table["flips"] <= 0.5)).all()
    best = table.loc[table["q"].idxmin()]
    assert best["flips"] == 0.75  # the criterion alone would pick a proxy that overturns 3 of 4 decisions
    assert chosen.flips == 0.0 and chosen.score == table.loc[table["eligible"], "q"].min() > best["q"]
    assert chosen.to_dict()["flips"] == 0.0 and chosen.settings["max_flips"] == 0.5

    with pytest.warns(UserWarning):
        free = search(UNSURE, labels, max_order=1, trials=20, low=0.0, high=10.0, max_flips=1.0)
    assert free.flips == 0.75 and free.score == best["q"]  # the rule off: the criterion's argmin
    with pytest.warns(UserWarning, match=re.escape("every candidate's proxy teacher flips more than max_flips=0.1 of"
                                                   " the teacher's validation decisions (fewest: 0.75); chose by q"
                                                   " alone")):
        none = search(UNSURE, labels, max_order=1, trials=2, low=0.0, high=10.0, max_flips=0.1,
                      seed=next(s for s in range(100) if _all_flip(s)))
    assert none.flips == 0.75 and len(none.warnings) == 2
    with pytest.raises(ValueError, match=re.escape("max_flips: expected a fraction in [0, 1], got 1.5")):
        search(UNSURE, labels, max_flips=1.5)


def _all_flip(seed: int) -> bool:
    """Whether both of search's draws with this seed (order 1, 2 trials in [0, 10]) overturn the unsure rows."""
    eps = torch.from_numpy(np.random.default_rng(seed).uniform(0.0, 10.0, size=(2, 2, 1)))
    return bool((flip_fraction(proxy_teacher(UNSURE, eps), UNSURE) > 0).all())


def test_small_validation_split_warning_names_every_class_count():
    labels = torch.tensor([0] * 6 + [1] * 7 + [2] * 5)
    teacher = torch.full((18, 3), 1 / 3, dtype=torch.float64)
    message = ("validation split too small to rank coefficient candidates: 18 rows (class 0: 6, class 1: 7, class 2:"
               " 5); want at least 30 per class, else a few rows decide which coefficients win")
    with pytest.warns(UserWarning, match=re.escape(message)):
        result = search(teacher, labels, max_order=1, trials=2)
    assert result.warnings == [message] and result.to_dict()["warnings"] == [message]
    named = search(teacher, labels, max_order=1, trials=2, class_names=["barolo", "grignolino", "barbera"])
    assert "(class barolo: 6, class grignolino: 7, class barbera: 5)" in named.warnings[0]
    assert small_split_warning(torch.tensor([0, 1] * 30), 2) is None
    assert "class 2: 0" in small_split_warning(torch.tensor([0, 1] * 30), 3)  # a class missing altogether


def test_rank_and_order_choices_rank_only_eligible_candidates(tmp_path):
    """``params.rank`` / ``params.order`` of a ptloss method pick among the candidates the search could choose."""
    from ptdistill.experiments import SearchSpec
    from ptdistill.steps.search import chosen_eps

    with pytest.warns(UserWarning):
        result = search(UNSURE, torch.ones(4, dtype=torch.long), max_order=1, trials=20, low=0.0, high=10.0)
    (tmp_path / "result.json").write_text(json.dumps({"eps": result.eps.tolist(), "criterion": "q"}))
    result.table.assign(eps=result.table["eps"].map(json.dumps)).to_csv(tmp_path / "candidates.csv", index=False)
    eligible = result.table[result.table["eligible"]].sort_values("q", kind="stable")
    for choice in ({}, {"rank": 0}, {"order": 1}):
        assert chosen_eps(tmp_path, SearchSpec(), choice, 2) == result.eps.tolist()
    assert chosen_eps(tmp_path, SearchSpec(), {"rank": 3}, 2) == eligible.iloc[3]["eps"]
    with pytest.raises(ValueError, match=f"rank {len(eligible)} asked of {len(eligible)} searched coefficient sets"):
        chosen_eps(tmp_path, SearchSpec(), {"rank": len(eligible)}, 2)


def test_search_command_prints_flips_and_one_line_per_warning(tmp_path, capsys):
    from ptdistill.cli import main

    assert main(["search", "--synthetic", "60x3", "--trials", "3", "--max-order", "1", "--out",
                 str(tmp_path / "r.json")]) == 0
    out, err = capsys.readouterr()
    assert "the proxy overturns 0.0000 of the teacher's decisions" in out
    assert [line for line in err.splitlines() if "warning" in line.lower()] == [
        "warning: validation split too small to rank coefficient candidates: 60 rows (class 0: 19, class 1: 21,"
        " class 2: 20); want at least 30 per class, else a few rows decide which coefficients win"]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["flips"] == 0.0 and saved["settings"]["max_flips"] == 0.5 and len(saved["warnings"]) == 1


def _half_teacher(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    teacher, labels = noisy_teacher(300, 4, seed=1)
    return teacher.to(dtype), labels


@pytest.mark.parametrize("form", ["fp16 numpy", "bf16 torch", "fp16 list", "bf16 as float32 numpy"])
def test_readme_snippet_accepts_reduced_precision_teachers(form, caplog):
    """``search(teacher_probs_val, labels_val, ...)`` as in the README, with a half-precision teacher."""
    dtype = torch.bfloat16 if "bf16" in form else torch.float16
    teacher_probs_val, labels_val = _half_teacher(dtype)
    assert (teacher_probs_val.double().sum(-1) - 1).abs().max() > 1e-4  # the strict check would reject it
    exact = teacher_probs_val.double() / teacher_probs_val.double().sum(-1, keepdim=True)
    if form == "fp16 numpy":
        teacher_probs_val = teacher_probs_val.numpy()
    elif form == "fp16 list":
        teacher_probs_val = teacher_probs_val.tolist()
    elif form == "bf16 as float32 numpy":
        teacher_probs_val = teacher_probs_val.float().numpy()
    with caplog.at_level("WARNING", logger="ptdistill.checks"):
        result = search(teacher_probs_val, labels_val, max_order=2, trials=5)
    assert np.isfinite(result.eps).all() and np.isfinite(result.score)
    assert result.score == search(exact, labels_val, max_order=2, trials=5).score  # renormalised in float64
    assert [r.getMessage().split(":")[0] for r in caplog.records if "renormalised" in r.getMessage()] == \
        ["teacher_probs"]


def test_search_still_rejects_rows_beyond_bf16_precision():
    teacher, labels = noisy_teacher(50, 3, seed=0)
    with pytest.raises(ValueError, match=r"teacher_probs: rows must sum to 1 \(within 0\.0078\), row 0 sums to 1\.01"):
        search(teacher * torch.tensor([1.01]).where(torch.arange(50)[:, None] == 0, torch.tensor([1.0])), labels)
