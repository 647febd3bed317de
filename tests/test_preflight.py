"""Pre-flight of the artifact store (ptdistill.preflight): a store that cannot be used fails a run
in seconds, with one line naming it, before any pipeline work; ``compile`` and ``submit`` skip it.

GCS cases run against gcp-storage-emulator (tests/conftest.py) reached, as in a real run,
through ``STORAGE_EMULATOR_HOST``; an endpoint that is down is a free loopback port.
"""

from __future__ import annotations

import logging
import re

import pytest
from conftest import PREFLIGHT_TEST_BUCKET, free_port, tiny_synthetic

from ptdistill import cli
from ptdistill import preflight as preflight_mod
from ptdistill.preflight import PROBE_PREFIX, PreflightError, check_store, preflight
from ptdistill.storage import SHORT_RETRY

BUCKET = PREFLIGHT_TEST_BUCKET


@pytest.fixture
def gcs_env(faulty_gcs, monkeypatch):
    """The emulator as a run sees it: through STORAGE_EMULATOR_HOST."""
    faulty_gcs.reset()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", faulty_gcs.endpoint)
    return faulty_gcs



def _objects(emulator, bucket: str = BUCKET) -> list[str]:
    return sorted(b.name for b in emulator.client.list_blobs(bucket))


# --------------------------------------------------------------------------- GCS


def test_reachable_bucket_passes_and_leaves_nothing(gcs_env):
    check_store(f"gs://{BUCKET}/runs")
    preflight(f"gs://{BUCKET}", "sqlite:///unused.db")
    assert _objects(gcs_env) == []


def test_missing_bucket_is_named_and_nothing_is_written(gcs_env):
    with pytest.raises(PreflightError) as info:
        check_store("gs://no-such-bucket/runs")
    assert str(info.value) == (f"artifact store gs://no-such-bucket/runs: bucket gs://no-such-bucket does not exist "
                               f"(at {gcs_env.endpoint})")
    assert _objects(gcs_env) == []


def test_endpoint_down_fails_within_the_short_retry(monkeypatch, caplog):
    pytest.importorskip("google.cloud.storage")
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    with caplog.at_level(logging.DEBUG, logger="ptdistill.storage"), pytest.raises(PreflightError) as info:
        check_store(f"gs://{BUCKET}/runs")
    assert re.fullmatch(rf"artifact store gs://{BUCKET}/runs: cannot reach {re.escape(endpoint)}: "
                        rf"\[Errno 111\] Connection refused \({SHORT_RETRY.max_attempts} attempts\)", str(info.value))
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == SHORT_RETRY.max_attempts - 1  # the first request's attempts only, then it gave up
    assert {r.levelno for r in retries} == {logging.DEBUG}  # the error above sums them up


def test_permission_denied_is_named(gcs_env):
    gcs_env.faults[:] = [403]
    with pytest.raises(PreflightError, match=rf"^artifact store gs://{BUCKET}/p: Permission denied \(403 injected fault\): "
                       rf"gs://{BUCKET}/p/{re.escape(PROBE_PREFIX)}[0-9a-f]{{16}}$"):
        check_store(f"gs://{BUCKET}/p")
    assert _objects(gcs_env) == []


@pytest.mark.parametrize("status, phrase", [(501, "501 Not Implemented"), (400, "400 Bad Request")])
def test_an_endpoint_answering_what_gcs_never_does_is_named(gcs_env, status, phrase):
    """A server that is not GCS (or a request GCS refuses) at STORAGE_EMULATOR_HOST: one line, not a traceback."""
    gcs_env.faults[:] = [status]
    with pytest.raises(PreflightError) as info:
        check_store(f"gs://{BUCKET}/p")
    assert re.fullmatch(rf"artifact store gs://{BUCKET}/p: {re.escape(gcs_env.endpoint)} answered {phrase}: "
                        rf"injected fault: gs://{BUCKET}/p/{re.escape(PROBE_PREFIX)}[0-9a-f]{{16}}", str(info.value))
    assert _objects(gcs_env) == []


def test_missing_credentials_are_one_line(no_gcp_credentials):
    with pytest.raises(PreflightError, match=r"^artifact store gs://b-1/x: no Google Cloud credentials found: run "
                       r"`gcloud auth application-default login`.*: gs://b-1/x$"):
        check_store("gs://b-1/x")


# --------------------------------------------------------------------------- local folders


def test_writable_folder_passes_and_keeps_no_probe(tmp_path):
    check_store(str(tmp_path / "new" / "store"))
    assert list((tmp_path / "new" / "store").iterdir()) == []
    check_store((tmp_path / "new" / "store").as_uri())


