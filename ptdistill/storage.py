"""One small object-storage interface for local paths and Google Cloud Storage.

Pipeline components write teacher outputs, search results, students and reports to a
location given as a URI: a local path or ``file://`` URI on a laptop or in tests, a
``gs://bucket/prefix`` URI on Kubeflow. Components call :func:`open_store` once and then
use the same :class:`Store` methods everywhere, so no component contains two code paths.

What the interface guarantees, because pipelines run steps concurrently and retry them:

* **No half-written objects.** A local write goes to a temporary file in the target
  directory and is published with ``os.replace``; a GCS upload is atomic by itself.
* **Create-only writes.** :meth:`Store.write_if_absent` never overwrites (``os.link`` locally,
  ``if_generation_match=0`` on GCS), so two workers filling the same cache entry cannot
  clobber each other.
* **Bounded retries on transient GCS errors** (429, 5xx, dropped connections, timeouts) with
  exponential backoff and jitter, and a timeout on every request, set by a
  :class:`RetryPolicy`. The client library's own retries are turned off so the policy is the
  only retry layer. 403, 404 and 412 are never retried. :data:`SHORT_RETRY` gives up
  within seconds, for checks and clean-up that must not hang on a store that is down.
* **Errors name the URI.** A missing key raises ``FileNotFoundError`` (naming the bucket when
  it is the bucket that is missing), a failed create-only write ``FileExistsError``, a
  refused request ``PermissionError``, a store still failing after the last attempt
  :class:`StoreUnavailableError` (naming the endpoint), all naming the full URI.
* **Best-effort clean-up.** :meth:`Store.delete_prefix` deletes a run's objects, keeping
  the keys a predicate names, and reports what it could not delete instead of raising.

Inputs a task reads from a bucket (a config's ``data.path``, ``data.source``, a checkpoint
folder) go through :func:`fetch` / :func:`local_copy`: a local copy in a cache keyed by each
object's generation and md5, so the existing file readers and ``from_pretrained`` read it, and
errors name the ``gs://`` object. :func:`check_location` checks such a location's syntax
without touching it (what ``compile`` does).

Keys are ``/``-separated paths relative to the store's root. Empty segments, ``.``, ``..``
and a leading ``/`` are rejected, so a key can never point outside the root.

``google-cloud-storage`` is imported only when a ``gs://`` store is opened; install it with
``pip install 'ptdistill[gcs]'``.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import hashlib
import json
import logging
import os
import random
import re
import secrets
import shutil
import tempfile
import time
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from ptdistill import defaults
from ptdistill.extras import MissingExtra
from ptdistill.io import TMP_PREFIX, write_atomic

if TYPE_CHECKING:
    from google.cloud.storage import Client

logger = logging.getLogger(__name__)

T = TypeVar("T")


SUPPORTED_SCHEMES = ("local path", "file://", "gs://")
#: Schemes that, written without ``//`` (``gs:/bucket``, ``file:x``), are a mistyped URI, not a folder name.
_URI_SCHEMES = ("gs", "file", "s3", "gcs", "http", "https", "hdfs", "az", "abfs", "abfss")


def content_key(*parts: Any) -> str:
    """Return a stable sha256 hex digest of ``parts`` for content-addressed caching.

    The parts are serialised as JSON with sorted dict keys, so dict order does not matter
    but the order of ``parts`` does. Only JSON types are accepted (a ``TypeError`` otherwise),
    so the caller decides how to spell paths, dtypes and so on; e.g. the teacher cache key is
    ``content_key(teacher_id, weights_sha, data_fingerprint, split, inference_settings)``.
    """
    blob = json.dumps(list(parts), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, for a bounded number of attempts.

    Before retry ``n`` (1 for the first) the policy sleeps
    ``min(max_delay, initial_delay * multiplier ** (n - 1))``, scaled by a random factor in
    ``[1 - jitter, 1 + jitter]`` so that workers that failed together do not retry together.
    ``timeout`` (seconds) is how long each attempt's request may wait for the server to connect
    or answer; stores that make requests pass it on (a local store makes none), so one call
    takes at most about ``max_attempts * timeout`` plus the pauses. Each retry is logged at
    ``log_level``.
    """

    max_attempts: int = 6
    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.25
    timeout: float = 60.0
    log_level: int = logging.WARNING

    def __post_init__(self) -> None:
        if self.timeout <= 0:
            raise ValueError(f"timeout: expected seconds > 0, got {self.timeout}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts: expected >= 1, got {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError(
                f"delays: expected >= 0, got initial_delay={self.initial_delay}, max_delay={self.max_delay}"
            )
        if self.multiplier < 1:
            raise ValueError(f"multiplier: expected >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter: expected a fraction in [0, 1], got {self.jitter}")

    def delay(self, retry_number: int) -> float:
        """Seconds to sleep before retry ``retry_number`` (1 for the first retry)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** (retry_number - 1))
        return base * random.uniform(1 - self.jitter, 1 + self.jitter)

    def run(self, fn: Callable[[], T], retry_on: tuple[type[BaseException], ...], what: str = "operation") -> T:
        """Call ``fn`` until it returns, retrying only exceptions of the types in ``retry_on``.

        The last exception is re-raised once ``max_attempts`` calls have failed.
        """
        attempt = 1
        while True:
            try:
                return fn()
            except retry_on as exc:
                if attempt >= self.max_attempts:
                    raise
                pause = self.delay(attempt)
                logger.log(
                    self.log_level,
                    "%s failed (attempt %d/%d): %r; retrying in %.2fs",
                    what, attempt, self.max_attempts, exc, pause,
                )
                time.sleep(pause)
                attempt += 1


#: Gives up within seconds (two attempts, 5 s per request): for pre-flight checks and clean-up,
#: which must report a store that is down instead of waiting on it. Their callers sum up a
#: failure in one line, so retries are logged at DEBUG only.
SHORT_RETRY = RetryPolicy(max_attempts=2, initial_delay=0.5, max_delay=1.0, timeout=5.0, log_level=logging.DEBUG)


class StoreUnavailableError(OSError):
    """A store request still failed after the last attempt of its :class:`RetryPolicy`
    (endpoint unreachable, timeouts, 429 or 5xx answers). ``strerror`` says why, naming the
    endpoint; ``filename`` is the URI of the object or prefix."""


@dataclass
class DeleteResult:
    """What :meth:`Store.delete_prefix` did under ``prefix_uri``.

    ``failed`` holds the keys still stored that should have been deleted; ``error`` is the
    first error met, one line naming the URI (see :func:`describe_error`), or None. If the
    listing itself failed, nothing was deleted, ``failed`` is empty and ``error`` says why:
    check :attr:`ok`, not ``failed``.
    """

    prefix_uri: str
    deleted: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Whether every object under the prefix, except the kept ones, is gone."""
        return self.error is None


