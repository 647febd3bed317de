"""scripts/real_tables.py: statsmodels' bundled tables become CSVs the tabular benchmark reads
(skipped, with the reason, without the ``tables`` extra)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ptdistill.experiments import TabularConfig
from ptdistill.splits import SPLITS
from ptdistill.steps.data import build_splits

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "real_tables.py"


@pytest.fixture(scope="module")
def fair_csv(tmp_path_factory) -> Path:
    pytest.importorskip("statsmodels", reason="the 'tables' extra (statsmodels) is not installed")
    out = tmp_path_factory.mktemp("tables")
    done = subprocess.run([sys.executable, str(SCRIPT), "fair", "--out", str(out)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"{out / 'fair.csv'}: 6366 rows, 18 features, label counts {{0: 4313, 1: 2053}}"
    return out / "fair.csv"


def test_fair_table_shape_labels_and_encoding(fair_csv):
    from statsmodels.datasets import fair

    source = fair.load_pandas().data
    table = pd.read_csv(fair_csv)
    assert table.shape == (6366, 19) and not table.isna().any().any()
    np.testing.assert_array_equal(table["label"], (source["affairs"] > 0).astype(int))
    kept = ["rate_marriage", "age", "yrs_married", "children", "religious", "educ"]
    pd.testing.assert_frame_equal(table[kept], source[kept])
    for column in ("occupation", "occupation_husb"):
        onehot = table[[f"{column}_{code}" for code in range(1, 7)]].to_numpy()
        assert set(np.unique(onehot)) == {0, 1} and (onehot.sum(1) == 1).all()
        np.testing.assert_array_equal(onehot.argmax(1) + 1, source[column].astype(int))
    assert list(table.columns).count("label") == 1 and "affairs" not in table


def test_the_tabular_benchmark_splits_the_exported_table(fair_csv):
    config = TabularConfig()
    config.data.path = str(fair_csv)
    splits, class_names = build_splits(config)
    assert class_names == ["0", "1"]
    assert {name: len(splits[name]) for name in SPLITS} == {"teacher_train": 1273, "distill": 3183,
                                                             "validation": 637, "test": 1273}
    assert all(splits[name].features.shape[1] == 18 for name in SPLITS)
    ids = np.concatenate([splits[name].ids for name in SPLITS])
    np.testing.assert_array_equal(np.sort(ids), np.arange(6366))


def test_every_table_exports_numeric_features_and_its_labels(tmp_path):
    pytest.importorskip("statsmodels", reason="the 'tables' extra (statsmodels) is not installed")
    from statsmodels.datasets import anes96, randhie

    done = subprocess.run([sys.executable, str(SCRIPT), "anes96", "randhie", "--out", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    assert done.stdout.splitlines() == [f"{tmp_path / 'anes96.csv'}: 944 rows, 10 features, label counts {{0: 551, 1: 393}}",
                                        f"{tmp_path / 'randhie.csv'}: 20190 rows, 9 features, label counts {{0: 6308, 1: 13882}}"]
    for path, source, label in ((tmp_path / "anes96.csv", anes96, lambda d: d["vote"].astype(int)),
                                (tmp_path / "randhie.csv", randhie, lambda d: (d["mdvis"] > 0).astype(int))):
        table, data = pd.read_csv(path), source.load_pandas().data
        assert not table.isna().any().any() and all(pd.api.types.is_numeric_dtype(table[c]) for c in table)
        np.testing.assert_array_equal(table["label"], label(data))
        features = [c for c in table if c != "label"]
        pd.testing.assert_frame_equal(table[features], data[features], check_dtype=False)


def test_unknown_table_is_refused_by_name(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "iris", "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and "invalid choice: 'iris'" in done.stderr and not list(tmp_path.iterdir())