def test_folder_that_cannot_be_created_is_named(tmp_path):
    # Root ignores permission bits, so the folder is made impossible instead: under a regular file.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    store = blocker / "store"
    with pytest.raises(PreflightError) as info:
        check_store(str(store))
    assert str(info.value) == (f"artifact store {store}: cannot create or write files there: "
                               f"Not a directory: {store}")
    assert blocker.read_text() == "x"


def test_store_path_that_is_a_file_is_named(tmp_path):
    target = tmp_path / "store.txt"
    target.write_text("x")
    with pytest.raises(PreflightError, match=rf"^artifact store {re.escape(str(target))}: cannot create or write "
                       rf"files there: .*{re.escape(str(target))}"):
        check_store(str(target))


def test_read_only_filesystem_is_named(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path))

    monkeypatch.setattr("ptdistill.storage.os.open", read_only)
    with pytest.raises(PreflightError, match=rf"^artifact store {re.escape(str(tmp_path))}: cannot create or write "
                       rf"files there: Read-only file system: {re.escape(str(tmp_path))}$"):
        check_store(str(tmp_path))


def test_malformed_uri_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=re.escape("gs:/bucket/x")):
        check_store("gs:/bucket/x")


# --------------------------------------------------------------------------- where it runs


@pytest.mark.parametrize("fault", ["missing bucket", "endpoint down"])
def test_run_checks_the_store_before_any_work(gcs_env, fault, tmp_path, monkeypatch, capsys):
    import pipelines.local

    def no_work(*args, **kwargs):
        raise AssertionError("the pipeline started")

    monkeypatch.setattr(pipelines.local.local, "init", no_work)
    bucket, endpoint = ("no-such-bucket", gcs_env.endpoint) if fault == "missing bucket" else (BUCKET, None)
    if endpoint is None:
        endpoint = f"http://127.0.0.1:{free_port()}"
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    code = cli.main(["run", "synthetic", "--quick", "--pipeline-root", str(tmp_path / "runs"),
                     "--artifact-store", f"gs://{bucket}/p", "--tracking-uri", f"sqlite:///{tmp_path}/m.db"])
    err = capsys.readouterr().err
    assert code == 2
    problem = (f"bucket gs://{bucket} does not exist (at {endpoint})" if fault == "missing bucket"
               else f"cannot reach {endpoint}: [Errno 111] Connection refused (2 attempts)")
    assert err == f"ptdistill run: error: artifact store gs://{bucket}/p: {problem}\n"  # one line
    assert not (tmp_path / "runs").exists()


def test_run_local_checks_a_local_store(tmp_path, monkeypatch):
    from pipelines.local import run_local

    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(PreflightError, match=re.escape(str(blocker / "store"))):
        run_local(tiny_synthetic(), pipeline_root=tmp_path / "runs", artifact_store=str(blocker / "store"),
                  tracking_uri=f"sqlite:///{tmp_path}/m.db")
    assert not (tmp_path / "runs").exists()


def test_compile_and_submit_do_not_check_the_store(tmp_path, monkeypatch, capsys):
    import pipelines.remote

    def checked(*args, **kwargs):
        raise AssertionError("pre-flight ran")

    class Run:
        run_id, display_name = "r1", "synthetic-x"

    monkeypatch.setattr(preflight_mod, "check_store", checked)
    monkeypatch.setattr(pipelines.remote, "submit", lambda *args, **kwargs: Run())
    assert cli.main(["compile", "synthetic", "--quick", "-o", str(tmp_path / "p.yaml")]) == 0
    assert cli.main(["submit", "synthetic", "--quick", "--host", f"http://127.0.0.1:{free_port()}",
                     "--artifact-store", "gs://unreachable-from-here/x"]) == 0
    assert "run id: r1" in capsys.readouterr().out


def test_run_checks_the_tracking_server_before_any_work(tmp_path, monkeypatch, capsys):
    """A tracking URI that does not answer fails the run in one line naming it, before the pipeline starts."""
    import pipelines.local

    def no_work(*args, **kwargs):
        raise AssertionError("the pipeline started")

    monkeypatch.setattr(pipelines.local.local, "init", no_work)
    uri = f"http://127.0.0.1:{free_port()}"
    code = cli.main(["run", "synthetic", "--quick", "--pipeline-root", str(tmp_path / "runs"),
                     "--tracking-uri", uri])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith(f"ptdistill run: error: MLflow tracking server {uri} does not answer: ")
    assert err.count("\n") == 1


def test_preflight_refuses_a_directory_as_the_tracking_database(tmp_path):
    (tmp_path / "m.db").mkdir()
    with pytest.raises(ValueError, match=re.escape(f"tracking database {tmp_path / 'm.db'} is a directory")):
        preflight(str(tmp_path / "store"), f"sqlite:///{tmp_path}/m.db")