def _status(code: int | None) -> str:
    """An HTTP status as ``"501 Not Implemented"`` (just the number when it is not a standard one)."""
    try:
        return f"{code} {HTTPStatus(code).phrase}"
    except ValueError:
        return str(code)


def _check_key(key: str) -> str:
    """Return ``key`` if it is a valid relative object key, else raise ``ValueError``."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"key must be a non-empty string, got {key!r}")
    if key.startswith("/"):
        raise ValueError(f"key must be relative to the store root, got absolute {key!r}")
    if any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"key must not contain empty, '.' or '..' segments or end with '/', got {key!r}")
    return key


def _check_prefix(prefix: str) -> str:
    """Return a list prefix: ``""`` or a key, optionally ending with ``/``."""
    if prefix:
        _check_key(prefix.removesuffix("/"))
    return prefix


def _dir_prefix(prefix: str) -> str:
    """Return ``prefix`` as a directory prefix: ``""`` (the root) or a key plus ``/``."""
    if not prefix:
        return ""
    return _check_key(prefix.removesuffix("/")) + "/"


def _valid_bucket_name(name: str) -> bool:
    """GCS's rule: 3-63 characters (222 with dots, 63 between dots) of lowercase letters, digits,
    '-', '_' and '.', starting and ending with a letter or digit."""
    parts = name.split(".")
    return (
        3 <= len(name) <= (222 if len(parts) > 1 else 63)
        and all(0 < len(part) <= 63 for part in parts)
        and re.fullmatch(r"[a-z0-9][a-z0-9._-]*[a-z0-9]", name) is not None
    )


def _server_message(exc: Any) -> str:
    """The server's own words in a GCS error (``google.api_core`` puts the request's method, URL and,
    for uploads, the raw body around them)."""
    try:
        return str(exc.response.json()["error"]["message"])
    except (AttributeError, ValueError, KeyError, TypeError):
        return re.sub(r"^[A-Z]+ \S+: ", "", exc.message)


def _not_found(uri: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "No such object", uri)


def _root_cause(exc: BaseException) -> str:
    """The innermost reason of a network error (e.g. ``[Errno 111] Connection refused``), not the
    wrapper's long URL."""
    while True:
        inner = getattr(exc, "reason", None) or next((a for a in exc.args if isinstance(a, BaseException)), None)
        if not isinstance(inner, BaseException) or inner is exc:
            break
        exc = inner
    text = _one_line(exc)
    found = re.search(r"\[Errno -?\d+\][^'\")]*", text)
    return found.group(0).strip() if found else text


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """``exc`` as one line for a user: ``reason: path`` for an ``OSError`` (the errors of this
    module name the URI as their ``filename``), without the ``[Errno N]`` prefix."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return _one_line(exc)


#: What a local read of a missing key raises ('a/b' with 'a' a file, or a key naming a directory).
_LOCAL_MISSING = (FileNotFoundError, NotADirectoryError, IsADirectoryError)


class Store(ABC):
    """Objects under one root, addressed by ``/``-separated relative keys."""

    @property
    @abstractmethod
    def root_uri(self) -> str:
        """URI of the store's root, without a trailing ``/``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_uri!r})"

    @abstractmethod
    def uri(self, key: str) -> str:
        """Full URI of ``key`` (``file:///...`` or ``gs://bucket/...``)."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write ``data`` to ``key`` atomically, replacing any existing object."""

    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Return the content of ``key``; ``FileNotFoundError`` if it does not exist."""

    @abstractmethod
    def write_if_absent(self, key: str, data: bytes) -> bool:
        """Create ``key`` with ``data`` unless it exists; return whether this call created it.

        Never overwrites: of several concurrent writers exactly one gets ``True``.
        """

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Sorted keys that start with ``prefix`` (a plain string prefix, as on GCS)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; ``FileNotFoundError`` if it does not exist."""

    @abstractmethod
    def upload_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Store the local file ``local_path`` under ``key``."""

    @abstractmethod
    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        """Copy ``key`` to ``local_path`` (atomically; parent directories are created)."""

    def delete_prefix(self, prefix: str, keep: Callable[[str], bool] | None = None) -> DeleteResult:
        """Delete every object under ``prefix/`` except the keys for which ``keep(key)`` is true.

        Best effort, for clean-up after a failure: never raises on a storage error. A key that
        cannot be deleted is recorded and the others are still tried; a key already gone counts
        as deleted. Once the store is unreachable (:class:`StoreUnavailableError`) the remaining
        keys are recorded as failed without more requests, so a store that is down costs one
        request's retries, not one per key. ``prefix`` is a "directory": ``"a/run"`` never
        touches ``"a/run-2/..."``. Open the store with :data:`SHORT_RETRY` to bound the time.
        """
        base = _dir_prefix(prefix)
        result = DeleteResult(prefix_uri=f"{self.root_uri}/{base}")
        try:
            keys = self.list(base)
        except OSError as exc:
            result.error = describe_error(exc)
            return result
        doomed: builtins.list[str] = []
        for key in keys:
            (result.kept if keep is not None and keep(key) else doomed).append(key)
        for i, key in enumerate(doomed):
            try:
                self.delete(key)
            except FileNotFoundError:
                pass  # gone already: what we wanted
            except OSError as exc:
                result.error = result.error or describe_error(exc)
                if isinstance(exc, StoreUnavailableError):
                    result.failed += doomed[i:]
                    break
                result.failed.append(key)
                continue
            result.deleted.append(key)
        return result

    def write_text(self, key: str, text: str) -> None:
        """Write ``text`` as UTF-8."""
        self.write_bytes(key, text.encode("utf-8"))

    def read_text(self, key: str) -> str:
        """Read ``key`` as UTF-8."""
        return self.read_bytes(key).decode("utf-8")

    # ``builtins.list`` below: in this class body, ``list`` is the method above.
    def upload_dir(self, prefix: str, local_dir: str | os.PathLike[str]) -> builtins.list[str]:
        """Upload every file under ``local_dir`` to ``prefix/<relative path>``; return the keys."""
        root = Path(local_dir)
        if not root.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(root))
        base = _dir_prefix(prefix)
        files = {
            base + path.relative_to(root).as_posix(): path
            for path in (Path(dirpath, name) for dirpath, _, names in os.walk(root) for name in names)
        }
        for key in sorted(files):
            self.upload_file(key, files[key])
        return sorted(files)

    def download_dir(self, prefix: str, local_dir: str | os.PathLike[str]) -> builtins.list[str]:
        """Download every object under ``prefix/`` into ``local_dir``; return the keys.

        Raises ``FileNotFoundError`` if there is no object under the prefix.
        """
        base = _dir_prefix(prefix)
        keys = self.list(base)
        if not keys:
            raise _not_found(f"{self.root_uri}/{base}")
        for key in keys:
            # Re-check: a bucket may hold names (e.g. 'a/../b') that would escape local_dir.
            self.download_file(key, Path(local_dir, _check_key(key[len(base) :])))
        return keys


class LocalStore(Store):
    """A store in a local directory (created on first write).

    ``root`` may start with ``~`` (not expanded by the shell in ``--artifact-store=~/x``); a
    relative root is resolved against the working directory when the store is opened.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(os.path.abspath(os.path.expanduser(root)))

    @property
    def root_uri(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def write_bytes(self, key: str, data: bytes) -> None:
        write_atomic(self._path(key), lambda f: f.write(data))

    def read_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except _LOCAL_MISSING as exc:
            raise _not_found(self.uri(key)) from exc

    def write_if_absent(self, key: str, data: bytes) -> bool:
        created = True

        def link(tmp: str, dest: Path) -> None:
            nonlocal created
            try:
                os.link(tmp, dest)  # atomic, and fails if dest exists
            except FileExistsError:
                created = False

        write_atomic(self._path(key), lambda f: f.write(data), publish=link)
        return created

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        _check_prefix(prefix)
        keys = []
        for dirpath, _, files in os.walk(self.root / prefix.rpartition("/")[0]):
            for name in files:
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if not name.startswith(TMP_PREFIX) and key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except _LOCAL_MISSING as exc:
            raise _not_found(self.uri(key)) from exc

    def delete_prefix(self, prefix: str, keep: Callable[[str], bool] | None = None) -> DeleteResult:
        """See :meth:`Store.delete_prefix`; also removes the folders it leaves empty (the root stays)."""
        result = super().delete_prefix(prefix, keep)
        top = self.root / _dir_prefix(prefix)
        for dirpath, _, _ in os.walk(top, topdown=False):
            if Path(dirpath) != self.root:
                try:
                    os.rmdir(dirpath)
                except OSError:
                    pass  # not empty: a kept key, or a writer of another prefix
        return result

    def upload_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        dest = self._path(key)
        with open(local_path, "rb") as src:
            write_atomic(dest, lambda f: shutil.copyfileobj(src, f))

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        try:
            src = open(self._path(key), "rb")
        except _LOCAL_MISSING as exc:
            raise _not_found(self.uri(key)) from exc
        with src:
            write_atomic(Path(local_path), lambda f: shutil.copyfileobj(src, f))


class GenerationMismatchError(OSError):
    """A GCS write with ``if_generation_match=N`` (N > 0) found another generation."""


class GCSStore(Store):
    """A store under ``gs://bucket/prefix``.

    ``client`` is a ``google.cloud.storage.Client``; without one, a client is built from the
    environment (credentials, project, and ``STORAGE_EMULATOR_HOST`` for an emulator).
    Raises ``ValueError`` for a malformed URI or bucket name and ``PermissionError`` when no
    credentials are found, before any request.
    """

    def __init__(self, uri: str, *, client: Client | None = None, retry: RetryPolicy | None = None) -> None:
        try:
            import google.api_core.exceptions as gexc  # gcs extra: only gs:// locations need it
            import google.auth.exceptions as gauth
            import google.cloud.storage as gcs
            import requests
        except ImportError as exc:
            raise MissingExtra(f"opening {uri!r} needs the 'gcs' extra (google-cloud-storage):"
                               " pip install 'ptdistill[gcs]'", name=exc.name) from exc
        bucket, prefix = parse_gs_uri(uri)
        self.bucket_name = bucket
        self.prefix = prefix
        self.retry = retry or RetryPolicy()
        try:
            self._client = client if client is not None else gcs.Client()
        except gauth.DefaultCredentialsError as exc:
            raise PermissionError(
                errno.EACCES, "no Google Cloud credentials found: run `gcloud auth application-default login`, "
                "set GOOGLE_APPLICATION_CREDENTIALS, or set STORAGE_EMULATOR_HOST for an emulator", uri) from exc
        if not self.endpoint.startswith(("http://", "https://")):
            source = "STORAGE_EMULATOR_HOST" if os.environ.get("STORAGE_EMULATOR_HOST") else "the client's endpoint"
            raise ValueError(f"opening {uri!r}: {source} is {self.endpoint!r}; expected a URL such as "
                             "http://127.0.0.1:9023")
        self._bucket = self._client.bucket(bucket)
        self._gexc = gexc
        self._timeouts = (requests.Timeout,)
        self._transient: tuple[type[BaseException], ...] = (
            gexc.TooManyRequests,
            gexc.InternalServerError,
            gexc.BadGateway,
            gexc.ServiceUnavailable,
            gexc.GatewayTimeout,
            ConnectionError,
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            gauth.TransportError,  # fetching an access token failed on the network
        )

    @property
    def endpoint(self) -> str:
        """The HTTP endpoint requests go to (``STORAGE_EMULATOR_HOST`` for an emulator)."""
        return getattr(self._client, "api_endpoint", None) or "https://storage.googleapis.com"

    @property
    def root_uri(self) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}" if self.prefix else f"gs://{self.bucket_name}"

    def _name(self, key: str) -> str:
        """Object name of ``key`` (or of a list prefix) inside the bucket."""
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._name(_check_key(key))}"

    def _call(
        self, uri: str, fn: Callable[[], T], if_generation_match: int | None = None, *, bucket_level: bool = False
    ) -> T:
        """Run ``fn`` with retries; map GCS errors to built-in exceptions naming ``uri``.

        ``bucket_level``: the request is a write or a listing, for which GCS answers 404 only
        when the bucket itself is missing, so the error names the bucket.
        """
        try:
            return self.retry.run(fn, self._transient, what=f"GCS request for {uri}")
        except self._gexc.NotFound as exc:
            if bucket_level:
                raise FileNotFoundError(
                    errno.ENOENT, f"No such bucket gs://{self.bucket_name} (at {self.endpoint})", uri
                ) from exc
            raise _not_found(uri) from exc
        except self._gexc.Forbidden as exc:
            raise PermissionError(errno.EACCES, f"Permission denied (403 {_server_message(exc)})", uri) from exc
        except self._transient as exc:
            raise StoreUnavailableError(errno.EIO, self._unavailable(exc), uri) from exc
        except self._gexc.PreconditionFailed as exc:
            if if_generation_match == 0:
                raise FileExistsError(errno.EEXIST, "Object already exists", uri) from exc
            raise GenerationMismatchError(
                errno.EAGAIN, f"Object changed: generation is not {if_generation_match}", uri
            ) from exc
        except self._gexc.GoogleAPICallError as exc:  # any other answer (400, 501 from a server that is not GCS, ...)
            raise OSError(errno.EIO, f"{self.endpoint} answered {_status(exc.code)}: {_server_message(exc)}",
                          uri) from exc

    def _unavailable(self, exc: BaseException) -> str:
        """Why the last attempt of a request failed, naming the endpoint, as one line."""
        attempts = f"{self.retry.max_attempts} attempt{'s' if self.retry.max_attempts > 1 else ''}"
        if isinstance(exc, self._timeouts):
            return f"cannot reach {self.endpoint}: no answer within {self.retry.timeout:g} s ({attempts})"
        if isinstance(exc, self._gexc.GoogleAPICallError):
            return f"{self.endpoint} answered {_status(exc.code)} ({attempts})"
        return f"cannot reach {self.endpoint}: {_root_cause(exc)} ({attempts})"

    def write_bytes(self, key: str, data: bytes, *, if_generation_match: int | None = None) -> None:
        """Upload ``data`` to ``key`` (atomic on GCS).

        With ``if_generation_match`` the write only happens if the object's current generation
        is that number (0: the object must not exist; see :meth:`generation`); otherwise it
        raises ``FileExistsError`` (for 0) or :class:`GenerationMismatchError`.
        """
        blob = self._bucket.blob(self._name(_check_key(key)))
        self._call(
            self.uri(key),
            lambda: blob.upload_from_string(
                data, if_generation_match=if_generation_match, retry=None, timeout=self.retry.timeout
            ),
            if_generation_match=if_generation_match,
            bucket_level=True,
        )

    def write_if_absent(self, key: str, data: bytes) -> bool:
        """See :meth:`Store.write_if_absent`.

        If an attempt is retried after a transient error, its first try may already have
        created the object, and the call then returns ``False``: harmless for
        content-addressed keys, whose content is the same whoever wrote it.
        """
        try:
            self.write_bytes(key, data, if_generation_match=0)
        except FileExistsError:
            return False
        return True

    def read_bytes(self, key: str) -> bytes:
        blob = self._bucket.blob(self._name(_check_key(key)))
        return self._call(self.uri(key), lambda: blob.download_as_bytes(retry=None, timeout=self.retry.timeout))

    def generation(self, key: str) -> int:
        """Current generation of ``key``, for ``write_bytes(..., if_generation_match=...)``."""
        name = self._name(_check_key(key))
        blob = self._call(self.uri(key), lambda: self._bucket.get_blob(name, retry=None, timeout=self.retry.timeout))
        if blob is None:
            raise _not_found(self.uri(key))
        return blob.generation

    def exists(self, key: str) -> bool:
        blob = self._bucket.blob(self._name(_check_key(key)))
        return self._call(self.uri(key), lambda: blob.exists(retry=None, timeout=self.retry.timeout))

    def list(self, prefix: str = "") -> list[str]:
        return sorted(self.versions(prefix))

    def versions(self, prefix: str = "") -> dict[str, str]:
        """Key -> ``"<generation>:<md5>"`` of every object whose key starts with ``prefix`` (as
        :meth:`list`): what identifies an object's content without reading it."""
        full = self._name(_check_prefix(prefix))
        strip = len(self.prefix) + 1 if self.prefix else 0

        def blobs() -> dict[str, str]:
            found = self._client.list_blobs(self._bucket, prefix=full, retry=None, timeout=self.retry.timeout)
            return {b.name: _blob_version(b) for b in found}

        found = self._call(f"gs://{self.bucket_name}/{full}", blobs, bucket_level=True)
        # Names ending in '/' are console "folder" placeholders, not objects.
        return {name[strip:]: version for name, version in found.items() if not name.endswith("/")}

    def version(self, key: str) -> str:
        """``"<generation>:<md5>"`` of ``key`` (one metadata request); ``FileNotFoundError`` if it does not exist."""
        name = self._name(_check_key(key))
        blob = self._call(self.uri(key), lambda: self._bucket.get_blob(name, retry=None, timeout=self.retry.timeout))
        if blob is None:
            raise _not_found(self.uri(key))
        return _blob_version(blob)

    def delete(self, key: str) -> None:
        blob = self._bucket.blob(self._name(_check_key(key)))
        self._call(self.uri(key), lambda: blob.delete(retry=None, timeout=self.retry.timeout))

    def upload_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        blob = self._bucket.blob(self._name(_check_key(key)))
        self._call(
            self.uri(key),
            lambda: blob.upload_from_filename(os.fspath(local_path), retry=None, timeout=self.retry.timeout),
            bucket_level=True,
        )

    def download_file(self, key: str, local_path: str | os.PathLike[str]) -> None:
        blob = self._bucket.blob(self._name(_check_key(key)))

        def download() -> None:
            write_atomic(Path(local_path), lambda f: blob.download_to_file(f, retry=None, timeout=self.retry.timeout))

        self._call(self.uri(key), download)


