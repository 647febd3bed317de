"""Data and checkpoints in object storage, and commands that read no data (issue 12, items 4 and 5).

``compile`` (like ``submit`` and ``schedule``) checks the config alone: every benchmark compiles
offline, with an empty Hugging Face cache and a bucket that cannot be reached, and a ``gs://``
location reaches the compiled pipeline unchanged. The tasks read ``gs://`` data files, hub-layout
data folders and checkpoint folders through ``ptdistill.storage.fetch`` (a local copy keyed by each
object's generation and md5), with errors that name the object. Objects live in gcp-storage-emulator
(tests/conftest.py), reached as in a real run through ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import free_port, start_gcs_emulator

from pipelines.local import run_local
from ptdistill.cli import main
from ptdistill.experiments import BENCHMARKS, TabularConfig, config_from_dict, default_methods
from ptdistill.storage import content_key, fetch, local_copy
from ptdistill.tracking import Tracker

REPO = Path(__file__).resolve().parent.parent
BUCKET = "ptdistill-data"
#: teacher_cache tag of a run whose teacher outputs all came from the cache (as in test_pipeline_local).
ALL_HIT = "distill:hit,validation:hit,test:hit"


@pytest.fixture(scope="module")
def emulator():
    """The GCS emulator with one bucket; ``emulator.paths`` records the path of every request."""
    pytest.importorskip("gcp_storage_emulator.server")
    pytest.importorskip("google.cloud.storage")
    paths: list[str] = []
    lock = threading.Lock()

    def record(handler) -> bool:
        with lock:
            paths.append(handler.path)
        return False  # let the emulator answer

    server = start_gcs_emulator((BUCKET,), intercept=record)
    server.paths = paths
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def gcs_env(emulator, tmp_path, monkeypatch):
    """The emulator as a run (and its task processes) sees it, and an empty object cache."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.endpoint)
    monkeypatch.setenv("PTDISTILL_CACHE", str(tmp_path / "cache"))
    emulator.paths.clear()
    return emulator


def _upload(emulator, key: str, data: bytes | Path) -> str:
    blob = emulator.client.bucket(BUCKET).blob(key)
    if isinstance(data, Path):
        blob.upload_from_filename(str(data))
    else:
        blob.upload_from_string(data)
    return f"gs://{BUCKET}/{key}"


def _upload_dir(emulator, prefix: str, folder: Path) -> str:
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        _upload(emulator, f"{prefix}/{path.relative_to(folder).as_posix()}", path)
    return f"gs://{BUCKET}/{prefix}"


def _media_reads(emulator) -> int:
    """Object downloads (``alt=media``) the emulator answered since the last reset."""
    return sum("alt=media" in path for path in emulator.paths)


