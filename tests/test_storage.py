"""Behaviour of ptdistill.storage, run against a local directory and a real GCS emulator.

The GCS half talks over HTTP to gcp-storage-emulator, served in-process on 127.0.0.1 (a free
port) by a session fixture. The client and GCSStore are the real ones; the fixture only adds
to the *server*:

* a fault injector (answer the next object requests with a given HTTP status, or drop the
  connection) and a counter of object requests, to test retries end to end. Bucket requests
  are left alone: google-cloud-storage 3.x sends a background ``GET /b/{bucket}`` (bucket
  metadata for tracing) on a client's first use of a bucket, which would otherwise take an
  injected fault or skew the count at random;
* ``ifGenerationMatch`` on uploads. Found by testing (gcp-storage-emulator 2026.7.19): the
  emulator ignores this precondition, so a create-only upload silently overwrites. The fixture
  wraps the emulator's upload handler to answer 412 as GCS does when the object's generation
  (0 = absent) differs. This emulates GCS; it is not atomic across concurrent requests, so the
  concurrent-writers test runs on the local store only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from conftest import DROP, PASS, STORAGE_TEST_BUCKET, free_port

from ptdistill import storage as storage_mod
from ptdistill.storage import (
    DeleteResult,
    GCSStore,
    GenerationMismatchError,
    LocalStore,
    RetryPolicy,
    StoreUnavailableError,
    content_key,
    open_store,
)

BUCKET = STORAGE_TEST_BUCKET
FAST_RETRY = RetryPolicy(max_attempts=3, initial_delay=0.001, max_delay=0.005)


@pytest.fixture
def gcs_store(faulty_gcs) -> GCSStore:
    faulty_gcs.reset()
    return GCSStore(f"gs://{BUCKET}/{uuid.uuid4().hex}/run", client=faulty_gcs.client, retry=FAST_RETRY)


@pytest.fixture(params=["local", "gcs"])
def store(request, tmp_path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("gcs_store")


def missing(uri: str):
    return pytest.raises(FileNotFoundError, match=re.escape(uri))


# --------------------------------------------------------------------------- shared behaviour


def test_bytes_round_trip_and_overwrite(store):
    payload = bytes(range(256)) * 3
    store.write_bytes("teacher/logits.bin", payload)
    assert store.read_bytes("teacher/logits.bin") == payload
    store.write_bytes("teacher/logits.bin", b"")
    assert store.read_bytes("teacher/logits.bin") == b""


def test_text_round_trip(store):
    store.write_text("reports/summary.md", "αβγ — ok\n")
    assert store.read_text("reports/summary.md") == "αβγ — ok\n"
    assert store.read_bytes("reports/summary.md") == "αβγ — ok\n".encode()


def test_file_round_trip(store, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(10_000))
    store.upload_file("search/result.bin", src)
    dest = tmp_path / "deep" / "er" / "out.bin"
    store.download_file("search/result.bin", dest)
    assert dest.read_bytes() == src.read_bytes()
    assert not [p for p in dest.parent.iterdir() if p != dest], "download left temp files"


def test_dir_round_trip(store, tmp_path):
    model = tmp_path / "model"
    (model / "tokenizer").mkdir(parents=True)
    (model / "config.json").write_text('{"layers": 2}')
    (model / "weights.bin").write_bytes(b"\x00\x01" * 500)
    (model / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    (model / "tokenizer.json").write_text("{}")  # sorts before "tokenizer/" as a key
    store.write_bytes("students/s1-other/keep.txt", b"not part of s1")

    keys = store.upload_dir("students/s1", model)
    assert keys == [
        "students/s1/config.json",
        "students/s1/tokenizer.json",
        "students/s1/tokenizer/vocab.txt",
        "students/s1/weights.bin",
    ]

    out = tmp_path / "out"
    assert store.download_dir("students/s1/", out) == keys
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert got == ["config.json", "tokenizer.json", "tokenizer/vocab.txt", "weights.bin"]
    assert (out / "weights.bin").read_bytes() == (model / "weights.bin").read_bytes()


def test_dir_errors(store, tmp_path):
    with missing(store.root_uri + "/students/none/"):
        store.download_dir("students/none", tmp_path / "out")
    with pytest.raises(NotADirectoryError):
        store.upload_dir("students/x", tmp_path / "nope")


def test_list_with_prefix(store):
    for key in ["runs/b/2.json", "runs/a/1.json", "runs/a2.json", "other/x", "runs/a/sub/3.json"]:
        store.write_bytes(key, b"{}")
    assert store.list() == ["other/x", "runs/a/1.json", "runs/a/sub/3.json", "runs/a2.json", "runs/b/2.json"]
    assert store.list("runs/a/") == ["runs/a/1.json", "runs/a/sub/3.json"]
    assert store.list("runs/a") == ["runs/a/1.json", "runs/a/sub/3.json", "runs/a2.json"]
    assert store.list("nothing/") == []


def test_exists_and_delete(store):
    assert not store.exists("a/b.txt")
    store.write_text("a/b.txt", "x")
    assert store.exists("a/b.txt")
    assert not store.exists("a")  # a "directory" is not an object
    store.delete("a/b.txt")
    assert not store.exists("a/b.txt")
    assert store.list() == []


def test_missing_key_raises_file_not_found_with_uri(store, tmp_path):
    uri = store.uri("no/such.bin")
    with missing(uri):
        store.read_bytes("no/such.bin")
    with missing(uri):
        store.read_text("no/such.bin")
    with missing(uri):
        store.delete("no/such.bin")
    with missing(uri):
        store.download_file("no/such.bin", tmp_path / "dl" / "x.bin")
    assert not (tmp_path / "dl" / "x.bin").exists()


@pytest.mark.parametrize("bad", ["", "/abs/key", "../up", "a/../b", "a//b", "a/", "./a", "a/./b", ".."])
def test_bad_keys_are_rejected(store, bad, tmp_path):
    for call in (
        lambda: store.write_bytes(bad, b"x"),
        lambda: store.read_bytes(bad),
        lambda: store.write_if_absent(bad, b"x"),
        lambda: store.exists(bad),
        lambda: store.delete(bad),
        lambda: store.uri(bad),
        lambda: store.download_file(bad, tmp_path / "x"),
    ):
        with pytest.raises(ValueError):
            call()
    if bad not in ("", "a/"):  # valid list prefixes: the root and a "directory"
        with pytest.raises(ValueError):
            store.list(bad)


def test_write_if_absent_never_overwrites(store):
    assert store.write_if_absent("cache/abc.bin", b"first") is True
    assert store.write_if_absent("cache/abc.bin", b"second") is False
    assert store.read_bytes("cache/abc.bin") == b"first"
    assert store.list("cache/") == ["cache/abc.bin"]


def test_delete_prefix_keeps_kept_keys_and_spares_sibling_prefixes(store):
    keys = ["b/run/teacher/p.bin", "b/run/checkpoints/s1/state.pt", "b/run/report/r.md", "b/run-2/teacher/p.bin",
            "b/runner.txt"]
    for key in keys:
        store.write_bytes(key, b"x")
    result = store.delete_prefix("b/run", keep=lambda key: "/checkpoints/" in key)
    assert result == DeleteResult(prefix_uri=store.root_uri + "/b/run/", deleted=["b/run/report/r.md",
                                  "b/run/teacher/p.bin"], kept=["b/run/checkpoints/s1/state.pt"])
    assert result.ok
    assert store.list() == ["b/run-2/teacher/p.bin", "b/run/checkpoints/s1/state.pt", "b/runner.txt"]
    assert store.delete_prefix("b/run/").deleted == ["b/run/checkpoints/s1/state.pt"]
    assert store.list() == ["b/run-2/teacher/p.bin", "b/runner.txt"]
    assert store.delete_prefix("b/none") == DeleteResult(prefix_uri=store.root_uri + "/b/none/")


def test_uri_and_repr(store):
    uri = store.uri("x/y.bin")
    assert uri == store.root_uri + "/x/y.bin"
    assert repr(store) == f"{type(store).__name__}({store.root_uri!r})"


# --------------------------------------------------------------------------- local specifics


def test_local_uri_round_trips_through_open_store(tmp_path):
    store = LocalStore(tmp_path / "with space")
    store.write_text("k.txt", "v")
    assert store.uri("k.txt").startswith("file:///")
    reopened = open_store(store.root_uri)
    assert isinstance(reopened, LocalStore) and reopened.read_text("k.txt") == "v"


def test_local_failed_overwrite_keeps_old_content_and_no_temp(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    store.write_bytes("out.bin", b"old")

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(storage_mod.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        store.write_bytes("out.bin", b"new")
    assert sorted(os.listdir(tmp_path)) == ["out.bin"]
    assert store.read_bytes("out.bin") == b"old"


def test_local_writer_failing_midway_leaves_nothing(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    src = tmp_path / "big.bin"
    src.write_bytes(b"x" * 100_000)
    seen_during_write = {}

    def half_copy_then_fail(fsrc, fdst):
        fdst.write(fsrc.read(50_000))
        fdst.flush()
        seen_during_write["on_disk"] = os.listdir(tmp_path / "store" / "models")
        seen_during_write["listed"] = store.list()
        raise OSError("source went away")

    monkeypatch.setattr(storage_mod.shutil, "copyfileobj", half_copy_then_fail)
    with pytest.raises(OSError, match="source went away"):
        store.upload_file("models/student.bin", src)
    assert len(seen_during_write["on_disk"]) == 1  # the temp file existed ...
    assert seen_during_write["listed"] == []  # ... but was never visible as a key
    assert os.listdir(tmp_path / "store" / "models") == []
    assert not store.exists("models/student.bin")


def test_local_write_if_absent_concurrent_writers(tmp_path):
    store = LocalStore(tmp_path)
    barrier = threading.Barrier(8)
    results: dict[int, bool] = {}

    def writer(i: int) -> None:
        barrier.wait()
        results[i] = store.write_if_absent("cache/key.bin", f"writer-{i}".encode() * 1000)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, created in results.items() if created]
    assert len(winners) == 1
    assert store.read_bytes("cache/key.bin") == f"writer-{winners[0]}".encode() * 1000
    assert os.listdir(tmp_path / "cache") == ["key.bin"]


def test_local_missing_when_parent_is_a_file(tmp_path):
    store = LocalStore(tmp_path)
    store.write_text("a", "file")
    with missing(store.uri("a/b")):
        store.read_bytes("a/b")


def test_local_delete_prefix_removes_the_folders_it_empties(tmp_path):
    store = LocalStore(tmp_path / "store")
    for key in ["b/run/teacher/shard/p.bin", "b/run/checkpoints/c.pt", "b/other/x"]:
        store.write_bytes(key, b"x")
    store.delete_prefix("b/run", keep=lambda key: key.endswith(".pt"))
    assert sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*")) == [
        "b", "b/other", "b/other/x", "b/run", "b/run/checkpoints", "b/run/checkpoints/c.pt"]
    store.delete_prefix("b/run")
    assert sorted(p.relative_to(store.root).as_posix() for p in store.root.rglob("*")) == ["b", "b/other", "b/other/x"]
    store.delete_prefix("")
    assert list(store.root.iterdir()) == []  # the root itself stays


def test_local_delete_prefix_records_a_failing_key_and_goes_on(tmp_path, monkeypatch):
    store = LocalStore(tmp_path)
    for key in ["r/a", "r/b", "r/c"]:
        store.write_bytes(key, b"x")
    unlink = Path.unlink

    def refuse_b(path, *args, **kwargs):
        if path.name == "b":
            raise PermissionError(13, "Permission denied", str(path))
        return unlink(path, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refuse_b)
    result = store.delete_prefix("r")
    assert (result.deleted, result.failed, result.ok) == (["r/a", "r/c"], ["r/b"], False)
    assert result.error == f"Permission denied: {tmp_path / 'r' / 'b'}"
    assert store.list() == ["r/b"]


def test_local_written_files_get_umask_permissions(tmp_path):
    store = LocalStore(tmp_path)
    store.write_bytes("f.bin", b"x")
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------- GCS specifics


def test_gcs_uri_layout(faulty_gcs):
    store = GCSStore(f"gs://{BUCKET}-root", client=faulty_gcs.client)
    store.write_text("top.txt", "t")
    assert store.uri("top.txt") == f"gs://{BUCKET}-root/top.txt"
    assert store.list() == ["top.txt"]
    prefixed = open_store(f"gs://{BUCKET}/p/q/", client=faulty_gcs.client)
    assert prefixed.uri("k") == f"gs://{BUCKET}/p/q/k"


def test_gcs_client_from_environment(faulty_gcs, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", faulty_gcs.endpoint)
    store = open_store(f"gs://{BUCKET}/{uuid.uuid4().hex}")
    store.write_text("env.txt", "from env")
    assert store.read_text("env.txt") == "from env"


def test_gcs_generation_preconditions(gcs_store):
    gcs_store.write_bytes("state.json", b"v1")
    gen = gcs_store.generation("state.json")
    gcs_store.write_bytes("state.json", b"v2", if_generation_match=gen)
    assert gcs_store.read_bytes("state.json") == b"v2"
    with pytest.raises(GenerationMismatchError, match=re.escape(gcs_store.uri("state.json"))):
        gcs_store.write_bytes("state.json", b"v3", if_generation_match=gen)
    with pytest.raises(FileExistsError, match=re.escape(gcs_store.uri("state.json"))):
        gcs_store.write_bytes("state.json", b"v3", if_generation_match=0)
    assert gcs_store.read_bytes("state.json") == b"v2"
    with missing(gcs_store.uri("nope")):
        gcs_store.generation("nope")


def test_gcs_large_objects_go_through_resumable_uploads(gcs_store, faulty_gcs, tmp_path):
    data = os.urandom(9 * 1024 * 1024)  # over the client's 8 MiB single-request limit
    assert gcs_store.write_if_absent("big.bin", data) is True
    assert faulty_gcs.requests >= 2  # a resumable session, not one multipart request
    assert gcs_store.write_if_absent("big.bin", b"other") is False
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    faulty_gcs.faults[:] = [503]  # fails the start of the resumable session once
    gcs_store.upload_file("big2.bin", src)
    gcs_store.download_file("big2.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == data == gcs_store.read_bytes("big.bin")


@pytest.mark.parametrize("fault", [503, 429, 500, DROP])
def test_gcs_transient_errors_are_retried(gcs_store, faulty_gcs, fault):
    faulty_gcs.faults[:] = [fault, fault]
    gcs_store.write_bytes("r.bin", b"payload")
    assert faulty_gcs.requests == 3  # two failures, then success; no hidden library retries

    faulty_gcs.reset()
    faulty_gcs.faults[:] = [fault, fault]
    assert gcs_store.read_bytes("r.bin") == b"payload"
    assert faulty_gcs.requests == 3


def test_gcs_retries_are_bounded(gcs_store, faulty_gcs):
    from google.api_core.exceptions import ServiceUnavailable

    faulty_gcs.faults[:] = [503] * 5
    with pytest.raises(StoreUnavailableError) as info:
        gcs_store.list()
    assert faulty_gcs.requests == FAST_RETRY.max_attempts
    assert info.value.filename == gcs_store.root_uri + "/"
    assert info.value.strerror == f"{faulty_gcs.endpoint} answered 503 Service Unavailable ({FAST_RETRY.max_attempts} attempts)"
    assert isinstance(info.value.__cause__, ServiceUnavailable)


def test_gcs_not_found_and_precondition_failures_are_not_retried(gcs_store, faulty_gcs):
    with missing(gcs_store.uri("absent")):
        gcs_store.read_bytes("absent")
    assert faulty_gcs.requests == 1

    gcs_store.write_bytes("present", b"1")
    faulty_gcs.reset()
    assert gcs_store.write_if_absent("present", b"2") is False
    assert faulty_gcs.requests == 1


def test_gcs_forbidden_is_permission_error_not_retried(gcs_store, faulty_gcs):
    faulty_gcs.faults[:] = [403]
    with pytest.raises(PermissionError, match=re.escape(gcs_store.uri("k"))):
        gcs_store.read_bytes("k")
    assert faulty_gcs.requests == 1


def test_gcs_missing_bucket_and_forbidden_listing(faulty_gcs):
    store = GCSStore("gs://no-such-bucket/runs", client=faulty_gcs.client, retry=FAST_RETRY)
    with missing("gs://no-such-bucket/runs/"):
        store.list()
    faulty_gcs.reset()
    faulty_gcs.faults[:] = [403]
    with pytest.raises(PermissionError, match=re.escape(f"gs://{BUCKET}/")):
        GCSStore(f"gs://{BUCKET}", client=faulty_gcs.client, retry=FAST_RETRY).list()
    assert faulty_gcs.requests == 1



def _client_at(endpoint: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    return gcs.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint})


def test_gcs_missing_bucket_is_named_on_writes(faulty_gcs, tmp_path):
    store = GCSStore("gs://no-such-bucket/runs", client=faulty_gcs.client, retry=FAST_RETRY)
    src = tmp_path / "f.bin"
    src.write_bytes(b"x")
    for write in (lambda: store.write_bytes("k", b"x"), lambda: store.write_if_absent("k", b"x"),
                  lambda: store.upload_file("k", src)):
        with pytest.raises(FileNotFoundError) as info:
            write()
        assert info.value.strerror == f"No such bucket gs://no-such-bucket (at {faulty_gcs.endpoint})"
        assert info.value.filename == "gs://no-such-bucket/runs/k"


def test_gcs_unreachable_endpoint_is_named_after_the_last_attempt(caplog):
    pytest.importorskip("google.cloud.storage")
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = GCSStore(f"gs://{BUCKET}/p", client=_client_at(endpoint), retry=FAST_RETRY)
    with caplog.at_level(logging.WARNING, logger="ptdistill.storage"), pytest.raises(StoreUnavailableError) as info:
        store.read_bytes("k")
    assert info.value.strerror == f"cannot reach {endpoint}: [Errno 111] Connection refused (3 attempts)"
    assert info.value.filename == f"gs://{BUCKET}/p/k"
    assert len([r for r in caplog.records if "retrying" in r.getMessage()]) == FAST_RETRY.max_attempts - 1


@pytest.mark.slow
def test_gcs_requests_time_out_by_the_policy():
    # A server that accepts connections (the kernel's backlog) and never answers.
    pytest.importorskip("google.cloud.storage")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        policy = RetryPolicy(max_attempts=2, initial_delay=0.001, max_delay=0.001, timeout=0.2)
        store = GCSStore(f"gs://{BUCKET}/p", client=_client_at(endpoint), retry=policy)
        for call in (lambda: store.read_bytes("k"), lambda: store.write_bytes("k", b"x"), store.list,
                     lambda: store.delete("k")):
            with pytest.raises(StoreUnavailableError) as info:
                call()
            assert info.value.strerror == f"cannot reach {endpoint}: no answer within 0.2 s (2 attempts)"


def test_gcs_token_fetch_failing_on_the_network_is_retried_then_named(faulty_gcs, caplog):
    from google.auth.credentials import Credentials
    from google.auth.exceptions import TransportError
    from google.cloud import storage as gcs

    class Offline(Credentials):
        def refresh(self, request):
            raise TransportError("Failed to retrieve http://169.254.169.254/token: connection refused")

    client = gcs.Client(project="test", credentials=Offline(), client_options={"api_endpoint": faulty_gcs.endpoint})
    store = GCSStore(f"gs://{BUCKET}/p", client=client, retry=FAST_RETRY)
    with caplog.at_level(logging.WARNING, logger="ptdistill.storage"), pytest.raises(StoreUnavailableError) as info:
        store.read_bytes("k")
    # Our attempts; the client's background bucket-metadata fetch may refresh too, so not counted by refreshes.
    assert len([r for r in caplog.records if "TransportError" in r.getMessage()]) == FAST_RETRY.max_attempts - 1
    assert info.value.strerror.startswith(f"cannot reach {faulty_gcs.endpoint}: Failed to retrieve")


def test_gcs_delete_prefix_records_a_failing_key_and_goes_on(gcs_store, faulty_gcs):
    for key in ["r/a", "r/b", "r/c"]:
        gcs_store.write_bytes(key, b"x")
    faulty_gcs.reset()
    faulty_gcs.faults[:] = [PASS, PASS, 403]  # the listing, r/a, then r/b is refused
    result = gcs_store.delete_prefix("r")
    assert (result.deleted, result.failed, result.ok) == (["r/a", "r/c"], ["r/b"], False)
    assert result.error == f"Permission denied (403 injected fault): {gcs_store.uri('r/b')}"
    assert gcs_store.list() == ["r/b"]


def test_gcs_delete_prefix_stops_asking_a_store_that_went_down(gcs_store, faulty_gcs):
    for key in ["r/a", "r/b", "r/c", "r/keep"]:
        gcs_store.write_bytes(key, b"x")
    faulty_gcs.reset()
    faulty_gcs.faults[:] = [PASS] + [DROP] * FAST_RETRY.max_attempts  # listed, then down for good
    result = gcs_store.delete_prefix("r", keep=lambda key: key == "r/keep")
    assert faulty_gcs.requests == 1 + FAST_RETRY.max_attempts  # one key's attempts, not every key's
    assert (result.deleted, result.kept, result.failed) == ([], ["r/keep"], ["r/a", "r/b", "r/c"])
    assert result.error.startswith(f"cannot reach {faulty_gcs.endpoint}: ")
    assert result.error.endswith(f"({FAST_RETRY.max_attempts} attempts): {gcs_store.uri('r/a')}")


def test_gcs_delete_prefix_on_an_unreachable_endpoint_returns_the_prefix():
    pytest.importorskip("google.cloud.storage")
    endpoint = f"http://127.0.0.1:{free_port()}"
    store = GCSStore(f"gs://{BUCKET}/p", client=_client_at(endpoint), retry=FAST_RETRY)
    result = store.delete_prefix("bench/run")
    assert not result.ok
    assert (result.prefix_uri, result.deleted, result.failed) == (f"gs://{BUCKET}/p/bench/run/", [], [])
    assert result.error == (f"cannot reach {endpoint}: [Errno 111] Connection refused (3 attempts): "
                            f"gs://{BUCKET}/p/bench/run/")


def test_gcs_missing_credentials_name_the_uri(no_gcp_credentials):
    with pytest.raises(PermissionError) as info:
        open_store("gs://some-bucket/x")
    assert info.value.filename == "gs://some-bucket/x"
    assert "gcloud auth application-default login" in info.value.strerror


def test_gcs_missing_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    with pytest.raises(ImportError, match=re.escape("ptdistill[gcs]")):
        open_store("gs://bucket/x")


@pytest.mark.parametrize("uri", ["gs://", "gs:///prefix", "gs://b/a/../c", "gs://Upper/x", "gs://ab", "gs://-ab/x",
                                 "gs://ab-/x", "gs://a..b/x", "gs://a b/x", "gs://" + "a" * 64])
def test_gcs_bad_uris(uri):
    pytest.importorskip("google.cloud.storage")
    with pytest.raises(ValueError, match=re.escape(repr(uri))):
        GCSStore(uri, client=object())


@pytest.mark.parametrize("bucket", ["abc", "my-bucket_1", "a" * 63, "example.com.bucket"])
def test_gcs_valid_bucket_names(faulty_gcs, bucket):
    assert GCSStore(f"gs://{bucket}/x", client=faulty_gcs.client).bucket_name == bucket


def test_gcs_scheme_is_case_insensitive(faulty_gcs):
    store = open_store(f"GS://{BUCKET}/p", client=faulty_gcs.client)
    assert isinstance(store, GCSStore) and store.uri("k") == f"gs://{BUCKET}/p/k"


# --------------------------------------------------------------------------- open_store, retry, keys


def test_open_store_chooses_by_scheme(tmp_path):
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert open_store(tmp_path.as_uri()).root == tmp_path
    assert open_store(f"file://localhost{tmp_path}").root == tmp_path


@pytest.mark.parametrize("uri", ["s3://bucket/x", "hdfs://nn/x"])
def test_open_store_unknown_scheme(uri):
    with pytest.raises(ValueError, match=re.escape(uri)) as info:
        open_store(uri)
    assert "gs://" in str(info.value) and "file://" in str(info.value)


@pytest.mark.parametrize("uri", ["", "file://relative/path", "file://"])
def test_open_store_malformed(uri):
    with pytest.raises(ValueError):
        open_store(uri)


@pytest.mark.parametrize("uri", ["gs:/bucket/x", "gs:bucket", "GS:/bucket", "file:/tmp/x", "s3:/b/x"])
def test_open_store_mistyped_uri_is_not_a_local_folder(uri, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=re.escape(f"malformed storage URI {uri!r}")):
        open_store(uri)
    assert list(tmp_path.iterdir()) == []


def test_open_store_expands_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path / "..")
    assert open_store("~/store").root == tmp_path / "store"


def test_gcs_endpoint_without_scheme_is_named(monkeypatch):
    pytest.importorskip("google.cloud.storage")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "127.0.0.1:9023")
    with pytest.raises(ValueError, match=re.escape("STORAGE_EMULATOR_HOST is '127.0.0.1:9023'; expected a URL")):
        open_store("gs://bucket/x")


def test_open_store_local_names_with_colons(tmp_path):
    assert open_store(str(tmp_path / "runs:2026")).root == tmp_path / "runs:2026"


def test_retry_policy_retries_listed_errors_only():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("reset")
        return "ok"

    assert FAST_RETRY.run(flaky, (ConnectionError,)) == "ok"
    assert len(calls) == 3

    calls.clear()

    def broken():
        calls.append(1)
        raise ValueError("bad request")

    with pytest.raises(ValueError):
        FAST_RETRY.run(broken, (ConnectionError,))
    assert len(calls) == 1


def test_retry_policy_backoff_grows_and_is_capped():
    policy = RetryPolicy(initial_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=0.25)
    for n, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (10, 5.0)]:
        for _ in range(20):
            assert base * 0.75 <= policy.delay(n) <= base * 1.25
    assert RetryPolicy(initial_delay=1.0, jitter=0.0).delay(3) == 4.0


@pytest.mark.parametrize("kwargs", [{"max_attempts": 0}, {"initial_delay": -1}, {"multiplier": 0.5}, {"jitter": 1.5},
                                    {"timeout": 0}])
def test_retry_policy_validates(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_content_key_is_stable_and_dict_order_insensitive():
    settings_a = {"temperature": 2.0, "batch_size": 64, "dtype": "float16"}
    settings_b = {"dtype": "float16", "batch_size": 64, "temperature": 2.0}
    key = content_key("bert-base", "sha256:abc", "data-fp", "train", settings_a)
    assert key == content_key("bert-base", "sha256:abc", "data-fp", "train", settings_b)
    assert re.fullmatch(r"[0-9a-f]{64}", key)
    canonical = '["bert-base","sha256:abc","data-fp","train",{"batch_size":64,"dtype":"float16","temperature":2.0}]'
    assert key == hashlib.sha256(canonical.encode()).hexdigest()  # pinned: cache keys must not drift
    assert key != content_key("bert-base", "sha256:abc", "data-fp", "validation", settings_a)
    assert content_key("a", "b") != content_key("b", "a")
    assert content_key("ab") != content_key("a", "b")
    with pytest.raises(TypeError):
        content_key(Path("x"))
    with pytest.raises(ValueError):
        content_key(float("nan"))


def test_library_imports_without_google_cloud_storage():
    code = "import sys, ptdistill.storage; sys.exit('google.cloud.storage' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode == 0