def open_store(uri: str, *, client: Client | None = None, retry: RetryPolicy | None = None) -> Store:
    """Open the store rooted at ``uri``: a local path, ``file:///abs/path`` or ``gs://bucket/prefix``.

    ``client`` and ``retry`` configure a :class:`GCSStore` and are not used for local stores
    (local filesystem calls are not retried). Schemes are case-insensitive. A mistyped URI such
    as ``gs:/bucket/x`` raises ``ValueError`` rather than becoming a local folder named ``gs:``.
    """
    if not isinstance(uri, str) or not uri:
        raise ValueError(f"expected a storage URI or path, got {uri!r}")
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    if not sep:
        _check_not_mistyped(uri, SUPPORTED_SCHEMES)
        return LocalStore(uri)
    if scheme == "gs":
        return GCSStore(uri, client=client, retry=retry)
    if scheme == "file":
        host, _, path = rest.partition("/")
        if host not in ("", "localhost") or not path:
            raise ValueError(f"file URI {uri!r} must be absolute, like file:///abs/path")
        return LocalStore(urllib.request.url2pathname("/" + path))
    raise ValueError(f"unsupported storage URI {uri!r}: scheme {scheme!r}; supported: {', '.join(SUPPORTED_SCHEMES)}")


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """``(bucket, name)`` of ``gs://bucket[/name]`` (``name`` without surrounding ``/``, maybe empty).

    Checks syntax only, with no request: a ValueError names the URI and what is wrong (no bucket,
    a bucket name GCS refuses, empty, ``.`` or ``..`` segments in the name).
    """
    if not isinstance(uri, str) or uri[:5].lower() != "gs://":
        raise ValueError(f"expected a gs://bucket[/prefix] URI, got {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if name.startswith("/"):  # gs://b//x names the object "/x", not "x": refused rather than silently changed
        raise ValueError(f"object name {name!r} in {uri!r} has empty, '.' or '..' segments")
    name = name.rstrip("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}; expected gs://bucket[/prefix]")
    if not _valid_bucket_name(bucket):
        raise ValueError(f"bucket name {bucket!r} in {uri!r} is not valid on GCS: 3-63 characters of lowercase "
                         "letters, digits, '-', '_' and '.', starting and ending with a letter or digit")
    if name:
        try:
            _check_key(name)
        except ValueError:
            raise ValueError(f"object name {name!r} in {uri!r} has empty, '.' or '..' segments") from None
    return bucket, name


def _check_not_mistyped(location: str, supported: Sequence[str]) -> None:
    """ValueError for ``gs:/bucket/x`` or ``file:x``: a URI missing its ``//``, which ``Path`` would
    silently turn into a local folder named ``gs:``."""
    head, colon, _ = location.partition(":")
    if colon and head.lower() in _URI_SCHEMES:
        raise ValueError(f"malformed storage URI {location!r}: expected {head.lower()}:// (two slashes), "
                         f"e.g. {head.lower()}://bucket/prefix; supported: {', '.join(supported)}")


def _blob_version(blob: Any) -> str:
    """What identifies a GCS object's content: its generation (new on every write) and md5."""
    return f"{blob.generation}:{blob.md5_hash or blob.crc32c}"


#: What a data file or checkpoint folder of a config may be (``data.path``, ``*.model.name_or_path``).
LOCATION_SCHEMES = ("local path", "gs://")


def is_remote(location: str) -> bool:
    """Whether ``location`` is an object-storage URI (``gs://``), not a local path or a hub id."""
    return isinstance(location, str) and location[:5].lower() == "gs://"


def check_location(location: str, *, folder: bool = False, suffixes: Sequence[str] | None = None) -> None:
    """Check the syntax of a data file or folder location without touching it (no request, no file access).

    A local path (or, for a folder, anything else that is not a URI: a hub id, ``package:x``)
    passes; it is checked where it is read. A ``gs://`` URI needs a valid bucket and, for a
    file (``folder=False``), an object name not ending in ``/``. ``suffixes``: a file's allowed
    suffixes (lowercase, with the dot). A URI missing its ``//`` (``gs:/b/x``) or of another
    scheme is a ValueError saying what was expected.
    """
    if is_remote(location):
        _, name = parse_gs_uri(location)
        if not folder and (not name or location.endswith("/")):
            raise ValueError(f"{location!r} names no object; expected gs://bucket/path/to/file")
        path = PurePosixPath(name)
    else:
        scheme, sep, _ = location.partition("://")
        if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
            raise ValueError(f"unsupported URI {location!r}: scheme {scheme.lower()!r}; expected a local path or "
                             f"gs://bucket/{'prefix' if folder else 'object'}")
        _check_not_mistyped(location, LOCATION_SCHEMES)
        path = PurePosixPath(location)
    if suffixes is not None and not folder and path.suffix.lower() not in suffixes:
        raise ValueError(f"{location}: unsupported file type {path.suffix.lower()!r}; expected one of "
                         f"{', '.join(suffixes)}")


def cache_root() -> Path:
    """Where objects read from object storage are kept: ``$PTDISTILL_CACHE/objects``, by default
    ``~/.cache/ptdistill/objects``, or under the temp folder when the home folder is not writable
    (a pod run as an arbitrary uid). Entries are named by the objects' identity, never reused for
    another version."""
    if os.environ.get(defaults.CACHE_ENV):
        return Path(os.environ[defaults.CACHE_ENV]).expanduser() / "objects"
    home = Path.home()
    if os.access(home, os.W_OK):
        return home / defaults.CACHE_DIR / "objects"
    return Path(tempfile.gettempdir()) / f"ptdistill-{os.getuid()}" / "objects"


def fetch(location: str, *, folder: bool = False, include: Callable[[str], bool] | None = None,
          expected: str = "") -> Path:
    """A local path to read ``location`` from: the path itself, or a cached copy of a ``gs://`` object
    (``folder=False``) or of every object under a ``gs://`` prefix (``folder=True``; only the keys,
    relative to the prefix, for which ``include`` is true).

    The cache entry (under :func:`cache_root`) is named by a hash of the URI and each object's
    generation and md5 (:meth:`GCSStore.version`), never by a local path: a new version of an
    object is fetched again, an unchanged one once per machine. Entries appear whole (written
    aside, then renamed), so tasks sharing a machine may fetch at once. Errors are ValueErrors
    naming the URI, as a local file's name the file: ``gs://b/x.csv: object not found``,
    ``gs://b/ckpt/: no objects under this prefix`` (then ``expected``), a missing bucket, a
    refused request or a store that cannot be reached.
    """
    if not is_remote(location):
        return Path(location).expanduser()
    try:
        return _fetch_dir(location, include) if folder else _fetch_file(location)
    except FileNotFoundError as err:
        if err.strerror != "No such object":  # the bucket
            raise ValueError(f"{location}: {err.strerror}") from None
        if folder:
            raise ValueError(f"{err.filename}: no objects under this prefix{'; expected ' + expected if expected else ''}") \
                from None
        raise ValueError(f"{err.filename}: object not found") from None
    except OSError as err:  # refused (403), unreachable, or an answer GCS never gives
        raise ValueError(f"{location}: cannot be read ({err.strerror or _one_line(err)})") from None


@contextlib.contextmanager
def local_copy(location: str, *, folder: bool = False, include: Callable[[str], bool] | None = None,
               expected: str = "") -> Iterator[Path]:
    """:func:`fetch` ``location``; a ValueError raised inside the ``with`` block that names the local
    copy is raised again naming ``location`` instead, so a reader's errors ("no label column",
    "row 7 ...") name the object the user gave."""
    local = fetch(location, folder=folder, include=include, expected=expected)
    try:
        yield local
    except ValueError as err:
        text = str(err)
        if local == Path(location).expanduser() or str(local) not in text:
            raise
        raise ValueError(text.replace(str(local), location.rstrip("/"))) from None


def _fetch_file(uri: str) -> Path:
    """The object ``uri`` in the cache (fetched unless there), under its own file name."""
    parent, _, name = uri.rstrip("/").rpartition("/")
    store = open_store(parent)
    assert isinstance(store, GCSStore)
    entry = cache_root() / content_key(uri, store.version(name))[:32]
    path = entry / name
    if not path.is_file():
        store.download_file(name, path)  # atomic: a temp file in entry/, then renamed
    return path


def _fetch_dir(uri: str, include: Callable[[str], bool] | None) -> Path:
    """Every object under the prefix ``uri`` (those ``include`` keeps) in the cache, as a folder
    named like the prefix's last segment."""
    store = open_store(uri.rstrip("/"))
    assert isinstance(store, GCSStore)
    versions = {k: v for k, v in store.versions("").items() if include is None or include(k)}
    if not versions:
        raise _not_found(store.root_uri + "/")
    entry = cache_root() / content_key(store.root_uri, sorted(versions.items()))[:32]
    path = entry / (PurePosixPath(store.prefix).name or store.bucket_name)
    if path.is_dir():
        return path
    entry.mkdir(parents=True, exist_ok=True)
    staging = entry / f"{TMP_PREFIX}{secrets.token_hex(8)}"
    try:
        for key in sorted(versions):
            store.download_file(key, staging / _check_key(key))
        try:
            os.rename(staging, path)
        except OSError:
            if not path.is_dir():  # not another task that got there first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path
