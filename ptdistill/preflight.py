"""Checks, before a local pipeline run starts, that the places it writes to work.

A run whose artifact store is down, missing or read-only would otherwise train its teacher
for minutes and then fail with an error about some other path. :func:`preflight` fails
within seconds instead, with one line naming the store and what is wrong. It is for
``ptdistill run`` only: ``compile`` and ``submit`` never call it, because a cluster's store may
not be reachable from the machine that submits.
"""

from __future__ import annotations

import secrets

from ptdistill.storage import SHORT_RETRY, GCSStore, Store, StoreUnavailableError, describe_error, open_store
from ptdistill.tracking import check_tracking_uri

#: Name prefix of the probe object written at the store's root (and deleted) by :func:`check_store`.
PROBE_PREFIX = ".ptdistill-preflight-"


class PreflightError(ValueError):
    """A store a run needs cannot be used; the message is one line naming it and what failed.

    A ``ValueError``, so the command line reports it like other bad input: one line, exit 2.
    """


def preflight(artifact_store: str, tracking_uri: str) -> None:
    """Check the artifact store (see :func:`check_store`) and the tracking store (see
    :func:`ptdistill.tracking.check_tracking_uri`) before any pipeline work starts.

    Raises :class:`PreflightError` or :class:`ptdistill.tracking.TrackingStoreError` (both
    ``ValueError``), or ``ValueError`` for a malformed URI.
    """
    check_store(artifact_store)
    check_tracking_uri(tracking_uri)


def check_store(uri: str) -> None:
    """Write, list, read back and delete a small probe object at the root of the store ``uri``.

    Each request gives up after :data:`ptdistill.storage.SHORT_RETRY` (two attempts, 5 s
    each), so a store that is down fails this check in seconds. A local folder is created if
    needed (the run would create it anyway); nothing else is left behind.

    Raises :class:`PreflightError` naming the store: the bucket does not exist, permission is
    denied, the endpoint cannot be reached, the folder cannot be created or written, or
    google-cloud-storage is not installed.
    """
    try:
        store = open_store(uri, retry=SHORT_RETRY)
    except (ImportError, PermissionError) as exc:  # no google-cloud-storage; no credentials
        raise PreflightError(f"artifact store {uri}: {describe_error(exc)}") from exc
    key = f"{PROBE_PREFIX}{secrets.token_hex(8)}"
    payload = secrets.token_bytes(16)
    try:
        store.write_bytes(key, payload)
        try:
            if key not in store.list(key):
                raise PreflightError(f"artifact store {uri}: {store.uri(key)} was written but is not listed")
            if store.read_bytes(key) != payload:
                raise PreflightError(f"artifact store {uri}: {store.uri(key)} reads back other bytes than written")
        finally:
            store.delete(key)
    except PreflightError:
        raise
    except OSError as exc:
        raise PreflightError(f"artifact store {uri}: {_problem(store, exc)}") from exc


def _problem(store: Store, exc: OSError) -> str:
    """What ``exc``, raised by a probe request to ``store``, means for a user, as one line."""
    if isinstance(store, GCSStore):
        if isinstance(exc, FileNotFoundError):  # a write or a listing: only the bucket can be missing
            return f"bucket gs://{store.bucket_name} does not exist (at {store.endpoint})"
        if isinstance(exc, StoreUnavailableError):
            return exc.strerror  # names the endpoint; the store is named already
        return describe_error(exc)  # e.g. Permission denied (403 ...): gs://bucket/prefix/probe
    return f"cannot create or write files there: {describe_error(exc)}"
