"""Tests of ptdistill.losses: formulas against hand computation, special cases, numerics, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ptdistill import losses as L
from ptdistill.losses import (
    LOSSES,
    PTLoss,
    annealing_factor,
    annealing_kd,
    build_loss,
    flooding,
    focal,
    kl,
    label_smoothing,
    ptloss,
)

ALL = sorted(LOSSES)
# Hyper-parameters making each registry entry non-trivial (for C = 5).
HPARAMS = {
    "kl": {"temperature": 2.0},
    "ptloss": {"eps": [[0.5, -0.2, 1.0]] * 5, "temperature": 1.5},
    "label_smoothing": {"delta": 0.1},
    "focal": {"gamma": 2.0},
    "flooding": {"level": 0.3},
    "annealing_kd": {"max_temperature": 4, "total_steps": 100},
}
FUNCTIONAL = {
    "kl": lambda z, p, **kw: kl(z, p, temperature=2.0, **kw),
    "ptloss": lambda z, p, **kw: ptloss(z, p, torch.tensor(HPARAMS["ptloss"]["eps"]), temperature=1.5, **kw),
    "label_smoothing": lambda z, p, **kw: label_smoothing(z, p, delta=0.1, **kw),
    "focal": lambda z, p, **kw: focal(z, p, gamma=2.0, **kw),
    "flooding": lambda z, p, **kw: flooding(z, p, level=0.3, **kw),
    "annealing_kd": lambda z, p, **kw: annealing_kd(z, p, step=0, total_steps=100, max_temperature=4, **kw),
}


def make(b=6, c=5, *, seed=0, dtype=torch.float32, one_hot_rows=1, scale=2.0):
    """Random student logits (requiring grad) and teacher probabilities, some rows one-hot."""
    gen = torch.Generator().manual_seed(seed)
    z = (scale * torch.randn(b, c, generator=gen, dtype=torch.float64)).to(dtype).requires_grad_()
    p = torch.softmax(2 * torch.randn(b, c, generator=gen, dtype=torch.float64), -1)
    for i in range(one_hot_rows):
        p[i] = torch.nn.functional.one_hot(torch.tensor(i % c), c)
    return z, p.to(dtype)


def grad_of(fn, z, *args, **kwargs):
    z = z.detach().clone().requires_grad_()
    loss = fn(z, *args, **kwargs)
    (g,) = torch.autograd.grad(loss.sum(), z)
    return loss.detach(), g


# Hypothesis draws inputs through a seed (torch's generator), shapes and a temperature.
SEEDS = st.integers(0, 2**31 - 1)
CLASSES = st.integers(2, 8)
TEMPERATURES = st.sampled_from([1.0, 0.3, 0.5, 2.0, 4.0])


def drawn(seed, b, c, *, dtype=torch.float64):
    """Student logits and teacher probabilities of ``make``'s kind, and a second teacher row with
    ``c // 2`` zero entries (classes that the teacher rules out)."""
    z, p = make(b, c, seed=seed, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed + 1)
    if b > 1:
        p[1, torch.randperm(c, generator=gen)[: c // 2]] = 0.0
        p[1] /= p[1].sum()
    return z.detach().to(dtype).requires_grad_(), p.to(dtype)


# ----------------------------------------------------------------------------- hand computations


def np_softmax(x):
    x = x - x.max()
    return np.exp(x) / np.exp(x).sum()


def hand_kl(p, q):
    return sum(pc * math.log(pc / qc) for pc, qc in zip(p, q) if pc > 0)


def hand_temper(z, p, t):
    """Student probabilities and teacher probabilities at temperature t, float64."""
    z = np.asarray(z, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    if t == 1.0:
        return np_softmax(z), p
    with np.errstate(divide="ignore"):
        return np_softmax(z / t), np_softmax(np.log(p) / t)


def hand_ptloss(z, p, eps, t=1.0):
    """PTLoss (docs/method.md §2.2, KDD'24 Eq. (7)), example by example in float64, batch mean."""
    eps = np.asarray(eps, dtype=np.float64)
    out = []
    for zi, pi in zip(np.asarray(z, np.float64), np.asarray(p, np.float64)):
        q, pt = hand_temper(zi, pi, t)
        orders = range(1, eps.shape[1] + 1)
        pert = sum(pt[c] * sum(eps[c, m - 1] * (1 - q[c]) ** m for m in orders) for c in range(len(q)))
        out.append(t**2 * (hand_kl(pt, q) + pert))
    return float(np.mean(out))


def hand_rows(name, z, p):
    """Per-example losses of the HPARAMS configuration of ``name``, float64."""
    rows = []
    for zi, pi in zip(np.asarray(z, np.float64), np.asarray(p, np.float64)):
        c = len(zi)
        q = np_softmax(zi)
        if name == "kl":
            qt, pt = hand_temper(zi, pi, 2.0)
            rows.append(4.0 * hand_kl(pt, qt))
        elif name == "ptloss":
            rows.append(hand_ptloss(zi[None], pi[None], HPARAMS["ptloss"]["eps"], 1.5))
        elif name == "label_smoothing":
            rows.append(hand_kl(0.9 * pi + 0.1 / c, q))
        elif name == "focal":
            focal_term = sum(pi[k] * (1 - q[k]) ** 2 * -math.log(q[k]) for k in range(c))
            rows.append(focal_term + sum(x * math.log(x) for x in pi if x > 0))
        elif name == "flooding":
            rows.append(hand_kl(pi, q))  # flooded after reduction
        elif name == "annealing_kd":
            zt = np.log(np.maximum(pi, 1e-8))
            zs = zi - zi.mean()
            zt = zt - zt.mean()
            rows.append(float(np.mean((zs - 0.25 * zt) ** 2)))  # step 0: T = T_max = 4, Phi = 1/4
    return np.array(rows)


# ----------------------------------------------------------------------------- formulas


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
@pytest.mark.parametrize("order", [1, 3])
def test_ptloss_matches_spec_formula(temperature, order):
    z, p = make(8, 4, seed=order)
    eps = torch.empty(4, order).uniform_(-1, 10, generator=torch.Generator().manual_seed(1))
    expected = hand_ptloss(z.detach(), p, eps, temperature)
    assert ptloss(z, p, eps, temperature=temperature).item() == pytest.approx(expected, rel=2e-5, abs=1e-6)
    z64, p64 = z.detach().double(), p.double()
    got64 = ptloss(z64, p64, eps.double(), temperature=temperature)
    assert got64.dtype == torch.float64
    assert got64.item() == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_ptloss_gradient_matches_autograd_of_formula():
    z, p = make(7, 5, seed=3, dtype=torch.float64)
    eps = torch.empty(5, 4, dtype=torch.float64).uniform_(-1, 10, generator=torch.Generator().manual_seed(2))
    for t in (1.0, 2.0):

        def formula(z, t=t):
            q = torch.softmax(z / t, -1)
            pt = torch.softmax(torch.log(p) / t, -1) if t != 1.0 else p
            powers = (1 - q).unsqueeze(-1) ** torch.arange(1, 5, dtype=z.dtype)
            rows = torch.xlogy(pt, pt).sum(-1) - (pt * torch.log(q)).sum(-1) + (pt * (powers * eps).sum(-1)).sum(-1)
            return t**2 * rows.mean()

        v1, g1 = grad_of(lambda z: ptloss(z, p, eps, temperature=t), z)
        v2, g2 = grad_of(formula, z)
        torch.testing.assert_close(v1, v2, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g1, g2, rtol=1e-10, atol=1e-12)


def test_ptloss_gradcheck():
    z, p = make(4, 3, seed=5, dtype=torch.float64, one_hot_rows=0)
    eps = torch.tensor([[1.0, -0.5], [2.0, 0.3], [-1.0, 4.0]], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: ptloss(z, p, eps, temperature=1.7, reduction="none"), (z,))


@pytest.mark.parametrize("name", ALL)
def test_each_loss_matches_hand_computation(name):
    z, p = make(6, 5, seed=11)
    rows = hand_rows(name, z.detach(), p)
    got_rows = build_loss(name, **HPARAMS[name], reduction="none")(z, p).detach().double().numpy()
    if name == "flooding":
        np.testing.assert_allclose(got_rows, np.abs(rows - 0.3) + 0.3, rtol=2e-5, atol=1e-6)
        mean = build_loss(name, **HPARAMS[name])(z, p).item()
        assert mean == pytest.approx(abs(rows.mean() - 0.3) + 0.3, rel=2e-5)
    else:
        np.testing.assert_allclose(got_rows, rows, rtol=2e-5, atol=1e-6)


@settings(max_examples=20, deadline=None)
@given(seed=SEEDS, num_classes=CLASSES, order=st.integers(1, 5), temperature=TEMPERATURES)
def test_ptloss_eps_zero_equals_kl(seed, num_classes, order, temperature):
    z, p = drawn(seed, 6, num_classes, dtype=torch.float32)
    eps = torch.zeros(num_classes, order)
    v_pt, g_pt = grad_of(ptloss, z, p, eps, temperature=temperature)
    v_kl, g_kl = grad_of(kl, z, p, temperature=temperature)
    assert torch.equal(v_pt, v_kl)
    torch.testing.assert_close(g_pt, g_kl, rtol=1e-6, atol=1e-7)


def test_focal_gamma_zero_and_label_smoothing_delta_zero_equal_kl():
    z, p = make(9, 6, seed=4)
    v_kl, g_kl = grad_of(kl, z, p)
    for fn in (lambda z, p: focal(z, p, gamma=0.0), lambda z, p: label_smoothing(z, p, delta=0.0)):
        v, g = grad_of(fn, z, p)
        assert torch.equal(v, v_kl)
        torch.testing.assert_close(g, g_kl, rtol=1e-6, atol=1e-8)


def test_flooding_level_zero_equals_kl():
    z, p = make(9, 6, seed=4)
    assert torch.equal(flooding(z, p, level=0.0), kl(z, p))


@pytest.mark.parametrize("temperature", [0.5, 4.0])
def test_temperature_scaling_relation(temperature):
    """Loss at T equals T^2 times the loss at T=1 of tempered logits and tempered teacher."""
    z, p = make(8, 5, seed=6, dtype=torch.float64)
    eps = torch.empty(5, 2, dtype=torch.float64).uniform_(-1, 3, generator=torch.Generator().manual_seed(0))
    p_t = torch.softmax(torch.log(p) / temperature, -1)
    for fn in (kl, lambda z, p, **kw: ptloss(z, p, eps, **kw)):
        v_t, g_t = grad_of(lambda z: fn(z, p, temperature=temperature), z)
        v_1, g_1 = grad_of(lambda z: temperature**2 * fn(z / temperature, p_t), z)
        torch.testing.assert_close(v_t, v_1, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_t, g_1, rtol=1e-10, atol=1e-12)
    # Hinton: at high T the gradient of T^2 KL approaches (z - z_t) / C for centred logits.
    zt = torch.randn(1, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    zt, zs = zt - zt.mean(), torch.zeros(1, 5, dtype=torch.float64)
    _, g = grad_of(lambda z: kl(z, torch.softmax(zt, -1), temperature=1e4), zs)
    torch.testing.assert_close(g, (zs - zt) / 5, rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------------- label smoothing (docs/method.md §2.5)


def per_example_ptloss_ls(z, p, delta, order):
    """Value and gradient of PTLoss with the per-example label-smoothing coefficients of docs/method.md §2.5
    (KDD'24 Eq. (16) for C classes)."""
    c = p.shape[1]
    m = torch.arange(1, order + 1, dtype=torch.float64)
    values, grads = [], []
    for i in range(len(z)):
        eps = delta / m * (1 / (c * p[i]) - 1)[:, None]
        v, g = grad_of(ptloss, z[i : i + 1], p[i : i + 1], eps)
        values.append(v)
        grads.append(g[0])
    return torch.stack(values), torch.stack(grads)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    num_classes=st.integers(2, 8),
    order=st.integers(1, 30),
    delta=st.floats(0.01, 0.5),
)
def test_label_smoothing_is_ptloss_up_to_a_constant(seed, num_classes, order, delta):
    """KL(p_ls || q) - PTLoss_M = const + delta sum_c a_c sum_{m>M} (1-q_c)^m / m, a_c = 1/C - p_c.

    Checks the value gap against its bound and the gradient gap exactly (float64).
    """
    gen = torch.Generator().manual_seed(seed)
    z = 2 * torch.randn(3, num_classes, generator=gen, dtype=torch.float64)
    p = torch.softmax(1.5 * torch.randn(3, num_classes, generator=gen, dtype=torch.float64), -1)
    v_ls, g_ls = grad_of(label_smoothing, z, p, delta=delta, reduction="none")
    v_pt, g_pt = per_example_ptloss_ls(z, p, delta, order)
    p_ls = (1 - delta) * p + delta / num_classes
    const = (p_ls * p_ls.log()).sum(-1) - (p * p.log()).sum(-1)
    q = torch.softmax(z, -1)
    u = 1 - q
    a = 1 / num_classes - p
    bound = delta * (a.abs() * u ** (order + 1) / ((order + 1) * q)).sum(-1)
    assert ((v_ls - v_pt - const).abs() <= bound + 1e-10).all()
    # Gradient of the remainder: -delta (a_j u_j^M - q_j sum_c a_c u_c^M).
    s = (a * u**order).sum(-1, keepdim=True)
    torch.testing.assert_close(g_ls - g_pt, -delta * (a * u**order - q * s), rtol=1e-7, atol=1e-10)


def test_label_smoothing_approximation_improves_with_order():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(32, 4, generator=gen, dtype=torch.float64)
    p = torch.softmax(1.5 * torch.randn(32, 4, generator=gen, dtype=torch.float64), -1)
    _, g_ls = grad_of(label_smoothing, z, p, delta=0.2, reduction="sum")
    errors = [(per_example_ptloss_ls(z, p, 0.2, m)[1] - g_ls).norm(dim=-1).mean().item() for m in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0], errors


# ----------------------------------------------------------------------------- properties


def random_eps(seed, c, order):
    """PTLoss coefficients (C, M) in [-1, 4), float64."""
    return torch.empty(c, order, dtype=torch.float64).uniform_(-1, 4, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=10, deadline=None)
@given(seed=SEEDS, batch=st.integers(1, 5), num_classes=CLASSES)
def test_every_loss_is_equivariant_under_permuting_the_classes(name, seed, batch, num_classes):
    """Permuting the classes of the logits, the teacher and eps's rows leaves each example's loss
    as it is and permutes the gradient the same way (no loss treats a class by its index)."""
    z, p = drawn(seed, batch, num_classes)
    hparams = dict(HPARAMS[name], eps=random_eps(seed, num_classes, 3)) if name == "ptloss" else HPARAMS[name]
    perm = torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed))
    permuted = dict(hparams, eps=hparams["eps"][perm]) if name == "ptloss" else hparams
    v, g = grad_of(build_loss(name, **hparams, reduction="none"), z, p)
    v_perm, g_perm = grad_of(build_loss(name, **permuted, reduction="none"), z[:, perm], p[:, perm])
    torch.testing.assert_close(v_perm, v, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g_perm, g[:, perm], rtol=1e-10, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=SEEDS, batch=st.integers(1, 6), num_classes=CLASSES, order=st.integers(1, 6), temperature=TEMPERATURES)
def test_ptloss_gradient_is_the_closed_form(seed, batch, num_classes, order, temperature):
    """The closed-form gradient (docs/method.md §2.3) of one example's PTLoss wrt its logits, ``g_j = -p_j - h_j + q_j (1 + sum_c h_c)``,
    ``h_c = p_c q_c phi_c``, ``phi_c = sum_m eps[c,m] m (1-q_c)**(m-1)``, at the tempered p and q;
    the batch mean divides by N and the temperature adds a factor T (T**2 on the loss, 1/T from z/T)."""
    z, p = drawn(seed, batch, num_classes)
    eps = random_eps(seed, num_classes, order)
    _, grad = grad_of(ptloss, z, p, eps, temperature=temperature)
    q = torch.softmax(z.detach() / temperature, -1)
    pt = torch.softmax(torch.log(p) / temperature, -1)
    m = torch.arange(1, order + 1, dtype=torch.float64)
    phi = (eps * m * (1 - q).unsqueeze(-1) ** (m - 1)).sum(-1)
    h = pt * q * phi
    g = -pt - h + q * (1 + h.sum(-1, keepdim=True))
    torch.testing.assert_close(grad, temperature * g / batch, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- reductions, forms, registry


@pytest.mark.parametrize("name", ALL)
def test_reductions_consistent(name):
    z, p = make(7, 5, seed=8)
    rows = build_loss(name, **HPARAMS[name], reduction="none")(z, p)
    total = build_loss(name, **HPARAMS[name], reduction="sum")(z, p)
    mean = build_loss(name, **HPARAMS[name])(z, p)
    assert rows.shape == (7,) and total.shape == () and mean.shape == ()
    if name == "flooding":  # flooded after reducing: |L - b| + b of the reduced KL
        kl_rows = kl(z, p, reduction="none")
        torch.testing.assert_close(rows, (kl_rows - 0.3).abs() + 0.3)
        torch.testing.assert_close(total, (kl_rows.sum() - 0.3).abs() + 0.3)
        torch.testing.assert_close(mean, (kl_rows.mean() - 0.3).abs() + 0.3)
    else:
        torch.testing.assert_close(total, rows.sum())
        torch.testing.assert_close(mean, rows.mean())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_module_and_functional_agree(name, reduction):
    z, p = make(5, 5, seed=9)
    module = build_loss(name, **HPARAMS[name], reduction=reduction)
    v_m, g_m = grad_of(lambda z: module(z, p).sum(), z)
    v_f, g_f = grad_of(lambda z: FUNCTIONAL[name](z, p, reduction=reduction).sum(), z)
    assert torch.equal(v_m, v_f)
    torch.testing.assert_close(g_m, g_f, rtol=0, atol=0)


def test_registry_and_build_loss():
    assert set(LOSSES) == {"kl", "ptloss", "label_smoothing", "focal", "flooding", "annealing_kd"}
    z, p = make(4, 5)
    labels = torch.tensor([0, 1, 4, 2])
    for name in ALL:
        loss = build_loss(name, **HPARAMS[name])
        assert isinstance(loss, LOSSES[name])
        value = loss(z, p, labels)
        assert value.dtype == torch.float32 and value.shape == ()
        (g,) = torch.autograd.grad(value, z)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert isinstance(build_loss("kl"), L.KLLoss)


def test_ptloss_module_eps_forms_buffer_and_cache():
    z, p = make(4, 3)
    eps_list = [[1.0, 0.5], [-1.0, 2.0], [0.0, 3.0]]
    ref = ptloss(z, p, torch.tensor(eps_list))
    for eps in (eps_list, np.array(eps_list), torch.tensor(eps_list), torch.tensor(eps_list, dtype=torch.float64)):
        module = PTLoss(eps)
        assert "eps" in dict(module.named_buffers()) and "eps" in module.state_dict()
        torch.testing.assert_close(module(z, p), ref)
    module = PTLoss(eps_list).to(torch.float64)
    assert module.eps.dtype == torch.float64
    torch.testing.assert_close(module(z, p), ref)
    # The cached coefficients follow in-place changes of eps (and state_dict loads).
    with torch.no_grad():
        module.eps.mul_(2)
    torch.testing.assert_close(module(z, p), ptloss(z, p, 2 * torch.tensor(eps_list)))
    module.load_state_dict({"eps": torch.zeros(3, 2)})
    assert torch.equal(module(z, p), kl(z, p))
    module.eps = torch.ones(3, 2)  # a new tensor, also when allocated where the old one was
    torch.testing.assert_close(module(z, p), ptloss(z, p, torch.ones(3, 2)))
    torch.testing.assert_close(module(z.double(), p), ptloss(z.double(), p, torch.ones(3, 2)), rtol=1e-6, atol=0)
    with torch.no_grad():
        module.eps[0, 0] = float("nan")
    with pytest.raises(ValueError, match="eps: contains NaN"):
        module(z, p)


def test_ptloss_module_takes_listed_eps_at_float64_like_the_functional_form():
    """eps given as nested lists (a config's YAML, a JSON result) is read as numpy reads it, float64,
    as the functional form does; torch's float32 default put float64 losses ~1e-8 off."""
    z, p = make(6, 3)
    z, p = z.double(), p.double()
    eps_list = [[0.1, -0.3], [1.0 / 3.0, 0.7], [-0.2, 0.9]]
    assert PTLoss(eps_list).eps.dtype == torch.float64
    want = ptloss(z, p, np.array(eps_list))
    torch.testing.assert_close(PTLoss(eps_list)(z, p), want, rtol=1e-15, atol=0)
    torch.testing.assert_close(build_loss("ptloss", eps=eps_list)(z, p), want, rtol=1e-15, atol=0)


def test_no_grad_evaluation_matches():
    z, p = make(5, 4)
    eps = torch.ones(4, 3)
    with torch.no_grad():
        value = ptloss(z, p, eps)
    assert not value.requires_grad
    assert torch.equal(value, ptloss(z, p, eps).detach())


# ----------------------------------------------------------------------------- numerics


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_finite_gradients_one_hot_teachers_and_huge_logits(name, scale):
    z, p = make(6, 5, seed=10, one_hot_rows=6, scale=scale)
    variants = [build_loss(name, **HPARAMS[name])]
    if name == "focal":
        variants += [build_loss("focal", gamma=g) for g in (0.0, 0.3, 1e-6)]
    if name == "ptloss":
        variants += [build_loss("ptloss", eps=torch.full((5, 8), 10.0)), build_loss("ptloss", eps=-torch.ones(5, 8))]
    if name == "kl":
        variants += [build_loss("kl", temperature=0.1)]
    for loss in variants:
        value, g = grad_of(loss, z, p)
        assert torch.isfinite(value) and torch.isfinite(g).all(), loss


def test_saturated_student_exact_one_minus_q():
    """At q_c close to 1 the perturbation uses 1 - q = -expm1(log q), not a cancelled 1 - q."""
    z = torch.tensor([[0.0, -30.0]], dtype=torch.float32, requires_grad=True)
    p = torch.tensor([[1.0, 0.0]])
    eps = torch.tensor([[1.0], [0.0]])
    value = ptloss(z, p, eps) - kl(z, p)
    assert value.item() == pytest.approx(math.exp(-30), rel=1e-4)


@pytest.mark.parametrize("name", ALL)
def test_bf16_autocast_gives_float32_close_to_float32(name):
    torch.manual_seed(0)
    layer = torch.nn.Linear(8, 5)
    x = torch.randn(16, 8)
    _, p = make(16, 5, seed=12)
    loss = build_loss(name, **HPARAMS[name])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(x)
        assert logits.dtype == torch.bfloat16
        value = loss(logits, p)
    assert value.dtype == torch.float32
    assert torch.equal(value, loss(logits.float(), p))  # computed in float32 from the bf16 logits
    reference = loss(layer(x), p)
    torch.testing.assert_close(value, reference, rtol=0.05, atol=0.02)
    value.backward()
    assert torch.isfinite(layer.weight.grad).all()


# ----------------------------------------------------------------------------- annealing KD


def test_annealing_schedule():
    # 100 steps, T_max = 4: stages of 25 steps with T = 4, 3, 2, 1; Phi = 1 - (T - 1) / 4.
    expected = {0: 0.25, 24: 0.25, 25: 0.5, 49: 0.5, 50: 0.75, 74: 0.75, 75: 1.0, 99: 1.0, 100: 1.0, 10**6: 1.0}
    for step, phi in expected.items():
        assert annealing_factor(step, 100, 4) == pytest.approx(phi)
    assert annealing_factor(0, 10, 1) == 1.0
    module = build_loss("annealing_kd", max_temperature=4, total_steps=100)
    z, p = make(6, 5, seed=13)
    zs = z.detach().double() - z.detach().double().mean(-1, keepdim=True)
    zt = torch.log(p.double().clamp_min(1e-8))
    zt = zt - zt.mean(-1, keepdim=True)
    for step, phi in expected.items():
        module.set_step(step)
        assert module.factor == pytest.approx(phi)
        assert module(z, p).item() == pytest.approx(((zs - phi * zt) ** 2).mean().item(), rel=1e-5)
        functional = annealing_kd(z, p, step=step, total_steps=100, max_temperature=4)
        assert module(z, p).item() == pytest.approx(functional.item())


def test_annealing_kd_ignores_shift_and_reaches_zero():
    _, p = make(4, 5, seed=14, one_hot_rows=0)
    z = torch.log(p) + torch.randn(4, 1)  # teacher logits up to a per-example shift
    assert annealing_kd(z, p, step=10, total_steps=10, max_temperature=3).item() == pytest.approx(0.0, abs=1e-10)
    assert annealing_kd(z, p, step=0, total_steps=10, max_temperature=3).item() > 0.01


# ----------------------------------------------------------------------------- bad input


def bad_input_cases():
    z, p = make(4, 3)
    nan = p.clone()
    nan[1, 0] = float("nan")
    inf = p.clone()
    inf[2, 1] = float("inf")
    neg = p.clone()
    neg[0] = torch.tensor([1.2, -0.1, -0.1])
    return [
        ("nan", z, nan, None, r"teacher_probs: contains NaN or inf"),
        ("inf", z, inf, None, r"teacher_probs: contains NaN or inf"),
        ("negative", z, neg, None, r"teacher_probs: contains negative values"),
        ("logits", z, torch.randn(4, 3).abs(), None, r"teacher_probs: rows must sum to 1.*did you pass logits"),
        ("signed logits", z, torch.randn(4, 3), None, r"teacher_probs: .*did you pass logits"),
        ("empty", torch.zeros(0, 3), torch.zeros(0, 3), None, r"teacher_probs: is empty"),
        ("1-d teacher", z, p[0], None, r"teacher_probs: expected 2 dims"),
        ("one class", z[:, :1], torch.ones(4, 1), None, r"teacher_probs: expected at least 2 classes"),
        ("int teacher", z, torch.zeros(4, 3, dtype=torch.long), None, r"teacher_probs: expected a floating-point"),
        ("string teacher", z, "p", None, r"teacher_probs: expected a torch.Tensor, numpy array or list of numbers,"
                                         r" got str"),
        ("text array teacher", z, np.array([["a", "b", "c"]] * 4), None, r"teacher_probs: expected numbers, got an"
                                                                          r" array of dtype <U1"),
        ("shape mismatch", z[:, :2], p, None, r"student_logits: expected shape \(B, C\) = \(4, 3\)"),
        ("batch mismatch", z[:3], p, None, r"student_logits: expected shape"),
        ("int logits", torch.zeros(4, 3, dtype=torch.long), p, None, r"student_logits: expected a floating-point"),
        ("ragged logits", [[0.1, 0.2, 0.3], [0.1]], p, None, r"student_logits: expected a rectangular array"),
        ("label range", z, p, torch.tensor([0, 1, 3, 2]), r"labels: label 3 at position 2 is outside \[0, 3\)"),
        ("negative label", z, p, torch.tensor([0, -1, 1, 2]), r"labels: label -1 .*outside"),
        ("label shape", z, p, torch.tensor([0, 1]), r"labels: expected shape \(4,\)"),
        ("float labels", z, p, torch.zeros(4), r"labels: expected integer class indices"),
    ]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("case", bad_input_cases(), ids=lambda c: c[0])
def test_bad_inputs_raise_naming_the_argument(name, case):
    _, z, p, labels, message = case
    eps = torch.ones(3, 2)
    module = build_loss(name, **({**HPARAMS[name], "eps": eps} if name == "ptloss" else HPARAMS[name]))
    with pytest.raises(ValueError, match=message):
        module(z, p, labels)
    functional = {
        "kl": lambda z, p, labels: kl(z, p, labels=labels),
        "ptloss": lambda z, p, labels: ptloss(z, p, eps, labels=labels),
        "label_smoothing": lambda z, p, labels: label_smoothing(z, p, labels=labels),
        "focal": lambda z, p, labels: focal(z, p, labels=labels),
        "flooding": lambda z, p, labels: flooding(z, p, labels=labels),
        "annealing_kd": lambda z, p, labels: annealing_kd(
            z, p, step=0, total_steps=5, max_temperature=2, labels=labels
        ),
    }[name]
    with pytest.raises(ValueError, match=message):
        functional(z, p, labels)


@pytest.mark.parametrize(
    ("eps", "message"),
    [
        (torch.ones(4, 2), r"eps: expected 3 rows \(one per class\)"),
        (torch.ones(3), r"eps: expected shape \(C, M\)"),
        (torch.ones(2, 3, 2), r"eps: expected shape \(C, M\)"),
        (torch.ones(3, 0), r"eps: expected at least one perturbation order"),
        (torch.tensor([[1.0], [float("nan")], [0.0]]), r"eps: contains NaN or inf"),
        (torch.tensor([[1.0], [float("inf")], [0.0]]), r"eps: contains NaN or inf"),
        ("abc", r"eps: expected a torch.Tensor, numpy array or list of numbers, got str"),
    ],
)
def test_bad_eps(eps, message):
    z, p = make(4, 3)
    with pytest.raises(ValueError, match=message):
        ptloss(z, p, eps)


def test_bad_eps_module():
    z, p = make(4, 3)
    with pytest.raises(ValueError, match=r"eps: has 4 rows \(one per class\) but the inputs have C=3"):
        PTLoss(torch.ones(4, 2))(z, p)
    for eps, message in [
        (torch.ones(3), r"eps: expected shape \(C, M\)"),
        ([[1.0, 2.0], [3.0]], r"eps: expected a \(C, M\) array of numbers"),
        ("abc", r"eps: expected a \(C, M\) array of numbers"),
        ([[1.0, float("nan")]] * 3, r"eps: contains NaN"),
        (np.ones((3, 0)), r"eps: expected at least one perturbation order"),
    ]:
        with pytest.raises(ValueError, match=message):
            PTLoss(eps)


@pytest.mark.parametrize(
    ("name", "hparams", "message"),
    [
        ("kl", {"temperature": 0.0}, r"temperature: expected a value > 0"),
        ("kl", {"temperature": -1.0}, r"temperature: expected a value > 0"),
        ("kl", {"temperature": float("nan")}, r"temperature: expected a finite real number"),
        ("kl", {"temperature": float("inf")}, r"temperature: expected a finite real number"),
        ("kl", {"temperature": "2"}, r"temperature: expected a finite real number"),
        ("kl", {"temperature": True}, r"temperature: expected a finite real number"),
        ("kl", {"reduction": "avg"}, r"reduction: expected one of mean, sum, none"),
        ("ptloss", {"eps": [[1.0]] * 5, "temperature": 0}, r"temperature: expected a value > 0"),
        ("label_smoothing", {"delta": -0.1}, r"delta: expected a value >= 0"),
        ("label_smoothing", {"delta": 1.5}, r"delta: expected a value <= 1"),
        ("focal", {"gamma": -1.0}, r"gamma: expected a value >= 0"),
        ("flooding", {"level": -0.1}, r"level: expected a value >= 0"),
        ("annealing_kd", {"max_temperature": 0, "total_steps": 10}, r"max_temperature: expected an integer >= 1"),
        ("annealing_kd", {"max_temperature": 2.5, "total_steps": 10}, r"max_temperature: expected an integer"),
        ("annealing_kd", {"max_temperature": 3, "total_steps": 0}, r"total_steps: expected an integer >= 1"),
        ("nope", {}, r"name: unknown loss 'nope'; valid losses: annealing_kd, flooding, focal, kl, label_smoothing"),
        ("kl", {"gama": 1.0}, r"gama: unknown hyper-parameter\(s\) of loss 'kl'; valid: temperature, reduction"),
        ("ptloss", {}, r"eps: required hyper-parameter\(s\) of loss 'ptloss' missing"),
        ("annealing_kd", {"max_temperature": 3}, r"total_steps: required hyper-parameter"),
    ],
)
def test_bad_hyper_parameters(name, hparams, message):
    with pytest.raises(ValueError, match=message):
        build_loss(name, **hparams)


def test_bad_hyper_parameters_functional_and_step():
    z, p = make(4, 3)
    cases = [
        (lambda: kl(z, p, temperature=-2.0), r"temperature: expected a value > 0"),
        (lambda: ptloss(z, p, torch.ones(3, 1), temperature=0.0), r"temperature"),
        (lambda: ptloss(z, p, torch.ones(3, 1), reduction="batchmean"), r"reduction: expected one of"),
        (lambda: label_smoothing(z, p, delta=2.0), r"delta: expected a value <= 1"),
        (lambda: focal(z, p, gamma=float("nan")), r"gamma: expected a finite real number"),
        (lambda: flooding(z, p, level=-1.0), r"level: expected a value >= 0"),
        (lambda: annealing_kd(z, p, step=-1, total_steps=5, max_temperature=2), r"step: expected an integer >= 0"),
        (lambda: annealing_kd(z, p, step=1.5, total_steps=5, max_temperature=2), r"step: expected an integer"),
        (lambda: annealing_factor(0, 0, 2), r"total_steps: expected an integer >= 1"),
        (lambda: build_loss("annealing_kd", max_temperature=3, total_steps=5).set_step(-3), r"step: expected an int"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()
