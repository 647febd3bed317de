"""The own-loop API takes numpy arrays and lists as well as tensors (README: "In your own training loop")."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from ptdistill.arrays import as_tensor
from ptdistill.losses import LOSSES, build_loss, ptloss
from ptdistill.proxy import proxy_teacher, proxy_teacher_differentiable, quality, search, solve_proxy
from ptdistill.synthetic import noisy_teacher

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _readme(teacher_probs_val, labels_val, student_logits, teacher_probs):
    """The README's snippet, verbatim."""
    from ptdistill.losses import build_loss
    from ptdistill.proxy import search

    result = search(teacher_probs_val, labels_val, max_order=5, trials=100)   # Algorithm 1
    loss_fn = build_loss("ptloss", eps=result.eps)                            # or "kl", "focal", ...
    loss = loss_fn(student_logits, teacher_probs)
    return result, loss


@pytest.mark.slow
def test_readme_snippet_runs_on_numpy_inputs_with_the_tensor_value_and_gradients():
    val_probs, val_labels = noisy_teacher(90, 3, seed=1)
    train_probs, _ = noisy_teacher(16, 3, seed=2)
    logits = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))

    tensor_logits = logits.clone().requires_grad_(True)
    expected, expected_loss = _readme(val_probs, val_labels, tensor_logits, train_probs)
    expected_loss.backward()

    numpy_logits = logits.clone().requires_grad_(True)
    result, loss = _readme(val_probs.numpy(), val_labels.numpy(), numpy_logits, train_probs.numpy())
    loss.backward()

    assert isinstance(result.eps, np.ndarray) and result.eps.dtype == np.float64 and result.eps.shape[0] == 3
    np.testing.assert_array_equal(result.eps, expected.eps)
    assert result.table.drop(columns="eps").equals(expected.table.drop(columns="eps"))
    assert isinstance(loss, torch.Tensor) and loss.shape == () and loss.dtype == torch.float32
    assert loss.item() == expected_loss.item()
    torch.testing.assert_close(numpy_logits.grad, tensor_logits.grad, rtol=0, atol=0)
    assert numpy_logits.grad.abs().sum() > 0

    lists, list_loss = _readme(val_probs.tolist(), val_labels.tolist(), logits.clone(), train_probs.tolist())
    np.testing.assert_array_equal(lists.eps, expected.eps)
    assert list_loss.item() == pytest.approx(expected_loss.item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_takes_numpy_teacher_and_labels(name):
    probs, labels = noisy_teacher(8, 3, seed=0)
    logits = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    hparams = {"ptloss": {"eps": np.ones((3, 2))}, "annealing_kd": {"max_temperature": 2, "total_steps": 4}}
    loss_fn = build_loss(name, **hparams.get(name, {}))
    assert loss_fn(logits, probs.numpy(), labels.numpy()).item() == loss_fn(logits, probs, labels).item()


def test_ptloss_functional_takes_numpy_eps_and_logits():
    probs, _ = noisy_teacher(8, 3, seed=0)
    logits = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eps = np.array([[0.5, 1.0], [2.0, 0.0], [1.0, 1.0]])
    expected = ptloss(logits, probs, torch.from_numpy(eps))
    got = ptloss(logits.numpy(), probs.numpy(), eps)
    assert got.dtype == torch.float64 and got.item() == expected.item()


def test_proxy_solver_takes_numpy_and_returns_float64_tensors():
    probs, labels = noisy_teacher(20, 3, seed=0)
    eps = np.array([[1.0], [2.0], [0.5]])
    q = proxy_teacher(probs.numpy(), eps)
    assert isinstance(q, torch.Tensor) and q.dtype == torch.float64 and q.shape == (20, 3)
    torch.testing.assert_close(q, proxy_teacher(probs, torch.from_numpy(eps)), rtol=0, atol=0)
    torch.testing.assert_close(solve_proxy(probs.tolist(), eps.tolist()).probs, q, rtol=0, atol=0)
    assert quality(q.numpy(), labels.numpy()).item() == quality(q, labels).item()
    eps_t = torch.from_numpy(eps).requires_grad_(True)  # a tensor that needs a gradient stays one
    out, _ = proxy_teacher_differentiable(probs.numpy(), eps_t)
    out[:, 0].sum().backward()
    assert eps_t.grad is not None and eps_t.grad.shape == (3, 1)


def test_as_tensor_passes_tensors_through_and_names_bad_input():
    t = torch.ones(2, requires_grad=True)
    assert as_tensor("x", t) is t
    assert as_tensor("x", [1, 2]).dtype == torch.int64 and as_tensor("x", [0.5, 1]).dtype == torch.float64
    assert as_tensor("x", np.arange(6.0)[::-2]).tolist() == [5.0, 3.0, 1.0]  # negative strides
    with pytest.raises(ValueError, match=re.escape("labels: expected a torch.Tensor, numpy array or list of numbers,"
                                                   " got dict")):
        as_tensor("labels", {"a": 1})
    with pytest.raises(ValueError, match=re.escape("labels: expected numbers, got an array of dtype <U1")):
        as_tensor("labels", ["a", "b"])
    with pytest.raises(ValueError, match="teacher_probs: expected a rectangular array of numbers"):
        search([[0.5, 0.5], [1.0]], [0, 1])


def test_read_only_arrays_become_tensors_without_a_warning_and_keep_their_values(recwarn):
    """A parquet column is read-only memory: torch warns on it ("not writable") unless it is copied."""
    array = np.array([[0.25, 0.75], [0.5, 0.5]])
    array.flags.writeable = False
    tensor = as_tensor("probs", array)
    assert torch.equal(tensor, torch.tensor([[0.25, 0.75], [0.5, 0.5]], dtype=torch.float64))
    assert not [w for w in recwarn if "not writable" in str(w.message)]
    writable = np.array([1.0, 2.0])
    assert as_tensor("x", writable).data_ptr() == writable.ctypes.data  # no copy where none is needed
