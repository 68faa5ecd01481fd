"""Cloud Storage objects: listed, and downloaded one at a time whole and verified.

A download is pinned to the generation that was listed and checked against the listed
checksum; the client's errors become ours, naming the URI, with 503 for what the next
request may find working again.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import threading
from pathlib import Path

from ..errors import LoadError
from . import space

log = logging.getLogger(__name__)


class StorageUnavailable(LoadError):
    """Cloud Storage could not be reached; the next request tries again."""

    status_code = 503


class ObjectChanged(StorageUnavailable):
    """An object was rewritten or deleted between its listing and its download.

    Nothing of it is cached, so the next request lists the model anew and fetches
    the current version whole: a model directory is never a mix of two versions.
    """


@dataclasses.dataclass(frozen=True)
class Blob:
    """One Cloud Storage object as listed: enough to fetch it and check what arrived."""

    bucket: str
    name: str
    generation: int
    size: int
    crc32c: str | None
    md5: str | None


class CloudStorage:
    """The Cloud Storage client, made on first use, and what is asked of it."""

    def __init__(self, *, client=None, retry_seconds: float = 20.0):
        self._client = client
        self._client_lock = threading.Lock()
        self._retry_seconds = retry_seconds

    @property
    def client(self):
        with self._client_lock:
            if self._client is None:
                import google.auth.exceptions
                from google.cloud import storage

                try:
                    self._client = storage.Client()
                except google.auth.exceptions.DefaultCredentialsError as exc:
                    raise LoadError(
                        "reading gs:// URIs needs Google credentials and none were found: on "
                        "Cloud Functions, give the function a service account; locally, run "
                        "`gcloud auth application-default login`"
                    ) from exc
            return self._client

    def list(self, bucket: str, prefix: str) -> list[Blob]:
        """The objects under `prefix` in `bucket`, as listed now."""
        with translated(f"gs://{bucket}/{prefix}"):
            return [
                Blob(bucket, b.name, int(b.generation), int(b.size or 0), b.crc32c, b.md5_hash)
                for b in self.client.list_blobs(bucket, prefix=prefix, retry=self._retry())
            ]

    def download(self, blob: Blob, dest: Path) -> None:
        """Writes the listed generation of `blob` to `dest`, whole and verified.

        Raises:
            ObjectChanged: the object was rewritten or deleted since it was listed.
            StorageUnavailable: Cloud Storage failed, or the bytes arrived damaged.
        """
        from google.api_core import exceptions as api

        uri = f"gs://{blob.bucket}/{blob.name}"
        log.info("downloading %s generation %d (%d bytes)", uri, blob.generation, blob.size)
        # Pinned to the listed generation, so a rewrite cannot slip other bytes in.
        handle = self.client.bucket(blob.bucket).blob(blob.name, generation=blob.generation)
        with translated(uri), open(dest, "wb") as raw:
            out = _HashingWriter(raw, blob)
            try:
                handle.download_to_file(
                    out,
                    raw_download=True,
                    checksum=None,
                    if_generation_match=blob.generation,
                    retry=self._retry(),
                )
            except (api.NotFound, api.PreconditionFailed) as exc:
                raise _changed(blob, self._live_generation(blob)) from exc
        mismatch = out.mismatch(blob)
        if mismatch is None:
            return
        # A server that ignores the generation asked for serves the new bytes of a
        # rewritten object; tell that apart from bytes damaged on the way.
        live = self._live_generation(blob)
        if live != blob.generation:
            raise _changed(blob, live)
        raise StorageUnavailable(f"download of {uri} is corrupt: {mismatch}; it was discarded")

    def _live_generation(self, blob: Blob) -> int | None:
        """The generation Cloud Storage holds now under the blob's name; None if it holds none.

        When that cannot be learnt, the listed generation is assumed.
        """
        try:
            with translated(f"gs://{blob.bucket}/{blob.name}"):
                found = self.client.bucket(blob.bucket).get_blob(blob.name, retry=self._retry())
        except LoadError:
            return blob.generation
        return None if found is None else int(found.generation)

    def _retry(self):
        from google.cloud.storage.retry import DEFAULT_RETRY

        # The library's default keeps retrying for two minutes; a cold start
        # should rather answer 503 sooner and let the next request try again.
        return DEFAULT_RETRY.with_timeout(self._retry_seconds)


class _HashingWriter:
    """Writes through to a file while computing the checksum the listing gives for the object.

    Only that one: CRC32C when listed (Cloud Storage lists it for every object), else MD5.
    Computing MD5 as well took a fifth of the downloading process's CPU time.
    """

    def __init__(self, raw, blob: Blob):
        self._raw = raw
        self._hash = None
        if blob.crc32c:
            import google_crc32c

            self._hash = google_crc32c.Checksum()
        elif blob.md5:
            self._hash = hashlib.md5()
        self.size = 0

    def write(self, data: bytes) -> int:
        if self._hash is not None:
            self._hash.update(data)
        self.size += len(data)
        return self._raw.write(data)

    def mismatch(self, blob: Blob) -> str | None:
        """What differs between the bytes that passed and the listed object; None if nothing."""
        if self._hash is not None:
            expected = blob.crc32c or blob.md5
            got = base64.b64encode(self._hash.digest()).decode()
            kind = "CRC32C" if blob.crc32c else "MD5"
        else:
            expected = got = None
            kind = "size"
        if expected == got and self.size == blob.size:
            return None
        return (
            f"expected {blob.size} bytes with {kind} {expected}, "
            f"received {self.size} bytes with {kind} {got}"
        )


def _changed(blob: Blob, live: int | None) -> ObjectChanged:
    now = "no such object" if live is None else f"generation {live}"
    return ObjectChanged(
        f"gs://{blob.bucket}/{blob.name} changed after it was listed: expected generation "
        f"{blob.generation}, Cloud Storage now holds {now}; nothing of it was cached, and the "
        "next request fetches the current version"
    )


def split_gs(uri: str) -> tuple[str, str]:
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket:
        raise LoadError(f"expected gs://bucket/path, got {uri!r}")
    return bucket, name


class translated:
    """Turns Cloud Storage client errors into our errors, naming the URI."""

    def __init__(self, uri: str):
        self._uri = uri

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, LoadError):
            return False
        import google.auth.exceptions as auth
        from google.api_core import exceptions as api

        # Retries that ran out wrap the last failure: name that one.
        retried = isinstance(exc, api.RetryError) and exc.cause is not None
        cause = exc.cause if retried else exc
        if space.is_full(cause):
            raise cause  # the cache's disk is full, Cloud Storage is not at fault: see storage

        if isinstance(cause, auth.TransportError):
            raise StorageUnavailable(
                f"Google authentication could not be reached for {self._uri}"
            ) from exc
        if isinstance(cause, auth.GoogleAuthError):
            raise LoadError(f"Google credentials were refused for {self._uri}: {cause}") from exc
        if isinstance(cause, api.NotFound):
            raise LoadError(f"{self._uri} was not found in Cloud Storage") from exc
        if isinstance(cause, api.Forbidden | api.Unauthorized):
            raise LoadError(f"access to {self._uri} was refused: {cause.message}") from exc
        # Only transient failures are retried, whatever the last one was.
        if retried or isinstance(cause, api.GoogleAPIError | OSError) or _is_transport_error(cause):
            raise StorageUnavailable(
                f"Cloud Storage could not be reached for {self._uri}: {type(cause).__name__}"
                + (", still failing when the retries ran out" if retried else "")
            ) from exc
        return False


def _is_transport_error(exc: BaseException) -> bool:
    import requests
    import urllib3

    # A body cut short surfaces as urllib3's ProtocolError, unwrapped by requests.
    return isinstance(exc, requests.RequestException | urllib3.exceptions.HTTPError)
