"""The proxy-teacher solver (ptdistill.proxy.solver) against its definition (docs/method.md §4).

Every reference quantity (gradient, loss) is recomputed here independently in numpy float64
from the formulas of docs/method.md §4.2, and the solver is checked against the paper-style
scipy.fsolve reference in ``shared/reference/proxy_fsolve.py`` where that reference converges.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptdistill.proxy import (
    brier,
    nll,
    proxy_teacher,
    proxy_teacher_differentiable,
    q_score,
    solve_proxy,
)
from ptdistill.synthetic import noisy_teacher

TOL = 1e-8
REFERENCE = Path(__file__).parents[2] / "shared/reference/proxy_fsolve.py"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------- independent numpy formulas


def spec_grad(q: np.ndarray, p: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """docs/method.md §4.2: g_j = -p_j - h_j + q_j (1 + sum_c h_c), h_c = p_c q_c phi_c; rows of q, p (N, C)."""
    m = np.arange(1, eps.shape[-1] + 1)
    phi = (eps[None] * m * (1.0 - q)[..., None] ** (m - 1)).sum(-1)
    h = p * q * phi
    return -p - h + q * (1.0 + h.sum(-1, keepdims=True))


def spec_loss_logits(z: np.ndarray, p: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """l(q) = KL(p || q) + sum_c p_c sum_m eps[c, m] (1 - q_c)^m at q = softmax(z), per row."""
    zmax = z.max(-1, keepdims=True)
    logq = z - zmax - np.log(np.exp(z - zmax).sum(-1, keepdims=True))
    q = np.exp(logq)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - logq), 0.0).sum(-1)
    m = np.arange(1, eps.shape[-1] + 1)
    pert = (p * (eps[None] * (1.0 - q)[..., None] ** m).sum(-1)).sum(-1)
    return kl + pert


def softmax_rows(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def make_teacher(rng: np.random.Generator, n: int, c: int, kind: str) -> np.ndarray:
    """Teacher rows (n, c) of an adversarial kind."""
    if kind == "flat":
        p = np.full((n, c), 1.0 / c)
        p = p * (1 + 1e-3 * rng.uniform(-1, 1, (n, c)))
    elif kind == "peaked":
        p = softmax_rows(rng.normal(0, 6.0, (n, c)))
    elif kind == "near_one_hot":
        top = rng.integers(0, c, n)
        p = np.full((n, c), 1e-6 / (c - 1))
        p[np.arange(n), top] = 1 - 1e-6
    elif kind == "zero_entry":
        p = softmax_rows(rng.normal(0, 1.5, (n, c)))
        p[np.arange(n), rng.integers(0, c, n)] = 0.0
        if c == 2:  # a one-hot row: the other entry carries everything
            p = np.where(p > 0, 1.0, 0.0)
    elif kind == "dirichlet":
        p = rng.dirichlet(np.full(c, 0.3), n)
    else:  # "noisy": the reference's benchmark teacher
        p = noisy_teacher(n, c, seed=int(rng.integers(1 << 30)))[0].numpy()
    return p / p.sum(-1, keepdims=True)


KINDS = ["flat", "peaked", "near_one_hot", "zero_entry", "dirichlet", "noisy"]


def mixed_teacher(rng: np.random.Generator, c: int, per_kind: int = 4) -> np.ndarray:
    return np.concatenate([make_teacher(rng, per_kind, c, k) for k in KINDS])


def t64(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def load_reference():
    if not REFERENCE.exists():
        pytest.skip(f"paper-style reference solver not found at {REFERENCE} (repo not cloned next to shared/)")
    spec = importlib.util.spec_from_file_location("proxy_fsolve_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- exactness at the solution


@pytest.mark.parametrize("c,m", [(2, 1), (3, 3), (10, 5), (100, 2)])
def test_gradient_at_solution_is_zero_and_reported(c, m):
    rng = np.random.default_rng(c * 100 + m)
    p = mixed_teacher(rng, c)
    eps = rng.uniform(-1, 10, (c, m))
    sol = solve_proxy(t64(p), t64(eps))
    q = sol.probs.numpy()
    g = spec_grad(q, p, eps)
    gmax = np.abs(g).max(-1)
    assert gmax.max() <= TOL
    # The reported max |g| is the same quantity (up to rounding of 1 - q).
    np.testing.assert_allclose(sol.max_grad.numpy(), gmax, rtol=1e-6, atol=1e-13)
    assert sol.converged.all()
    # Probabilities and logits agree.
    np.testing.assert_allclose(softmax_rows(sol.logits.numpy()), q, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-12)


@pytest.mark.parametrize("c,m", [(2, 2), (3, 1), (3, 5), (10, 3), (30, 4)])
def test_solution_is_a_minimum(c, m):
    rng = np.random.default_rng(7 + c + 13 * m)
    p = mixed_teacher(rng, c)
    eps = rng.uniform(-1, 10, (c, m))
    sol = solve_proxy(t64(p), t64(eps))
    z = sol.logits.numpy()
    at_solution = spec_loss_logits(z, p, eps)
    # Not above the loss at the teacher itself (the solver starts there and only descends).
    with np.errstate(divide="ignore"):
        z_teacher = np.log(np.clip(p, 1e-300, None))
    assert np.all(at_solution <= spec_loss_logits(z_teacher, p, eps) + 1e-10)
    # Not above the loss at random small perturbations of the logits.  The slack covers the
    # gradient tolerance: max |g| <= 1e-8 leaves a loss gap up to ~g^2 / curvature, and along a
    # class with q_c ~ 1e-11 the curvature is ~q_c (seen: a gap of 2e-11 on such a row).
    for scale in (1e-3, 1e-2, 0.1):
        for _ in range(10):
            perturbed = spec_loss_logits(z + rng.normal(0, scale, z.shape), p, eps)
            assert np.all(at_solution <= perturbed + 1e-9)


@pytest.mark.parametrize("c", [2, 3, 10, 100])
@pytest.mark.parametrize("m", [1, 3])
def test_zero_eps_gives_the_teacher(c, m):
    rng = np.random.default_rng(c + m)
    p = mixed_teacher(rng, c)
    sol = solve_proxy(t64(p), torch.zeros(c, m, dtype=torch.float64))
    np.testing.assert_allclose(sol.probs.numpy(), p, rtol=0, atol=1e-10)
    assert sol.converged.all()


# ---------------------------------------------------------------- convergence everywhere


@pytest.mark.parametrize("c", [2, 3, 10, 100])
@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_converges_on_every_example(c, m):
    rng = np.random.default_rng(1000 * c + m)
    p = mixed_teacher(rng, c, per_kind=5)
    eps = rng.uniform(-1, 10, (8, c, m))  # 8 coefficient sets at once
    sol = solve_proxy(t64(p), t64(eps))
    assert sol.converged.all(), f"{int((~sol.converged).sum())} rows did not converge"
    assert float(sol.max_grad.max()) <= TOL
    g = spec_grad(sol.probs.numpy(), p[None], eps[:, None])  # (K, N, C)
    assert np.abs(g).max() <= TOL


#: Coefficient sets that keep every class's polynomial away from the low corner.
EASY_EPS = ["uniform", "upper", "high", "sign"]
#: Near eps = -1 the perturbation can pull a peaked / near-one-hot teacher's top class off 1;
#: there 1 + sum_c h_c -> 0, the Hessian is nearly singular along the small classes, and the
#: solver needs up to ~2,500 iterations (seen: 2,418 for C=10, M=5, eps = -1, peaked rows).
LOW_CORNER_EPS = ["low", "near_low", "corners"]


def draw_eps(rng: np.random.Generator, kind: str, c: int, m: int) -> np.ndarray:
    if kind == "uniform":
        return rng.uniform(-1, 10, (c, m))
    if kind == "upper":
        return rng.uniform(0, 10, (c, m))
    if kind == "high":
        return np.full((c, m), 10.0)
    if kind == "sign":  # alternate signs across orders: the most non-convex polynomials
        return np.where(np.arange(m) % 2 == 0, 10.0, -1.0) * np.ones((c, 1))
    if kind == "low":
        return np.full((c, m), -1.0)
    if kind == "near_low":
        return rng.uniform(-1, -0.5, (c, m))
    return rng.choice([-1.0, 10.0], (c, m))  # "corners"


@st.composite
def teacher_and_eps(draw, eps_kinds):
    c = draw(st.sampled_from([2, 3, 10, 100]))
    m = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3))
    eps_kind = draw(st.sampled_from(eps_kinds))
    rng = np.random.default_rng(seed)
    p = np.concatenate([make_teacher(rng, 6, c, k) for k in kinds])
    return p, draw_eps(rng, eps_kind, c, m)


def _assert_solution(sol, p, eps):
    assert sol.converged.all(), f"{int((~sol.converged).sum())} rows did not converge"
    assert float(sol.max_grad.max()) <= TOL
    q = sol.probs.numpy()
    assert np.all(np.isfinite(q)) and np.all(q >= 0)
    np.testing.assert_allclose(q.sum(-1), 1.0, atol=1e-12)
    assert np.abs(spec_grad(q, p, eps)).max() <= TOL


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(teacher_and_eps(EASY_EPS))
def test_converges_on_adversarial_teachers(case):
    p, eps = case
    _assert_solution(solve_proxy(t64(p), t64(eps)), p, eps)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(teacher_and_eps(LOW_CORNER_EPS))
def test_low_corner_reports_honestly_and_converges_given_iterations(case):
    p, eps = case
    sol = solve_proxy(t64(p), t64(eps))
    # Whatever happened within the default budget is reported truthfully ...
    g = np.abs(spec_grad(sol.probs.numpy(), p, eps)).max(-1)
    np.testing.assert_allclose(sol.max_grad.numpy(), g, rtol=1e-6, atol=1e-13)
    np.testing.assert_array_equal(sol.converged.numpy(), sol.max_grad.numpy() <= TOL)
    # ... the loss went down from the teacher ...
    with np.errstate(divide="ignore"):
        z_teacher = np.log(np.clip(p, 1e-300, None))
    assert np.all(spec_loss_logits(sol.logits.numpy(), p, eps) <= spec_loss_logits(z_teacher, p, eps) + 1e-10)
    # ... and with enough iterations every row converges (warm-started where it stopped).
    _assert_solution(solve_proxy(t64(p), t64(eps), max_iter=5000, init=sol.logits), p, eps)


@pytest.mark.parametrize("case", ["near_one_hot_corners", pytest.param("peaked_low", marks=pytest.mark.slow)])
def test_low_corner_converges_within_default_budget(case):
    c = 10
    if case == "near_one_hot_corners":  # found by hypothesis
        p = np.full((6, c), 1e-6 / (c - 1))
        p[np.arange(6), [4, 5, 7, 9, 0, 1]] = 1 - 1e-6
        eps = np.array([[10, 10], [-1, -1], [10, -1], [-1, 10], [-1, -1],
                        [10, 10], [-1, -1], [10, 10], [10, 10], [10, -1]], dtype=np.float64)
    else:
        p = make_teacher(np.random.default_rng(1), 40, c, "peaked")
        eps = np.full((c, 5), -1.0)
    sol = solve_proxy(t64(p), t64(eps))
    assert sol.converged.all()


# ---------------------------------------------------------------- the paper-style reference


def test_agrees_with_fsolve_reference_where_it_converges():
    ref = load_reference()
    rng = np.random.default_rng(2024)
    compared = total = 0
    for c, n in ((2, 30), (3, 30), (10, 20), (100, 6)):
        for m in (1, 2, 3, 5):
            p = np.concatenate([make_teacher(rng, n // 3, c, k) for k in ("noisy", "dirichlet", "peaked")])
            eps = rng.uniform(-1, 10, (c, m))
            ours = solve_proxy(t64(p), t64(eps))
            assert ours.converged.all()
            for i in range(len(p)):
                total += 1
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # fsolve's "not making good progress"
                    q_ref = ref.solve_proxy(p[i], eps)
                if np.abs(spec_grad(q_ref[None], p[i : i + 1], eps)).max() > TOL:
                    continue  # the reference did not converge here
                compared += 1
                np.testing.assert_allclose(ours.probs[i].numpy(), q_ref, rtol=0, atol=1e-6)
    assert total >= 200 and compared >= 0.6 * total


# ---------------------------------------------------------------- shapes, batching, dtypes, init


def test_batched_equals_per_candidate_and_shapes():
    rng = np.random.default_rng(3)
    c, m, k = 5, 3, 4
    p = mixed_teacher(rng, c)
    eps = rng.uniform(-1, 10, (k, c, m))
    batched = solve_proxy(t64(p), t64(eps))
    assert batched.probs.shape == (k, len(p), c) and batched.probs.dtype == torch.float64
    assert batched.logits.shape == (k, len(p), c)
    assert batched.max_grad.shape == batched.converged.shape == (k, len(p))
    for i in range(k):
        single = solve_proxy(t64(p), t64(eps[i]))
        assert single.probs.shape == (len(p), c) and single.probs.dtype == torch.float64
        assert single.max_grad.shape == (len(p),)
        np.testing.assert_allclose(batched.probs[i].numpy(), single.probs.numpy(), rtol=0, atol=1e-12)
    assert proxy_teacher(t64(p), t64(eps)).shape == (k, len(p), c)
    assert proxy_teacher(t64(p), t64(eps[0])).shape == (len(p), c)


def test_float32_input_accepted():
    p64, _ = noisy_teacher(40, 4, seed=5)
    eps64 = torch.from_numpy(np.random.default_rng(0).uniform(-1, 10, (4, 2)))
    sol = solve_proxy(p64.float(), eps64.float())
    assert sol.probs.dtype == sol.logits.dtype == torch.float64
    assert sol.probs.shape == (40, 4)
    # Within float32 rounding of the inputs of the float64 solution.
    np.testing.assert_allclose(sol.probs.numpy(), proxy_teacher(p64, eps64).numpy(), rtol=0, atol=1e-5)
    batched = solve_proxy(p64.float(), eps64.float()[None].repeat(2, 1, 1))
    assert batched.probs.dtype == torch.float64 and batched.probs.shape == (2, 40, 4)


@pytest.mark.parametrize("kind", ["float32", "off_by_1e-6"])
def test_rows_summing_to_one_within_tolerance_converge(kind):
    p64, _ = noisy_teacher(40, 4, seed=5)
    eps = torch.from_numpy(np.random.default_rng(0).uniform(-1, 10, (4, 2)))
    p = p64.float() if kind == "float32" else p64 * (1 + 1e-6)
    sol = solve_proxy(p, eps)
    assert sol.converged.all()


def test_warm_start_reaches_the_same_solution():
    rng = np.random.default_rng(11)
    c, m = 6, 3
    p = mixed_teacher(rng, c)
    eps = rng.uniform(-1, 10, (c, m))
    cold = solve_proxy(t64(p), t64(eps))
    nearby = solve_proxy(t64(p), t64(eps + rng.normal(0, 0.05, eps.shape)))
    warm = solve_proxy(t64(p), t64(eps), init=nearby.logits)
    assert warm.converged.all()
    np.testing.assert_allclose(warm.probs.numpy(), cold.probs.numpy(), rtol=0, atol=1e-7)
    # Starting at the solution itself needs no work.
    again = solve_proxy(t64(p), t64(eps), init=cold.logits)
    assert again.iterations == 0
    np.testing.assert_allclose(again.probs.numpy(), cold.probs.numpy(), rtol=0, atol=1e-12)
    # Batched warm start.
    eps_k = np.stack([eps, eps * 0.5])
    cold_k = solve_proxy(t64(p), t64(eps_k))
    warm_k = solve_proxy(t64(p), t64(eps_k), init=cold_k.logits + 0.01)
    np.testing.assert_allclose(warm_k.probs.numpy(), cold_k.probs.numpy(), rtol=0, atol=1e-7)


def test_many_classes_converges():
    # No dense C x C system: C = 2000 still solves quickly (no timing assert, just completion).
    p, _ = noisy_teacher(50, 2000, seed=1)
    eps = torch.from_numpy(np.random.default_rng(0).uniform(-1, 10, (2000, 5)))
    sol = solve_proxy(p, eps)
    assert sol.converged.all() and float(sol.max_grad.max()) <= TOL


# ---------------------------------------------------------------- implicit differentiation


def _fd_grad(p: torch.Tensor, eps: np.ndarray, labels: torch.Tensor, fn, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of sum(fn(q*(eps), labels)) with tightly solved proxies."""
    base = solve_proxy(p, t64(eps), tol=1e-13, max_iter=500)
    out = np.zeros_like(eps)
    for idx in np.ndindex(*eps.shape):
        vals = []
        for sign in (1.0, -1.0):
            e = eps.copy()
            e[idx] += sign * h
            sol = solve_proxy(p, t64(e), tol=1e-13, max_iter=500, init=base.logits)
            vals.append(float(fn(sol.probs, labels).sum()))
        out[idx] = (vals[0] - vals[1]) / (2 * h)
    return out


