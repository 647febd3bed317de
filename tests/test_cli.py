"""The ``ptdistill`` command line: file round trips, the console script, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from ptdistill.cli import main
from ptdistill.synthetic import noisy_teacher

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N, C = 40, 3
TRIALS, MAX_ORDER = 4, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def teacher():
    probs, labels = noisy_teacher(N, C, seed=4)
    return probs.numpy(), labels.numpy()


def _check_result(out: Path, c: int = C, trials: int = TRIALS, max_order: int = MAX_ORDER) -> dict:
    payload = json.loads(out.read_text())
    eps = np.asarray(payload["eps"], dtype=np.float64)
    assert 1 <= payload["order"] <= max_order
    assert eps.shape == (c, payload["order"])
    assert np.isfinite(payload["score"]) and payload["score"] >= 0
    assert payload["criterion"] == "q" and payload["strategy"] == "random"
    assert len(payload["candidates"]) == max_order * trials
    assert min(row["q"] for row in payload["candidates"]) == pytest.approx(payload["score"], rel=1e-8)
    png = out.with_suffix(".png")
    assert payload["plot"] == png.name
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # atomic write left nothing
    return payload


def _search_args(out: Path, *extra: str, trials: int = TRIALS) -> list[str]:
    return ["search", *extra, "--trials", str(trials), "--max-order", str(MAX_ORDER), "--out", str(out)]


# ---------------------------------------------------------------- round trips


def test_npy_round_trip(tmp_path, teacher, capsys):
    probs, labels = teacher
    np.save(tmp_path / "probs.npy", probs)
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "result.json"
    code = main(_search_args(out, "--teacher-probs", str(tmp_path / "probs.npy"), "--labels",
                             str(tmp_path / "labels.npy")))
    assert code == 0
    payload = _check_result(out)
    stdout = capsys.readouterr().out
    assert "best order" in stdout and str(out) in stdout
    # Same input through the library gives the same choice.
    from ptdistill.proxy import search

    direct = search(torch.from_numpy(probs), torch.from_numpy(labels), max_order=MAX_ORDER, trials=TRIALS)
    np.testing.assert_array_equal(np.asarray(payload["eps"]), direct.eps)


def test_csv_with_labels_column_round_trip(tmp_path, teacher):
    probs, labels = teacher
    frame = pd.DataFrame(probs, columns=[f"p{i}" for i in range(C)])
    frame["y"] = labels
    frame.to_csv(tmp_path / "teacher.csv", index=False)
    out = tmp_path / "nested" / "result.json"
    assert main(_search_args(out, "--teacher-probs", str(tmp_path / "teacher.csv"), "--labels-column", "y")) == 0
    _check_result(out)


def test_csv_with_prob_columns(tmp_path, teacher):
    probs, labels = teacher
    frame = pd.DataFrame(probs, columns=["a", "b", "c"])
    frame.insert(0, "id", np.arange(N))  # an extra numeric column that is not a probability
    frame["label"] = labels
    frame.to_csv(tmp_path / "teacher.csv", index=False)
    out = tmp_path / "result.json"
    args = _search_args(out, "--teacher-probs", str(tmp_path / "teacher.csv"), "--labels-column", "label",
                        "--prob-columns", "a,b,c")
    assert main(args) == 0
    _check_result(out)


def test_parquet_list_column_with_labels_file(tmp_path, teacher):
    probs, labels = teacher
    pd.DataFrame({"probs": list(probs)}).to_parquet(tmp_path / "teacher.parquet")
    pd.DataFrame({"label": labels}).to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "result.json"
    args = _search_args(out, "--teacher-probs", str(tmp_path / "teacher.parquet"), "--labels",
                        str(tmp_path / "labels.csv"))
    assert main(args) == 0
    _check_result(out)


def test_synthetic(tmp_path):
    out = tmp_path / "result.json"
    assert main(_search_args(out, "--synthetic", "200x3")) == 0
    _check_result(out)


def test_search_with_three_trials(tmp_path):
    out = tmp_path / "result.json"
    assert main(_search_args(out, "--synthetic", "100x3", trials=3)) == 0
    _check_result(out, trials=3)


def test_csv_rounded_to_six_decimals_converges(tmp_path, teacher):
    probs, labels = teacher
    frame = pd.DataFrame(probs, columns=[f"p{i}" for i in range(C)])
    frame["label"] = labels
    frame.to_csv(tmp_path / "teacher.csv", index=False, float_format="%.6f")
    out = tmp_path / "result.json"
    assert main(_search_args(out, "--teacher-probs", str(tmp_path / "teacher.csv"), "--labels-column", "label")) == 0
    payload = _check_result(out)
    assert all(row["converged"] == 1.0 for row in payload["candidates"])


# ---------------------------------------------------------------- the console script


@pytest.mark.slow
def test_console_script_help():
    script = Path(sys.executable).parent / "ptdistill"
    if not script.exists():
        pytest.skip(f"console script not installed at {script}")
    done = subprocess.run([str(script), "search", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "--teacher-probs" in done.stdout and "--labels-column" in done.stdout


@pytest.mark.slow
def test_python_m_ptdistill_search(tmp_path):
    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, "-m", "ptdistill", *_search_args(out, "--synthetic", "60x3")],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    _check_result(out)


def test_no_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2 and "usage" in capsys.readouterr().err


# ---------------------------------------------------------------- bad input


def _expect_error(capsys, out: Path, args: list[str], *needles: str) -> str:
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "\n" not in err, f"expected a one-line message, got:\n{err}"
    assert err.startswith("ptdistill search: error:")
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert not out.exists() and not out.with_suffix(".png").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]
    return err


def test_logits_in_npy(tmp_path, teacher, capsys):
    probs, labels = teacher
    path = tmp_path / "logits.npy"
    np.save(path, np.log(probs))
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(path), "--labels", str(tmp_path / "labels.npy")),
                  str(path), "logits")


def test_unnormalised_positive_scores_in_npy(tmp_path, teacher, capsys):
    probs, labels = teacher
    path = tmp_path / "scores.npy"
    np.save(path, np.exp(np.log(probs) + 1.0))
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(path), "--labels", str(tmp_path / "labels.npy")),
                  str(path), "sum to 1", "logits")


def test_missing_labels_column(tmp_path, teacher, capsys):
    probs, labels = teacher
    path = tmp_path / "teacher.csv"
    frame = pd.DataFrame(probs, columns=["p0", "p1", "p2"])
    frame["label"] = labels
    frame.to_csv(path, index=False)
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(path), "--labels-column", "target"),
                  str(path), "'target'")


def test_missing_labels_column_in_labels_file(tmp_path, teacher, capsys):
    probs, labels = teacher
    np.save(tmp_path / "probs.npy", probs)
    labels_path = tmp_path / "labels.csv"
    pd.DataFrame({"a": labels, "b": labels}).to_csv(labels_path, index=False)
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(tmp_path / "probs.npy"), "--labels",
                                            str(labels_path)), str(labels_path), "label")


def test_no_labels_at_all(tmp_path, teacher, capsys):
    probs, _ = teacher
    np.save(tmp_path / "probs.npy", probs)
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(tmp_path / "probs.npy")), "--labels")


def test_non_numeric_column(tmp_path, teacher, capsys):
    probs, labels = teacher
    path = tmp_path / "teacher.csv"
    frame = pd.DataFrame(probs, columns=["p0", "p1", "p2"])
    frame["p1"] = frame["p1"].astype(str)
    frame.loc[3, "p1"] = "low"  # (not "n/a": pandas reads that as NaN)
    frame["label"] = labels
    frame.to_csv(path, index=False)
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(path), "--labels-column", "label"),
                  str(path), "'p1'")


def test_non_numeric_labels(tmp_path, teacher, capsys):
    probs, labels = teacher
    path = tmp_path / "teacher.csv"
    frame = pd.DataFrame(probs, columns=["p0", "p1", "p2"])
    frame["label"] = np.array(["cat", "dog", "eel"])[labels]
    frame.to_csv(path, index=False)
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(path), "--labels-column", "label"),
                  str(path), "'label'")


def test_missing_file(tmp_path, capsys):
    path = tmp_path / "nope.npy"
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(path), "--labels", str(path)),
                  str(path), "not found")


def test_missing_labels_file(tmp_path, teacher, capsys):
    probs, _ = teacher
    np.save(tmp_path / "probs.npy", probs)
    missing = tmp_path / "labels.npy"
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(tmp_path / "probs.npy"), "--labels",
                                            str(missing)), str(missing), "not found")


def test_unsupported_suffix(tmp_path, teacher, capsys):
    probs, labels = teacher
    path = tmp_path / "teacher.txt"
    np.savetxt(path, probs)
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(path), "--labels", str(tmp_path / "labels.npy")),
                  str(path), ".txt")


@pytest.mark.parametrize("bad_label", [C, -1])
def test_labels_out_of_range(tmp_path, teacher, capsys, bad_label):
    probs, labels = teacher
    labels = labels.copy()
    labels[5] = bad_label
    np.save(tmp_path / "probs.npy", probs)
    labels_path = tmp_path / "labels.npy"
    np.save(labels_path, labels)
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(tmp_path / "probs.npy"), "--labels",
                                            str(labels_path)), str(labels_path), str(bad_label), "position 5")


def test_labels_wrong_length(tmp_path, teacher, capsys):
    probs, labels = teacher
    np.save(tmp_path / "probs.npy", probs)
    labels_path = tmp_path / "labels.npy"
    np.save(labels_path, labels[:-1])
    out = tmp_path / "result.json"
    _expect_error(capsys, out, _search_args(out, "--teacher-probs", str(tmp_path / "probs.npy"), "--labels",
                                            str(labels_path)), str(labels_path), f"({N},)")


def test_bad_synthetic_size_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "result.json"
    with pytest.raises(SystemExit) as exc:
        main(_search_args(out, "--synthetic", "200"))
    assert exc.value.code == 2
    assert "NxC" in capsys.readouterr().err
    assert not out.exists()


def test_renormalised_half_precision_is_noted_once_on_stderr(tmp_path, teacher, capsys):
    probs, labels = teacher
    half = torch.softmax(torch.randn(N, C, generator=torch.Generator().manual_seed(0)) * 4, -1).half().numpy()
    assert np.abs(half.astype(np.float64).sum(1) - 1).max() > 1e-4
    np.save(tmp_path / "probs.npy", half)
    np.save(tmp_path / "labels.npy", labels)
    out = tmp_path / "result.json"
    assert main(_search_args(out, "--teacher-probs", str(tmp_path / "probs.npy"), "--labels",
                             str(tmp_path / "labels.npy"))) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "renormalised" in line]
    assert len(notes) == 1
    assert notes[0].startswith(f"ptdistill search: note: {tmp_path / 'probs.npy'}: rows renormalised to sum to 1 in"
                               " float64 (largest deviation")
    _check_result(out)


def test_out_that_is_a_directory_fails_before_the_search(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    assert main(_search_args(out, "--synthetic", "40x3")) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"ptdistill search: error: --out {out}: is a directory; expected a file path such as"
                   f" {out / 'search.json'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"] and not list(out.iterdir())


def test_out_under_a_file_fails_before_the_search(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    out = tmp_path / "notes.txt" / "sub" / "result.json"
    assert main(_search_args(out, "--synthetic", "40x3")) == 2
    assert capsys.readouterr().err.strip() == (f"ptdistill search: error: --out {out}: cannot be written"
                                               f" (Not a directory: {tmp_path / 'notes.txt' / 'sub'})")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_out_whose_folder_cannot_be_made_fails_before_the_search(capsys):
    """A folder the kernel refuses (even to root, who passes every permission check) is found by
    making it, not by asking os.access."""
    out = Path("/proc/no-such-folder/result.json")
    assert main(_search_args(out, "--synthetic", "40x3")) == 2
    assert capsys.readouterr().err.strip() == (f"ptdistill search: error: --out {out}: cannot be written"
                                               " (No such file or directory: /proc/no-such-folder)")


def test_a_device_this_machine_lacks_is_one_line_before_the_search(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(_search_args(tmp_path / "r.json", "--synthetic", "40x3", "--device", "cuda")) == 2
    assert capsys.readouterr().err.strip() == ("ptdistill search: error: --device: 'cuda' requested but CUDA is"
                                               " not available; use 'auto' or 'cpu'")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("bound", "value"), [("--high", "inf"), ("--low", "-inf"), ("--high", "nan")])
def test_non_finite_bounds_are_usage_errors(tmp_path, capsys, bound, value):
    with pytest.raises(SystemExit) as exc:
        main(_search_args(tmp_path / "r.json", "--synthetic", "40x3", f"{bound}={value}"))
    assert exc.value.code == 2
    assert f"argument {bound}: expected a finite number, got {value!r}" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_low_not_below_high_fails_before_the_search(tmp_path, capsys):
    out = tmp_path / "r.json"
    _expect_error(capsys, out, _search_args(out, "--synthetic", "40x3", "--low", "5", "--high", "1"),
                  "--low/--high: expected --low below --high, got 5.0 and 1.0")
