"""Tests of ptdistill.families.mlp.split (FeatureSplit, parquet round trips) and ptdistill.families.mlp.models (MLP)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from ptdistill.families.mlp.models import CONFIG_NAME, MLP, WEIGHTS_NAME, MLPConfig, weights_hash
from ptdistill.families.mlp.split import FeatureSplit


def make_split(n=6, d=3, c=3, *, labels=True, p_star=True, seed=0) -> FeatureSplit:
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(c), n)
    return FeatureSplit(
        features=rng.normal(size=(n, d)),
        labels=rng.integers(0, c, n) if labels else None,
        p_star=probs if p_star else None,
        ids=np.arange(100, 100 + n),
    )


# ----------------------------------------------------------------------------- FeatureSplit


def test_split_coerces_dtypes_and_defaults_ids():
    split = FeatureSplit(features=np.ones((4, 2), dtype=np.float64), labels=np.array([0, 1, 1, 0], dtype=np.int32))
    assert split.features.dtype == np.float32 and split.labels.dtype == np.int64
    assert split.ids.dtype == np.int64
    np.testing.assert_array_equal(split.ids, np.arange(4))
    assert len(split) == 4 and split.dim == 2 and split.p_star is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": np.ones(4)}, r"features: expected shape \(n, d\)"),
        ({"features": np.ones((0, 2))}, "features"),
        ({"features": np.array([["a", "b"]])}, "features: expected numbers"),
        ({"features": np.ones((3, 2)), "labels": np.array([0.0, 1.0, 1.0])}, "labels: expected integer"),
        ({"features": np.ones((3, 2)), "labels": np.array([0, 1])}, r"labels: expected shape \(3,\)"),
        ({"features": np.ones((3, 2)), "labels": np.array([0, -1, 1])}, "labels: expected class indices >= 0"),
        ({"features": np.ones((3, 2)), "p_star": np.ones((2, 3)) / 3}, r"p_star: expected shape \(3, C\)"),
        ({"features": np.array([[1.0], [np.nan]])}, r"features: contain NaN or inf \(first in row 1\)"),
        ({"features": np.ones((1, 2)), "p_star": np.array([[np.nan, 1.0]])}, "p_star: expected finite"),
        ({"features": np.ones((3, 2)), "ids": np.array([1, 1, 2])}, "ids: expected unique"),
        ({"features": np.ones((3, 2)), "ids": np.array([0.0, 1.0, 2.0])}, "ids: expected integers"),
    ],
)
def test_split_rejects_bad_arrays(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeatureSplit(**kwargs)


@pytest.mark.parametrize(("labels", "p_star"), [(True, True), (False, True), (True, False), (False, False)])
def test_split_save_load_round_trip(tmp_path, labels, p_star):
    split = make_split(labels=labels, p_star=p_star)
    path = split.save(tmp_path / "sub" / "split.parquet")
    schema = pq.read_schema(path)
    assert schema.field("id").type == pa.int64()
    assert schema.field("features").type == pa.list_(pa.float32())
    assert ("label" in schema.names) == labels
    assert ("p_star" in schema.names) == p_star
    if p_star:
        assert schema.field("p_star").type == pa.list_(pa.float64())
    loaded = FeatureSplit.load(path)
    for name in ("features", "labels", "p_star", "ids"):
        original, back = getattr(split, name), getattr(loaded, name)
        if original is None:
            assert back is None
        else:
            assert back.dtype == original.dtype
            np.testing.assert_array_equal(back, original)
    assert loaded.fingerprint() == split.fingerprint()
    assert not list(path.parent.glob(".*.tmp"))  # the temporary file was renamed away


def test_fingerprint_is_stable_and_content_sensitive():
    split = make_split()
    assert split.fingerprint() == make_split().fingerprint()
    assert len(split.fingerprint()) == 64
    changed = make_split()
    changed.features[0, 0] += 1.0
    assert changed.fingerprint() != split.fingerprint()
    assert make_split(labels=False).fingerprint() != split.fingerprint()
    # Same bytes, other shape: another fingerprint.
    wide, tall = split.features.reshape(3, 6), split.features.reshape(9, 2)
    assert FeatureSplit(features=wide).fingerprint() != FeatureSplit(features=tall).fingerprint()
    # A fixed content has a fixed fingerprint, whatever the input dtypes before conversion
    # (and across processes and platforms: it is a cache key).
    fixed = FeatureSplit(features=np.arange(6).reshape(3, 2), labels=np.array([0, 1, 0], dtype=np.int32))
    assert fixed.fingerprint() == FeatureSplit(features=np.arange(6.0).reshape(3, 2), labels=[0, 1, 0]).fingerprint()
    assert fixed.fingerprint() == "e64372988af91e48e68f1d0dc55dbb7c65e4292274e06f48857aa759c0f36bfe"


def _write(path, columns: dict) -> None:
    pq.write_table(pa.table(columns), path)


@pytest.mark.parametrize(
    ("columns", "match"),
    [
        ({"features": pa.array([[1.0], [2.0]])}, r"missing column\(s\) \['id'\]"),
        ({"id": pa.array([0, 1]), "features": pa.array([1.0, 2.0])}, "column 'features' has type double"),
        ({"id": pa.array([0, 1]), "features": pa.array([[1.0, 2.0], [3.0]])}, "row 1 has 1 values"),
        ({"id": pa.array([0, 1]), "features": pa.array([[1.0], None])}, "null row"),
        ({"id": pa.array([0, 1]), "features": pa.array([[1.0], [None]])}, "null values inside lists"),
        ({"id": pa.array([0.0, 1.0]), "features": pa.array([[1.0], [2.0]])}, "column 'id' has type double"),
        ({"id": pa.array([0, 0]), "features": pa.array([[1.0], [2.0]])}, "ids: expected unique"),
        (
            {"id": pa.array([0, 1]), "features": pa.array([[1.0], [2.0]]), "label": pa.array([0, None])},
            "column 'label' has 1 null",
        ),
        (
            {"id": pa.array([0, 1]), "features": pa.array([[1.0], [2.0]]), "p_star": pa.array([[1.0], [1.0]])},
            "p_star: expected shape",
        ),
        ({"id": pa.array([], pa.int64()), "features": pa.array([], pa.list_(pa.float32()))}, "has no rows"),
    ],
)
def test_load_errors_name_the_file(tmp_path, columns, match):
    path = tmp_path / "bad.parquet"
    _write(path, columns)
    with pytest.raises(ValueError, match=match) as info:
        FeatureSplit.load(path)
    assert str(path) in str(info.value)


def test_load_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="nope.parquet: file not found"):
        FeatureSplit.load(tmp_path / "nope.parquet")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_text("not parquet")
    with pytest.raises(ValueError, match="garbage.parquet: not a readable parquet file"):
        FeatureSplit.load(garbage)


# ----------------------------------------------------------------------------- MLP


def test_mlp_shapes_and_parameter_count():
    model = MLP(MLPConfig(input_dim=30, num_classes=3))
    assert model(torch.zeros(5, 30)).shape == (5, 3)
    assert model.num_parameters() == (30 * 128 + 128) + (128 * 128 + 128) + (128 * 3 + 3)
    model.layers[0].weight.requires_grad_(False)
    assert model.num_parameters(trainable_only=True) == model.num_parameters() - 30 * 128
    tiny = MLP(MLPConfig(input_dim=4, num_classes=2, hidden=(), activation="tanh"))
    assert tiny.num_parameters() == 4 * 2 + 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_dim": 0, "num_classes": 3}, "input_dim"),
        ({"input_dim": 3, "num_classes": 1}, "num_classes"),
        ({"input_dim": 3, "num_classes": 3, "hidden": (8, 0)}, r"hidden\[1\]"),
        ({"input_dim": 3, "num_classes": 3, "hidden": 8}, "hidden: expected a sequence"),
        ({"input_dim": 3, "num_classes": 3, "activation": "sigmoid"}, "activation: expected one of relu"),
    ],
)
def test_mlp_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLPConfig(**kwargs)


def test_mlp_save_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(0)
    model = MLP(MLPConfig(input_dim=5, num_classes=3, hidden=(16, 8), activation="gelu"))
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / CONFIG_NAME).read_text()) == {
        "input_dim": 5, "num_classes": 3, "hidden": [16, 8], "activation": "gelu"
    }
    loaded = MLP.from_pretrained(tmp_path / "m")
    assert loaded.config == model.config and isinstance(loaded.config.hidden, tuple)
    x = torch.randn(7, 5)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_weights_hash_tracks_the_weights(tmp_path):
    torch.manual_seed(0)
    model = MLP(MLPConfig(input_dim=5, num_classes=3, hidden=(8,)))
    model.save_pretrained(tmp_path / "a")
    model.save_pretrained(tmp_path / "b")
    assert weights_hash(tmp_path / "a") == weights_hash(tmp_path / "b")
    assert len(weights_hash(tmp_path / "a")) == 64
    with torch.no_grad():
        model.layers[0].bias[0] += 1e-3
    model.save_pretrained(tmp_path / "c")
    assert weights_hash(tmp_path / "c") != weights_hash(tmp_path / "a")
    with pytest.raises(ValueError, match=f"missing {WEIGHTS_NAME}"):
        weights_hash(tmp_path / "nothing")


def test_from_pretrained_errors_name_the_directory(tmp_path):
    with pytest.raises(ValueError, match=r"empty: missing config.json, model.pt"):
        MLP.from_pretrained(tmp_path / "empty")

    MLP(MLPConfig(input_dim=5, num_classes=3, hidden=(8,))).save_pretrained(tmp_path / "m")
    config_path = tmp_path / "m" / CONFIG_NAME
    good = json.loads(config_path.read_text())

    config_path.write_text(json.dumps({**good, "dropout": 0.1}))
    with pytest.raises(ValueError, match=r"config.json: unknown key dropout"):
        MLP.from_pretrained(tmp_path / "m")

    config_path.write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not valid JSON"):
        MLP.from_pretrained(tmp_path / "m")

    config_path.write_text(json.dumps({**good, "hidden": [9]}))
    with pytest.raises(ValueError, match="model.pt: weights do not match config.json"):
        MLP.from_pretrained(tmp_path / "m")

    config_path.write_text(json.dumps(good))
    (tmp_path / "m" / WEIGHTS_NAME).write_bytes(b"garbage")
    with pytest.raises(ValueError, match="model.pt: not a readable state dict"):
        MLP.from_pretrained(tmp_path / "m")

    (tmp_path / "m" / WEIGHTS_NAME).unlink()
    with pytest.raises(ValueError, match=r"m: missing model.pt; expected a directory written by MLP.save_pretrained"):
        MLP.from_pretrained(tmp_path / "m")
