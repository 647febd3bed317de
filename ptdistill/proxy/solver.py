"""The proxy teacher: the distribution that PTLoss pulls a student toward.

For coefficients eps (C, M) and a teacher row p, the proxy teacher is
``q* = argmin_q  KL(p || q) + sum_c p_c sum_m eps[c, m] (1 - q_c)^m`` over the simplex,
solved in logit space z (q = softmax(z)) (docs/method.md §4, KDD'24 §4.2 Eq. (17)-(19)).  Its gradient
(docs/method.md §4.2) is
``g = q (1 + S) - p - h`` with ``h_c = p_c q_c phi_c`` and ``S = sum_c h_c``.

Why this solver is fast and exact.  The Hessian in z has the closed form
``H = P^T diag(delta) P`` with ``P = I - 1 q^T`` and ``delta = q * kappa``,
``kappa = 1 + S - d``, ``d_c = p_c (phi_c + q_c dphi_c/dq_c)``: a diagonal seen through a
rank-one projector.  A Newton step on the hyperplane ``q . w = 0`` (softmax ignores shifts
along 1) is therefore O(C) in closed form, ``w = (tau - g / q) / (kappa + mu)`` with one
scalar ``tau``, for every example at once: no C x C matrix is ever built.  The loss is not
convex in z for every eps, so the step is a Levenberg-Marquardt step damped in the Fisher
metric of the softmax (``mu * P^T diag(q) P``, which only shifts kappa by mu), accepted only
when the loss goes down, with mu raised until the damped model is positive definite.  Every
example reports its final max |g|.  Convergence is quadratic except at degenerate minima
(some kappa -> 0, e.g. every eps near -1 on a peaked teacher), where it is linear and can take
a few thousand iterations: hence the large ``max_iter``; converged rows leave the working set,
so stragglers cost little.

Implicit differentiation uses the same structure: ``dq*/deps`` needs one more O(C) solve
with H, which lets the coefficient search follow the gradient of its criterion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ptdistill.arrays import ArrayLike, as_tensor
from ptdistill.checks import check_eps, check_probs

#: Teacher probabilities are clamped here before taking logs for the starting point.
_INIT_FLOOR = 1e-12
#: Largest Newton step (in logits) taken at once.
_MAX_STEP = 10.0


@dataclass
class ProxySolution:
    """A batch of solved proxy teachers.

    ``probs`` (..., N, C) float64; ``logits`` (..., N, C) float64 the solution in logit space,
    shifted so each row's largest logit is 0 (a warm start for nearby coefficients); ``max_grad``
    (..., N) float64 the final max |dl/dz| of each example; ``converged`` (..., N) bool whether it
    reached the tolerance; ``iterations`` the most any chunk of rows used.  ``...`` is (K,) for a
    batch of K coefficient sets, empty for one.
    """

    probs: torch.Tensor
    logits: torch.Tensor
    max_grad: torch.Tensor
    converged: torch.Tensor
    iterations: int


@dataclass
class _State:
    """Loss, gradient and curvature of the PTLoss objective at logits z.

    The solver stores rows class-major, (C, R): for small C the per-row reductions over
    classes are then adds of C contiguous slices instead of short strided reductions.
    """

    loss: torch.Tensor  # (R,)
    grad: torch.Tensor  # (C, R)
    q: torch.Tensor  # (C, R)
    kappa: torch.Tensor  # (C, R); Hessian = P^T diag(q * kappa) P
    gmax: torch.Tensor  # (R,)


def _polynomial(u: torch.Tensor, coef: list[torch.Tensor]):
    """P(u) = sum_m coef[m-1] u^m with its first and second u-derivatives (Horner)."""
    p, dp, ddp = coef[-1], None, None
    for c in [*reversed(coef[:-1]), None]:  # None: the zero constant term
        if dp is not None:
            ddp = 2 * dp if ddp is None else torch.addcmul(2 * dp, ddp, u)
        dp = p if dp is None else torch.addcmul(p, dp, u)
        p = p * u if c is None else torch.addcmul(c, p, u)
    return p, dp, torch.zeros_like(u) if ddp is None else ddp


def _evaluate(z: torch.Tensor, p: torch.Tensor, coef: list[torch.Tensor], dim: int) -> _State:
    """PTLoss (without the constant teacher entropy), its z-gradient and curvature; classes on ``dim``."""
    logq = torch.log_softmax(z, dim=dim)
    q = logq.exp()
    u = -torch.expm1(logq)  # 1 - q, accurate near q = 1
    poly, phi, dphi_du = _polynomial(u, coef)
    loss = (p * (poly - logq)).sum(dim)
    h = p * q * phi
    s1 = 1 + h.sum(dim, keepdim=True)
    grad = q * s1 - p - h
    kappa = s1 - p * (phi - q * dphi_du)
    return _State(loss=loss, grad=grad, q=q, kappa=kappa, gmax=grad.abs().amax(dim))


def _newton_step(st: _State, mu: torch.Tensor):
    """Damped Newton step on the hyperplane q . w = 0, and whether its model is convex.

    Solves ``P^T diag(q (kappa + mu)) P w = -g``.  The quadratic model restricted to the
    hyperplane is positive definite when every kappa + mu > 0, or when exactly one is
    negative and ``sum_c q_c / (kappa_c + mu) < 0`` (the bordered-Hessian test).
    """
    k = st.kappa + mu
    nonpos = (k <= 0).sum(0)
    r = 1.0 / torch.where(k == 0, 1e-300, k)
    qr = (st.q * r).sum(0)
    convex = (nonpos == 0) | ((nonpos == 1) & (qr < 0))
    g_over_q = st.grad / st.q.clamp_min(1e-300)
    tau = (st.grad * r).sum(0) / qr
    w = (tau - g_over_q) * r
    w = w * (_MAX_STEP / w.abs().amax(0).clamp_min(1e-300)).clamp(max=1.0)
    # Predicted decrease of the undamped quadratic model: -(g.w + w^T H w / 2), w^T H w = sum q kappa w^2.
    predicted = -(st.grad * w + 0.5 * st.q * st.kappa * w * w).sum(0)
    return w, convex, predicted


#: Rows solved together: about this many (row, class) entries stay in cache between ops.
_CHUNK_ENTRIES = 1 << 18


def _select(st: _State, keep: torch.Tensor) -> _State:
    return _State(st.loss[keep], st.grad[:, keep], st.q[:, keep], st.kappa[:, keep], st.gmax[keep])


def _merge(accept: torch.Tensor, new: _State, old: _State) -> _State:
    return _State(*(torch.where(accept, a, b) for a, b in zip(
        (new.loss, new.grad, new.q, new.kappa, new.gmax), (old.loss, old.grad, old.q, old.kappa, old.gmax))))


def _solve_rows(z, p, coef, tol: float, max_iter: int):
    """Levenberg-Marquardt on class-major rows z (C, R); rows leave the working set once converged.

    Returns the final logits, probabilities (C, R), max |g| per row and the iterations used.
    """
    out_z, out_q = z.clone(), torch.empty_like(z)
    out_g = torch.empty(z.shape[1], dtype=z.dtype, device=z.device)
    idx = torch.arange(z.shape[1], device=z.device)
    st = _evaluate(z, p, coef, 0)
    mu = torch.zeros_like(st.loss)
    it = 0
    while True:
        done = st.gmax <= tol
        if it == max_iter or bool(done.all()):
            done = torch.ones_like(done)
        if bool(done.any()):
            out_z[:, idx[done]], out_q[:, idx[done]], out_g[idx[done]] = z[:, done], st.q[:, done], st.gmax[done]
            keep = ~done
            if not bool(keep.any()):
                return out_z, out_q, out_g, it
            idx, z, p, mu, st = idx[keep], z[:, keep], p[:, keep], mu[keep], _select(st, keep)
            coef = [c[:, keep] for c in coef]
        it += 1
        w, convex, predicted = _newton_step(st, mu)
        trial = _evaluate(z + w, p, coef, 0)
        actual = st.loss - trial.loss
        rho = actual / predicted.clamp_min(1e-300)
        # Near the optimum the decrease drowns in rounding: then a smaller gradient decides.
        noise = 1e-13 * (1 + st.loss.abs())
        accept = convex & ((rho > 1e-4) | ((actual.abs() <= noise) & (trial.gmax < st.gmax)))
        z = torch.where(accept, z + w, z)
        st = _merge(accept, trial, st)
        # Trust the model more when it predicted well, less when it did not.
        good = mu * torch.where(rho > 0.75, 0.1, torch.where(rho > 0.25, 1.0, 2.0))
        good = torch.where(good < 1e-6, 0.0, good)
        bad = torch.clamp(mu * 4, min=1e-2)
        # Where the damped model is not convex, raise mu until every kappa + mu > 0.
        needed = (1e-3 - st.kappa.amin(0)).clamp_min(0.0) + 1e-2
        mu = torch.where(accept, good, torch.where(convex, bad, torch.maximum(mu * 4, needed)))


def _renormalised(teacher_probs: torch.Tensor) -> torch.Tensor:
    """float64 rows rescaled to sum to 1 exactly.

    Inputs may be off by up to the checks' tolerance (float32 teachers, rounded CSVs); the
    gradient's entries sum to 1 - sum(p), so without this no row could reach the tolerance.
    """
    p = teacher_probs.detach().to(torch.float64)
    return p / p.sum(-1, keepdim=True)


def solve_proxy(
    teacher_probs: ArrayLike,
    eps: ArrayLike,
    *,
    tol: float = 1e-8,
    max_iter: int = 5000,
    init: ArrayLike | None = None,
) -> ProxySolution:
    """Solve the proxy teacher of every row for one coefficient set or a batch of them.

    teacher_probs (N, C); eps (C, M) or (K, C, M); ``init`` optional starting logits of the
    output's shape (default: the teacher's own logits); each a tensor, numpy array or list.
    Computes in float64 on the teacher's device (CPU for arrays and lists) and returns torch
    tensors there (see :class:`ProxySolution`).  The loss decreases at every accepted step;
    convergence means max |g| <= tol (docs/method.md §4.3).  A row that does not converge within
    ``max_iter`` iterations is returned as it stands, flagged in ``converged``: no error.
    Raises ValueError when the teacher rows are not probabilities (N, C) or ``eps`` is not
    finite or not (C, M) / (K, C, M) with the teacher's C.
    """
    teacher_probs, eps, init = _tensors(teacher_probs, eps, init)
    check_probs("teacher_probs", teacher_probs)
    n, c = teacher_probs.shape
    check_eps("eps", eps, c, allow_batch=True)
    single = eps.ndim == 2
    device = teacher_probs.device
    p = _renormalised(teacher_probs)
    e = eps.detach().to(device=device, dtype=torch.float64)
    if single:
        e = e.unsqueeze(0)
    k = e.shape[0]
    if init is None:
        z = torch.log(p.clamp_min(_INIT_FLOOR)).repeat(k, 1)
    else:
        z = init.detach().to(device=device, dtype=torch.float64).reshape(k * n, c)
    rows = max(1, _CHUNK_ENTRIES // c)
    zs, qs, gs, iters = [], [], [], 0
    with torch.no_grad():
        for lo in range(0, k * n, rows):
            r = torch.arange(lo, min(lo + rows, k * n), device=device)
            coef = list(e[r // n].permute(2, 1, 0).contiguous())  # M tensors (C, R)
            zr, qr, gr, it = _solve_rows(z[r].T.contiguous(), p[r % n].T.contiguous(), coef, tol, max_iter)
            zs.append(zr.T), qs.append(qr.T), gs.append(gr)
            iters = max(iters, it)
    z, q, g = torch.cat(zs).reshape(k, n, c), torch.cat(qs).reshape(k, n, c), torch.cat(gs).reshape(k, n)
    z = z - z.amax(-1, keepdim=True)
    if single:
        z, q, g = z[0], q[0], g[0]
    return ProxySolution(probs=q, logits=z, max_grad=g, converged=g <= tol, iterations=iters)


def _tensors(teacher_probs: ArrayLike, eps: ArrayLike, init: ArrayLike | None):
    """The solver's inputs as tensors (:func:`~ptdistill.arrays.as_tensor`), eps and init on the teacher's device."""
    teacher_probs = as_tensor("teacher_probs", teacher_probs)
    eps = as_tensor("eps", eps, teacher_probs.device)
    return teacher_probs, eps, None if init is None else as_tensor("init", init, teacher_probs.device)


def proxy_teacher(teacher_probs: ArrayLike, eps: ArrayLike) -> torch.Tensor:
    """Proxy-teacher probabilities: a float64 torch tensor (N, C) for eps (C, M), or (K, N, C) for
    (K, C, M), on the teacher's device; inputs as tensors, numpy arrays or lists.

    docs/method.md §4.1 (KDD'24 §4.2, Eq. (19)); errors as :func:`solve_proxy`.
    """
    return solve_proxy(teacher_probs, eps).probs


class _ProxyTeacherFunction(torch.autograd.Function):
    """q*(eps) with gradients by implicit differentiation of g(z*, eps) = 0.

    ``dL/deps[k,c,m] = sum_n p_nc q_nc m (1 - q_nc)^(m-1) v_nc`` where v solves H v = dL/dz on
    the hyperplane q . v = 0; with H = P^T diag(q kappa) P that solve is O(C) per example.
    """

    @staticmethod
    def forward(ctx, teacher_probs, eps, init):  # noqa: D102 - documented on the class
        sol = solve_proxy(teacher_probs, eps, init=init)
        ctx.save_for_backward(teacher_probs, eps, sol.logits)
        ctx.solution = sol
        return sol.probs

    @staticmethod
    def backward(ctx, grad_q):  # noqa: D102
        teacher_probs, eps, z = ctx.saved_tensors
        e = eps.detach().to(torch.float64)
        p = _renormalised(teacher_probs)
        batched = e.ndim == 3
        if not batched:
            e, z, grad_q = e.unsqueeze(0), z.unsqueeze(0), grad_q.unsqueeze(0)
        coef = [e[:, None, :, m] for m in range(e.shape[-1])]  # (K, 1, C) broadcast over N
        st = _evaluate(z, p.unsqueeze(0), coef, -1)
        q, gq = st.q, grad_q.to(torch.float64)
        b = q * (gq - (q * gq).sum(-1, keepdim=True))  # dL/dz, orthogonal to 1
        r = 1.0 / st.kappa
        tau = -(b * r).sum(-1, keepdim=True) / (q * r).sum(-1, keepdim=True)
        v = (b / q.clamp_min(1e-300) + tau) * r
        u = -torch.expm1(torch.log(q.clamp_min(1e-300)))
        base = p * q * v  # (K, N, C)
        powers = torch.stack([m * u ** (m - 1) for m in range(1, e.shape[-1] + 1)], -1)
        grad_eps = (base.unsqueeze(-1) * powers).sum(-3)
        if not batched:
            grad_eps = grad_eps[0]
        return None, grad_eps.to(eps.dtype), None


def proxy_teacher_differentiable(
    teacher_probs: ArrayLike, eps: ArrayLike, init: ArrayLike | None = None
) -> tuple[torch.Tensor, ProxySolution]:
    """Like :func:`proxy_teacher`, but differentiable with respect to ``eps`` (a tensor that requires grad).

    Returns the probabilities (in the autograd graph; shapes and dtype as :func:`proxy_teacher`)
    and the full solution, whose ``logits`` warm-start the next call for nearby coefficients.
    The gradient comes from implicit differentiation of the stationary point (docs/method.md
    §4.3); errors as :func:`solve_proxy`.
    """
    teacher_probs, eps, init = _tensors(teacher_probs, eps, init)
    if not (torch.is_grad_enabled() and eps.requires_grad):
        sol = solve_proxy(teacher_probs, eps, init=init)
        return sol.probs, sol
    probs = _ProxyTeacherFunction.apply(teacher_probs, eps, init)
    return probs, probs.grad_fn.solution