@pytest.mark.parametrize("name,fn", [("q", q_score), ("brier", brier), ("nll", nll)])
@pytest.mark.parametrize("batched", [False, True], ids=["single", "batched"])
def test_implicit_gradient_matches_finite_differences(name, fn, batched):
    p, labels = noisy_teacher(25, 3, seed=4)
    rng = np.random.default_rng(9)
    eps = rng.uniform(-1, 10, (2, 3, 2) if batched else (3, 2))
    e = t64(eps).requires_grad_(True)
    probs, sol = proxy_teacher_differentiable(p, e)
    assert sol.converged.all()
    fn(probs, labels).sum().backward()
    ad = e.grad.numpy()
    fd = _fd_grad(p, eps, labels, fn)
    assert ad.shape == eps.shape
    np.testing.assert_allclose(ad, fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max() + 1e-9)


# ---------------------------------------------------------------- bad input


def _ok():
    return noisy_teacher(5, 3, seed=0)[0], torch.ones(3, 2, dtype=torch.float64)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_teacher_rejected(bad):
    p, eps = _ok()
    p = p.clone()
    p[2, 1] = bad
    with pytest.raises(ValueError, match="teacher_probs"):
        solve_proxy(p, eps)


def test_negative_teacher_rejected_as_logits():
    p, eps = _ok()
    logits = torch.log(p)
    with pytest.raises(ValueError, match=r"teacher_probs.*logits"):
        solve_proxy(logits, eps)


