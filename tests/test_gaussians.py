"""Tests of ptdistill.families.mlp.gaussians: the means, sampling, the true posterior against Bayes' rule, splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

from ptdistill.engine import seed_everything
from ptdistill.families.mlp.gaussians import SYNTHETIC_SIZES, GaussianTask, make_splits
from ptdistill.families.mlp.models import MLP, MLPConfig
from ptdistill.families.mlp.training import TrainConfig, predict_probs, train_classifier
from ptdistill.splits import SPLITS

SMALL = {"teacher_train": 50, "distill": 70, "validation": 30, "test": 40}


def test_spec_defaults_and_sizes():
    task = GaussianTask()
    assert (task.num_classes, task.dim, task.sigma, task.data_seed) == (3, 30, 2.0, 0)
    assert dict(SYNTHETIC_SIZES) == {"teacher_train": 2000, "distill": 7000, "validation": 1000, "test": 50000}
    with pytest.raises(TypeError):
        SYNTHETIC_SIZES["test"] = 1  # type: ignore[index]


def test_means_fixed_by_data_seed_distinct_and_ternary():
    task = GaussianTask()
    means = task.means
    assert means.shape == (3, 30)
    assert set(np.unique(means)) <= {-1.0, 0.0, 1.0}
    assert len(np.unique(means, axis=0)) == 3
    np.testing.assert_array_equal(means, GaussianTask().means)
    assert not np.array_equal(means, GaussianTask(data_seed=1).means)
    with pytest.raises(ValueError):
        means[0, 0] = 5.0  # read-only: the task is fixed


def test_means_are_redrawn_until_distinct():
    # In one dimension, three classes need exactly the three values {-1, 0, 1}: most draws collide.
    for seed in range(20):
        means = GaussianTask(num_classes=3, dim=1, data_seed=seed).means
        assert sorted(means[:, 0]) == [-1.0, 0.0, 1.0]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 1}, "num_classes"),
        ({"dim": 0}, "dim"),
        ({"num_classes": 4, "dim": 1}, "distinct means"),
        ({"sigma": 0.0}, "sigma"),
        ({"sigma": float("inf")}, "sigma"),
    ],
)
def test_task_rejects_bad_fields(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GaussianTask(**kwargs)


def test_sample_shapes_dtypes_and_determinism():
    task = GaussianTask(dim=4, sigma=0.5)
    x, y = task.sample(20_000, seed=3)
    assert x.dtype == np.float32 and x.shape == (20_000, 4)
    assert y.dtype == np.int64 and y.shape == (20_000,)
    np.testing.assert_allclose(np.bincount(y) / len(y), 1 / 3, atol=0.015)  # uniform labels
    for k in range(3):
        np.testing.assert_allclose(x[y == k].mean(0), task.means[k], atol=0.03)
        np.testing.assert_allclose(x[y == k].std(0), 0.5, rtol=0.05)
    x2, y2 = task.sample(20_000, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    with pytest.raises(ValueError, match="n: expected an integer >= 1"):
        task.sample(0, seed=0)


def test_posterior_matches_bayes_rule():
    task = GaussianTask()
    x, _ = task.sample(500, seed=1)
    cov = task.sigma**2 * np.eye(task.dim)
    log_joint = np.stack(
        [np.log(1 / 3) + multivariate_normal(task.means[k], cov).logpdf(x.astype(np.float64)) for k in range(3)], 1
    )
    bayes = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    posterior = task.posterior(x)
    assert posterior.dtype == np.float64
    np.testing.assert_allclose(posterior, bayes, rtol=1e-9, atol=1e-12)


def test_posterior_is_stable_far_from_the_means():
    task = GaussianTask(dim=2)
    x = np.array([[1e4, -1e4], [-3e5, 2e5], [0.0, 0.0]])
    posterior = task.posterior(x)
    assert np.isfinite(posterior).all()
    np.testing.assert_allclose(posterior.sum(1), 1.0)
    with pytest.raises(ValueError, match=r"features: expected shape \(n, 2\)"):
        task.posterior(np.zeros((3, 5)))


@pytest.mark.slow
def test_posterior_argmax_reaches_the_bayes_rate_and_beats_a_trained_mlp():
    task = GaussianTask()
    x, y = task.sample(50_000, seed=11)
    posterior = task.posterior(x)
    bayes_accuracy = (posterior.argmax(1) == y).mean()
    # E[max_k p*(k|x)] is the Bayes rate; estimate it on an independent sample.
    x_other, _ = task.sample(50_000, seed=12)
    bayes_rate = task.posterior(x_other).max(1).mean()
    assert abs(bayes_accuracy - bayes_rate) < 0.01
    assert 0.8 < bayes_rate < 0.95  # docs/method.md §7.1: an oracle student got 0.885 in a trial run

    splits = make_splits(task, {"teacher_train": 500}, seed=0)
    seed_everything(0)
    model = MLP(MLPConfig(task.dim, task.num_classes, hidden=(64,)))
    train_classifier(model, splits["teacher_train"], TrainConfig(epochs=5, batch_size=64, lr=2e-3))
    mlp_accuracy = (predict_probs(model, x).argmax(1) == y).mean()
    assert 0.5 < mlp_accuracy < bayes_accuracy


def test_make_splits_shapes_labels_and_pstar():
    task = GaussianTask()
    splits = make_splits(task, SMALL, seed=0)
    assert list(splits) == list(SPLITS)
    for name, split in splits.items():
        assert len(split) == SMALL[name] and split.dim == 30
        np.testing.assert_array_equal(split.ids, np.arange(SMALL[name]))
        np.testing.assert_allclose(split.p_star, task.posterior(split.features))
        assert (split.labels is None) == (name == "distill")


def test_make_splits_deterministic_disjoint_and_independent():
    task = GaussianTask()
    first = make_splits(task, SMALL, seed=0)
    again = make_splits(task, SMALL, seed=0)
    other = make_splits(task, SMALL, seed=1)
    for name in SPLITS:
        assert first[name].fingerprint() == again[name].fingerprint()
        assert first[name].fingerprint() != other[name].fingerprint()
    rows = np.concatenate([s.features for s in first.values()])
    assert len(np.unique(rows, axis=0)) == len(rows)  # no example appears in two splits
    # A split does not depend on which other splits are drawn or their sizes.
    alone = make_splits(task, {"validation": 30}, seed=0)
    assert alone["validation"].fingerprint() == first["validation"].fingerprint()
    # Nor does it coincide with a plain sample drawn with the same integer seed.
    x, _ = task.sample(SMALL["teacher_train"], seed=0)
    assert not np.array_equal(x, first["teacher_train"].features)


@pytest.mark.parametrize(
    ("sizes", "seed", "match"),
    [
        ({"train": 10}, 0, "unknown split"),
        ({"test": 0}, 0, r"sizes\['test'\]"),
        ({"test": 2.5}, 0, r"sizes\['test'\]"),
        ({"test": 5}, -1, "seed"),
    ],
)
def test_make_splits_rejects_bad_arguments(sizes, seed, match):
    with pytest.raises(ValueError, match=match):
        make_splits(GaussianTask(), sizes, seed=seed)


def test_torch_state_is_untouched_by_sampling():
    before = torch.random.get_rng_state()
    make_splits(GaussianTask(), {"test": 10}, seed=0)
    assert torch.equal(before, torch.random.get_rng_state())