def _table(n: int = 120) -> pd.DataFrame:
    """Two separable classes in three numeric columns."""
    rng = np.random.default_rng(3)
    labels = np.array(["ripe", "green"] * (n // 2))
    shift = np.where(labels == "ripe", 1.5, -1.5)[:, None]
    features = rng.normal(size=(n, 3)) + shift
    return pd.DataFrame({"a": features[:, 0], "b": features[:, 1], "c": features[:, 2], "label": labels})


# --------------------------------------------------------------------------- compile reads no data


#: What each benchmark needs from its user to compile; the data locations point at nothing.
COMPILE_SETS = {
    "tabular": [f"data.path=gs://{BUCKET}/table.csv"],
    "text": [f"data.path=gs://{BUCKET}/pairs.csv", "teacher.prompt='review: {text_a}'",
             "teacher.label_words=[bad, good]"],
}

COMPILE_ALL = """
import json, sys, time
from ptdistill.cli import main
from ptdistill.experiments import BENCHMARKS
sets, out = json.loads(sys.argv[1]), sys.argv[2]
seconds = {}
for name in BENCHMARKS:
    t0 = time.perf_counter()
    argv = ["compile", name, *[a for s in sets.get(name, []) for a in ("--set", s)], "-o", f"{out}/{name}.yaml"]
    if main(argv) != 0:
        sys.exit(f"compile {name} failed")
    seconds[name] = round(time.perf_counter() - t0, 2)
heavy = ("datasets", "google.cloud.storage", "huggingface_hub.file_download")
print(json.dumps({"loaded": [m for m in heavy if m in sys.modules], "seconds": seconds}))
"""


@pytest.mark.slow
def test_every_benchmark_compiles_offline_with_no_data(tmp_path):
    """No hub, an empty Hugging Face cache, a storage endpoint that is down: every benchmark compiles,
    nothing is downloaded or cached, and ``datasets`` is never imported."""
    home, out = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "GOOGLE_", "MLFLOW_"))}
    env |= {"HOME": str(home), "HF_HOME": str(home / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{free_port()}", "PTDISTILL_CACHE": str(home / "ptd"),
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", COMPILE_ALL, json.dumps(COMPILE_SETS), str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print("compile seconds offline:", report["seconds"])
    assert report["loaded"] == []
    assert sorted(p.stem for p in out.iterdir()) == sorted(BENCHMARKS)
    assert not (home / "hf").exists() and not (home / "ptd").exists()
    assert not (home / ".cache" / "huggingface").exists()
    for name, sets in COMPILE_SETS.items():  # the URIs reach the pipeline as given
        config = _compiled_config(out / f"{name}.yaml")
        assert config.data.path == sets[0].split("=", 1)[1]


@pytest.mark.pipeline
def test_run_of_a_paper_task_without_hub_access_fails_in_one_line(tmp_path):
    """``ptdistill run`` reads the data up front: with no hub and nothing cached, one line says what to do."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MLFLOW_"))}
    env |= {"HOME": str(tmp_path), "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "ptdistill", "run", "cola", "--quick"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stdout == ""
    assert proc.stderr.startswith("ptdistill run: error: hub dataset 'nyu-mll/glue' config 'cola': cannot be loaded (")
    assert proc.stderr.count("\n") == 1 and "point data.source at a copy in the hub's layout" in proc.stderr


def _compiled_config(path: Path):
    spec = next(yaml.safe_load_all(path.read_text()))
    return config_from_dict(json.loads(spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]))


def test_compile_with_gs_locations_touches_no_storage(gcs_env, tmp_path, capsys):
    out = tmp_path / "tabular.yaml"
    assert main(["compile", "tabular", "--set", f"data.path=gs://{BUCKET}/table.csv", "-o", str(out)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n"
    sets = [f"data.source=gs://{BUCKET}/glue", f"teacher.model.name_or_path=gs://{BUCKET}/models/t5/",
            f"student.model.name_or_path=gs://{BUCKET}/models/bert"]
    assert main(["compile", "sst2", *[a for s in sets for a in ("--set", s)], "-o", str(tmp_path / "sst2.yaml")]) == 0
    assert gcs_env.paths == []
    assert _compiled_config(out).data.path == f"gs://{BUCKET}/table.csv"
    sst2 = _compiled_config(tmp_path / "sst2.yaml")
    assert (sst2.data.source, sst2.teacher.model.name_or_path, sst2.student.model.name_or_path) == (
        f"gs://{BUCKET}/glue", f"gs://{BUCKET}/models/t5/", f"gs://{BUCKET}/models/bert")


@pytest.mark.parametrize(("override", "message"), [
    ("data.path=gs:/bucket/table.csv", "data.path: malformed storage URI 'gs:/bucket/table.csv': expected gs:// "
                                       "(two slashes)"),
    ("data.path=gs://Bucket/table.csv", "data.path: bucket name 'Bucket' in 'gs://Bucket/table.csv' is not valid"),
    ("data.path=gs://bucket/", "data.path: 'gs://bucket/' names no object; expected gs://bucket/path/to/file"),
    ("data.path=gs://bucket/table.txt", "data.path: gs://bucket/table.txt: unsupported file type '.txt'"),
    ("data.path=s3://bucket/table.csv", "data.path: unsupported URI 's3://bucket/table.csv': scheme 's3'; expected a "
                                        "local path or gs://bucket/object"),
    ("data.path=gs://bucket/a/../t.csv", "data.path: object name 'a/../t.csv' in 'gs://bucket/a/../t.csv' has"),
    ("data.path=gs://bucket//t.csv", "data.path: object name '/t.csv' in 'gs://bucket//t.csv' has empty"),
])
def test_compile_rejects_malformed_locations_in_one_line(override, message, tmp_path, capsys):
    assert main(["compile", "tabular", "--set", override, "-o", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ptdistill compile: error: {message}") and err.count("\n") == 1, err
    assert not (tmp_path / "p.yaml").exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("teacher.model.name_or_path", "gs:/b/t5", "teacher.model.name_or_path: malformed storage URI 'gs:/b/t5'"),
    ("student.model.name_or_path", "gs://x/bert", "student.model.name_or_path: bucket name 'x' in 'gs://x/bert'"),
    ("data.source", "s3://bucket/glue", "data.source: unsupported URI 's3://bucket/glue': scheme 's3'"),
])
def test_compile_rejects_malformed_model_and_source_locations(key, value, message, tmp_path, capsys):
    assert main(["compile", "sst2", "--set", f"{key}={value}", "-o", str(tmp_path / "p.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ptdistill compile: error: {message}") and err.count("\n") == 1, err


def test_compile_leaves_class_count_checks_to_prepare_data(tmp_path, capsys):
    """A ptloss eps of 3 rows cannot be judged without the table's classes: compile accepts it,
    prepare_data (build_splits) refuses it once the table shows 2 classes."""
    from ptdistill.steps.data import build_splits

    path = tmp_path / "t.csv"
    _table().to_csv(path, index=False)
    eps = "methods=[{name: pt, loss: ptloss, params: {eps: [[0.1], [0.1], [0.1]]}}]"
    assert main(["compile", "tabular", "--set", f"data.path={path}", "--set", eps, "-o", str(tmp_path / "p.yaml")]) == 0
    config = _compiled_config(tmp_path / "p.yaml")
    with pytest.raises(ValueError, match=r"methods\[0\] \(pt\)\.params\.eps.*2"):
        build_splits(config)


# --------------------------------------------------------------------------- reading objects


def test_fetch_is_keyed_by_the_objects_generation_and_md5(gcs_env):
    uri = _upload(gcs_env, "fetch/x.csv", b"a,label\n1,x\n")
    first = fetch(uri)
    assert first.name == "x.csv" and first.read_bytes() == b"a,label\n1,x\n"
    assert _media_reads(gcs_env) == 1
    assert fetch(uri) == first and _media_reads(gcs_env) == 1  # unchanged: read from the cache
    _upload(gcs_env, "fetch/x.csv", b"a,label\n2,y\n")
    second = fetch(uri)
    assert second != first and second.read_bytes() == b"a,label\n2,y\n" and _media_reads(gcs_env) == 2
    blob = gcs_env.client.bucket(BUCKET).get_blob("fetch/x.csv")
    assert second.parent.name == content_key(uri, f"{blob.generation}:{blob.md5_hash}")[:32]


def test_fetch_of_a_folder_takes_only_the_included_objects_and_refetches_a_changed_one(gcs_env):
    for key, data in (("a/config.json", b"{}"), ("a/w.bin", b"1"), ("a/sub/x.txt", b"x"), ("ab/other", b"no")):
        _upload(gcs_env, f"fold/{key}", data)
    folder = fetch(f"gs://{BUCKET}/fold/a/", folder=True)
    assert folder.name == "a"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "config.json", "sub/x.txt", "w.bin"]
    only = fetch(f"gs://{BUCKET}/fold/a", folder=True, include=lambda key: key.endswith(".json"))
    assert [p.name for p in only.iterdir()] == ["config.json"]
    assert fetch(f"gs://{BUCKET}/fold/a", folder=True) == folder
    _upload(gcs_env, "fold/a/w.bin", b"2")
    changed = fetch(f"gs://{BUCKET}/fold/a", folder=True)
    assert changed != folder and (changed / "w.bin").read_bytes() == b"2" and (folder / "w.bin").read_bytes() == b"1"


@pytest.mark.parametrize(("uri", "folder", "message"), [
    (f"gs://{BUCKET}/nope/table.csv", False, f"gs://{BUCKET}/nope/table.csv: object not found"),
    (f"gs://{BUCKET}/nope/ckpt", True, f"gs://{BUCKET}/nope/ckpt/: no objects under this prefix; expected a folder"),
    ("gs://no-such-bucket-x/ckpt", True, "gs://no-such-bucket-x/ckpt: No such bucket gs://no-such-bucket-x (at "),
])
def test_fetch_errors_name_the_object(gcs_env, uri, folder, message):
    with pytest.raises(ValueError) as caught:
        fetch(uri, folder=folder, expected="a folder")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_fetch_of_an_unreachable_store_says_so(gcs_env, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    import ptdistill.storage as storage

    monkeypatch.setattr(storage, "RetryPolicy", lambda: storage.SHORT_RETRY)
    with pytest.raises(ValueError, match=rf"^gs://{BUCKET}/x\.csv: cannot be read \(cannot reach http://127\.0\.0\.1:"
                                         r"\d+: .*\(2 attempts\)\)$"):
        fetch(f"gs://{BUCKET}/x.csv")


def test_errors_inside_local_copy_name_the_object(gcs_env):
    uri = _upload(gcs_env, "copy/t.csv", b"x\n1\n")
    with pytest.raises(ValueError, match=rf"^{uri}: bad row$"):
        with local_copy(uri) as path:
            raise ValueError(f"{path}: bad row")


# --------------------------------------------------------------------------- data files and folders


def test_tabular_splits_from_gcs_equal_the_local_ones(gcs_env, tmp_path):
    from ptdistill.steps.data import build_splits

    path = tmp_path / "table.csv"
    _table().to_csv(path, index=False)
    uri = _upload(gcs_env, "tab/table.csv", path)
    local = TabularConfig(data=dataclasses.replace(TabularConfig().data, path=str(path)))
    remote = TabularConfig(data=dataclasses.replace(TabularConfig().data, path=uri))
    (splits, names), (remote_splits, remote_names) = build_splits(local), build_splits(remote)
    assert remote_names == names == ["green", "ripe"]
    assert {k: s.fingerprint() for k, s in remote_splits.items()} == {k: s.fingerprint() for k, s in splits.items()}


def test_bad_remote_table_errors_name_the_object(gcs_env, tmp_path):
    from ptdistill.steps.data import build_splits

    uri = _upload(gcs_env, "tab/nolabel.csv", _table().drop(columns="label").to_csv(index=False).encode())
    config = TabularConfig(data=dataclasses.replace(TabularConfig().data, path=uri))
    with pytest.raises(ValueError) as caught:
        build_splits(config)
    assert str(caught.value) == f"{uri}: no label column 'label'; columns are ['a', 'b', 'c']"


def test_hub_layout_data_folder_from_gcs_equals_the_local_one(gcs_env, tmp_path):
    from text_fixtures import write_hub_split

    from ptdistill.families.text.data import load_task

    for split, n in (("train", 30), ("validation", 12), ("test", 5)):
        labels = [i % 2 for i in range(n)] if split != "test" else [-1] * n
        write_hub_split(tmp_path / "glue", "sst2", split, {"sentence": [f"movie {i}" for i in range(n)],
                                                           "label": labels}, ["negative", "positive"])
    source = _upload_dir(gcs_env, "hub/glue", tmp_path / "glue")
    local, remote = load_task("sst2", source=str(tmp_path / "glue")), load_task("sst2", source=source)
    for a, b in zip(local, remote, strict=True):
        assert a.text_a == b.text_a and np.array_equal(a.labels, b.labels) and np.array_equal(a.ids, b.ids)
    assert sorted(p.name for p in (Path(os.environ["PTDISTILL_CACHE"]) / "objects").glob("*/sst2/*")) == [
        "train-00000-of-00001.parquet", "validation-00000-of-00001.parquet"]  # not the unlabeled test split
    with pytest.raises(ValueError, match=rf"^gs://{BUCKET}/hub/none/sst2/: no objects under this prefix; expected the"
                                         r" nyu-mll/glue splits \['train', 'validation'\]"):
        load_task("sst2", source=f"gs://{BUCKET}/hub/none")


# --------------------------------------------------------------------------- checkpoint folders


@pytest.mark.slow
def test_checkpoint_folder_from_gcs_has_the_local_folders_revision(gcs_env, tmp_path):
    from text_fixtures import tiny_bert

    from ptdistill.families.text.models import HFModelSpec, check_max_length, load_classifier, resolve_checkpoint

    folder = tiny_bert(tmp_path / "bert")
    uri = _upload_dir(gcs_env, "ckpt/bert", folder)
    local_id, local_revision = resolve_checkpoint(HFModelSpec(str(folder)))
    assert resolve_checkpoint(HFModelSpec(uri + "/")) == (uri, local_revision)
    assert local_id == "bert"
    check_max_length(HFModelSpec(uri, max_length=64), "student.model")
    with pytest.raises(ValueError, match=rf"^student\.model\.max_length: 512 is above the 128 positions of {uri} "):
        check_max_length(HFModelSpec(uri, max_length=512), "student.model")
    model = load_classifier(HFModelSpec(uri, revision=local_revision), training=False)
    assert model.config.hidden_size == 32


@pytest.mark.slow
def test_checkpoint_folder_without_config_fails_naming_the_object(gcs_env, tmp_path):
    from text_fixtures import tiny_bert

    from ptdistill.families.text.models import HFModelSpec, check_max_length, resolve_checkpoint

    folder = tiny_bert(tmp_path / "bert")
    (folder / "config.json").unlink()
    uri = _upload_dir(gcs_env, "ckpt/noconfig", folder)
    with pytest.raises(ValueError, match=rf"^{uri}/config\.json: object not found$"):
        check_max_length(HFModelSpec(uri), "teacher.model")
    with pytest.raises(ValueError, match=rf"^{uri}/config\.json: object not found; expected a saved checkpoint folder"):
        resolve_checkpoint(HFModelSpec(uri))
    _upload(gcs_env, "ckpt/noweights/config.json", (tmp_path / "bert" / "tokenizer_config.json").read_bytes())
    with pytest.raises(ValueError, match=rf"^gs://{BUCKET}/ckpt/noweights: no weight files"):
        resolve_checkpoint(HFModelSpec(f"gs://{BUCKET}/ckpt/noweights"))


# --------------------------------------------------------------------------- pipelines


def _tiny_tabular(path: str) -> TabularConfig:
    """The quick tabular preset, shrunk: tiny MLPs, 2 epochs, a 3-trial search, ptloss and kl, seed 0."""
    cfg = TabularConfig.quick()
    train = dataclasses.replace(cfg.student.train, epochs=2, batch_size=32, log_every_steps=2)
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, path=path),
        teacher=dataclasses.replace(cfg.teacher, hidden=[16], train=train),
        student=dataclasses.replace(cfg.student, hidden=[16], train=dataclasses.replace(train)),
        search=dataclasses.replace(cfg.search, trials=3, max_order=2))


def _parent_tags(tracking_uri: str, benchmark: str, run_name: str) -> dict:
    tracker = Tracker(tracking_uri)
    (parent,) = tracker.client.search_runs([tracker.experiment_id(benchmark)], f"tags.`kfp.run_name` = '{run_name}'")
    return parent.data.tags | {"status": parent.info.status}


def test_missing_object_fails_prepare_data_with_one_line_and_writes_nothing(gcs_env, tmp_path):
    from ptdistill.steps.data import SPLITS, prepare_data

    uri = f"gs://{BUCKET}/missing/table.csv"
    outputs = {name: tmp_path / name for name in SPLITS}
    with pytest.raises(ValueError) as caught:
        prepare_data(_tiny_tabular(uri), "r", f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "store"), outputs,
                     tmp_path / "run_info")
    assert str(caught.value) == f"{uri}: object not found"
    assert list(tmp_path.iterdir()) == []  # no split, run info, MLflow store or cache entry


@pytest.mark.pipeline
def test_run_with_a_missing_object_fails_in_prepare_data(gcs_env, tmp_path, capsys):
    uri = f"gs://{BUCKET}/missing/table.csv"
    with pytest.raises(RuntimeError) as caught:
        run_local(_tiny_tabular(uri), pipeline_root=tmp_path / "runs", tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
                  run_name="missing-1")
    assert "prepare-data" in str(caught.value)
    log = (tmp_path / "runs" / "logs" / "missing-1" / "prepare-data.log").read_text()
    assert f"ValueError: {uri}: object not found\n" in log
    # The console's tail of the failed task ends with that one line.
    assert re.search(rf"^    \|\s+ValueError: {re.escape(uri)}: object not found$", capsys.readouterr().out, re.M)


@pytest.mark.pipeline
def test_tabular_pipeline_from_a_csv_in_gcs_equals_the_local_run(gcs_env, tmp_path):
    """The same table in the bucket and on disk: the same splits (the second run's teacher comes
    from the first run's cache, keyed by the data's fingerprint) and the same student."""
    path = tmp_path / "table.csv"
    _table().to_csv(path, index=False)
    uri = _upload(gcs_env, "pipe/table.csv", path)
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    results = {}
    for name, location in (("gcs", uri), ("local", str(path))):
        config = dataclasses.replace(_tiny_tabular(location), methods=[m for m in default_methods() if m.name == "ptloss"])
        results[name] = run_local(config, pipeline_root=tmp_path / "runs", artifact_store=str(tmp_path / "store"),
                                  tracking_uri=tracking, run_name=f"tab-{name}")
        print(f"tabular pipeline from {name}: {results[name].seconds:.0f} s")
    tags = {name: _parent_tags(tracking, "tabular", f"tab-{name}") for name in results}
    assert tags["gcs"]["status"] == tags["local"]["status"] == "FINISHED"
    assert tags["gcs"]["data_fingerprint"] == tags["local"]["data_fingerprint"]
    assert tags["gcs"]["teacher_cache"] != tags["local"]["teacher_cache"] == ALL_HIT
    keys = ("method", "seed", "test_accuracy", "test_nll", "test_ece", "val_task")
    gcs, local = ([{k: s[k] for k in keys} for s in results[name].students] for name in ("gcs", "local"))
    assert gcs == local and [s["method"] for s in gcs] == ["ptloss"]


@pytest.mark.pipeline
def test_text_pipeline_with_teacher_student_and_data_in_gcs(gcs_env, tmp_path):
    from conftest import tiny_text_configs

    from ptdistill.families.text.models import HFModelSpec, resolve_checkpoint

    text = tiny_text_configs(tmp_path)[2]  # the CSV of pairs, a tiny BERT teacher fine-tuned in the run
    teacher = _upload_dir(gcs_env, "text/teacher", Path(text.teacher.model.name_or_path))
    student = _upload_dir(gcs_env, "text/student", Path(text.student.model.name_or_path))
    data = _upload(gcs_env, "text/pairs.csv", Path(text.data.path))
    config = dataclasses.replace(
        text, data=dataclasses.replace(text.data, path=data),
        teacher=dataclasses.replace(text.teacher, model=dataclasses.replace(text.teacher.model, name_or_path=teacher)),
        student=dataclasses.replace(text.student, model=dataclasses.replace(text.student.model, name_or_path=student)),
        methods=[m for m in text.methods if m.name == "ptloss"])
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = run_local(config, pipeline_root=tmp_path / "runs", artifact_store=str(tmp_path / "store"),
                       tracking_uri=tracking, run_name="text-gcs")
    print(f"text pipeline from gcs: {result.seconds:.0f} s")
    assert [s["method"] for s in result.students] == ["ptloss"]
    assert 0 <= result.students[0]["test_accuracy"] <= 1
    tags = _parent_tags(tracking, "text", "text-gcs")
    revision = resolve_checkpoint(HFModelSpec(str(tmp_path / "teacher")))[1]
    assert tags["status"] == "FINISHED"
    assert tags["teacher_id"].startswith(f"{teacher}@{revision}+fine-tuned@sha256:")
    # Nothing of the bucket's was written to a local folder named like it.
    assert not Path("gs:").exists() and not (tmp_path / "runs" / "gs:").exists()



def test_search_reads_teacher_probabilities_and_labels_from_a_bucket(gcs_env, tmp_path, capsys):
    """``ptdistill search`` takes gs:// inputs like every other data location, with the same result
    as the local files; a URI missing its ``//`` is refused by name (it used to become ``gs:/b/x``)."""
    from ptdistill.synthetic import noisy_teacher

    probs, labels = (t.numpy() for t in noisy_teacher(200, 3, seed=4))
    np.save(tmp_path / "probs.npy", probs)
    np.save(tmp_path / "labels.npy", labels)
    probs_uri = _upload(gcs_env, "search/probs.npy", tmp_path / "probs.npy")
    labels_uri = _upload(gcs_env, "search/labels.npy", tmp_path / "labels.npy")
    common = ["--trials", "8", "--max-order", "2"]
    assert main(["search", "--teacher-probs", probs_uri, "--labels", labels_uri, *common,
                 "--out", str(tmp_path / "remote.json")]) == 0
    assert main(["search", "--teacher-probs", str(tmp_path / "probs.npy"), "--labels", str(tmp_path / "labels.npy"),
                 *common, "--out", str(tmp_path / "local.json")]) == 0
    remote, local = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("remote", "local"))
    assert remote["eps"] == local["eps"] and remote["score"] == local["score"]
    capsys.readouterr()
    assert main(["search", "--teacher-probs", f"gs:/{BUCKET}/search/probs.npy", "--labels", labels_uri, *common,
                 "--out", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"gs:/{BUCKET}/search/probs.npy" in err and "gs://" in err, err
    assert not (tmp_path / "bad.json").exists()