def test_rows_not_summing_to_one_rejected_as_logits():
    p, eps = _ok()
    with pytest.raises(ValueError, match=r"teacher_probs.*sum.*logits"):
        solve_proxy(p * 2, eps)
    with pytest.raises(ValueError, match=r"teacher_probs.*logits"):
        solve_proxy(torch.exp(torch.randn(5, 3, dtype=torch.float64)) + 0.1, eps)


@pytest.mark.parametrize(
    "teacher",
    [
        torch.tensor([0.2, 0.8], dtype=torch.float64),  # 1-D
        torch.zeros(0, 3, dtype=torch.float64),  # no examples
        torch.ones(4, 1, dtype=torch.float64),  # one class
        torch.ones(2, 3, 2, dtype=torch.float64) / 2,  # 3-D
    ],
    ids=["1d", "empty", "one_class", "3d"],
)
def test_bad_teacher_shape_rejected(teacher):
    with pytest.raises(ValueError, match="teacher_probs"):
        solve_proxy(teacher, torch.ones(teacher.shape[-1], 1, dtype=torch.float64))


@pytest.mark.parametrize(
    "eps",
    [
        torch.ones(4, 2, dtype=torch.float64),  # C mismatch
        torch.ones(2, 4, 2, dtype=torch.float64),  # batched C mismatch
        torch.ones(3, dtype=torch.float64),  # 1-D
        torch.ones(1, 2, 3, 2, dtype=torch.float64),  # 4-D
        torch.ones(3, 0, dtype=torch.float64),  # no orders
    ],
    ids=["c_mismatch", "batched_c_mismatch", "1d", "4d", "no_orders"],
)
def test_bad_eps_shape_rejected(eps):
    p, _ = _ok()
    with pytest.raises(ValueError, match="eps"):
        solve_proxy(p, eps)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_eps_rejected(bad):
    p, eps = _ok()
    eps = eps.clone()
    eps[1, 0] = bad
    with pytest.raises(ValueError, match="eps"):
        solve_proxy(p, eps)
    with pytest.raises(ValueError, match="eps"):
        proxy_teacher_differentiable(p, eps)
