"""Fetching model directories and packages from Cloud Storage or local paths into the cache."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import LoadError
from . import cache, ramp

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


@dataclasses.dataclass(frozen=True)
class Listing:
    """What a URI names: a local path, or Cloud Storage objects under a prefix."""

    uri: str
    size: int
    local: Path | None = None
    blobs: tuple[Blob, ...] = ()
    prefix: str = ""
    directory: bool = True


@dataclasses.dataclass
class Fetched:
    """Where a listing landed, and what it cost to put it there."""

    path: Path
    objects: int = 0
    downloaded: int = 0
    downloaded_bytes: int = 0


class Storage:
    """Lists and fetches `gs://` URIs, local paths and `file://` URIs.

    Cloud Storage objects land once under `cache_root/objects`, keyed by bucket,
    name and generation: a restart on a warm instance downloads nothing, and a
    rewritten object (a new generation) is fetched anew.
    """

    def __init__(
        self,
        cache_root: Path,
        *,
        client=None,
        parallelism: int = 8,
        retry_seconds: float = 20.0,
    ):
        self._root = cache_root
        self._client = client
        self._client_lock = threading.Lock()
        self._parallelism = parallelism
        self._retry_seconds = retry_seconds

    @classmethod
    def configured(cls, config) -> Storage:
        """The storage a `Config` describes: its cache, its retry window."""
        return cls(config.cache_dir, retry_seconds=config.storage_retry_seconds)

    def list_directory(self, uri: str) -> Listing:
        """Lists a model directory.

        Raises:
            LoadError: nothing is there.
        """
        if not uri.startswith("gs://"):
            path = _local_path(uri)
            if not path.is_dir():
                raise LoadError(f"model directory {uri} is not a directory or does not exist")
            size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            return Listing(uri=uri, size=size, local=path)
        bucket, prefix = _split_gs(uri)
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        blobs = tuple(b for b in self._list(bucket, prefix) if not b.name.endswith("/"))
        if not blobs:
            raise LoadError(f"model directory {uri} holds no objects")
        return Listing(uri=uri, size=sum(b.size for b in blobs), blobs=blobs, prefix=prefix)

    def list_file(self, uri: str, what: str = "package") -> Listing:
        """Lists a single file, such as a package (`what` names it in errors).

        Raises:
            LoadError: the file does not exist.
        """
        if not uri.startswith("gs://"):
            path = _local_path(uri)
            if not path.is_file():
                raise LoadError(f"{what} {uri} does not exist")
            return Listing(uri=uri, size=path.stat().st_size, local=path, directory=False)
        bucket, name = _split_gs(uri)
        blobs = tuple(b for b in self._list(bucket, name) if b.name == name)
        if not blobs:
            raise LoadError(f"{what} {uri} does not exist")
        return Listing(uri=uri, size=blobs[0].size, blobs=blobs, directory=False)

    def fetch(self, listing: Listing) -> Fetched:
        """Brings a listing into the cache (local paths are used where they are).

        Returns:
            The local path: a directory for a directory listing, a file otherwise.
        """
        if listing.local is not None:
            return Fetched(path=listing.local)
        stats = self._fetch_blobs(listing.blobs)
        if listing.directory:
            stats.path = self._assemble(listing)
        else:
            stats.path = self._object_path(listing.blobs[0])
        return stats

    def in_use(self):
        """A context in which what this cache holds stays: `discard` waits for it to end."""
        return cache.in_use(self._root)

    def discard(self, listings: Iterable[Listing]) -> None:
        """Removes what fetching `listings` put in the cache: the objects and the model folder.

        Local paths are never touched. The removal waits until nobody holds the cache
        `in_use`; a later fetch downloads the objects again.
        """
        fetched = [x for x in listings if x.local is None]
        entries = [self._folder_path(x) for x in fetched if x.directory]
        entries += [self._object_path(b) for x in fetched for b in x.blobs]
        if entries:
            uris = ", ".join(x.uri for x in fetched)
            log.info("removing what was downloaded for %s from the cache", uris)
            cache.discard(self._root, entries)

    # Cloud Storage

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

    def _list(self, bucket: str, prefix: str) -> list[Blob]:
        with _translated(f"gs://{bucket}/{prefix}"):
            return [
                Blob(bucket, b.name, int(b.generation), int(b.size or 0), b.crc32c, b.md5_hash)
                for b in self.client.list_blobs(bucket, prefix=prefix, retry=self._retry())
            ]

    def _fetch_blobs(self, blobs: Iterable[Blob]) -> Fetched:
        blobs = list(blobs)
        cache.sweep(self._root / "objects")
        # What is cached already is left out here, so the measure of speed sees downloads only.
        missing = [b for b in blobs if not self._object_path(b).exists()]
        built = ramp.run(
            missing, self._fetch_blob, size=lambda b: b.size, counted=bool, most=self._parallelism
        )
        return Fetched(
            path=self._root,
            objects=len(blobs),
            downloaded=sum(built),
            downloaded_bytes=sum(b.size for b, new in zip(missing, built, strict=True) if new),
        )

    def _fetch_blob(self, blob: Blob) -> bool:
        return cache.materialize(
            self._object_path(blob), lambda tmp: self._download(blob, tmp), sweep=False
        )

    def _object_path(self, blob: Blob) -> Path:
        key = hashlib.sha256(f"{blob.bucket}/{blob.name}".encode()).hexdigest()[:40]
        return self._root / "objects" / f"{key}-{blob.generation}"

    def _download(self, blob: Blob, dest: Path) -> None:
        from google.api_core import exceptions as api

        uri = f"gs://{blob.bucket}/{blob.name}"
        log.info("downloading %s generation %d (%d bytes)", uri, blob.generation, blob.size)
        # Pinned to the listed generation, so a rewrite cannot slip other bytes in.
        handle = self.client.bucket(blob.bucket).blob(blob.name, generation=blob.generation)
        with _translated(uri), open(dest, "wb") as raw:
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
            with _translated(f"gs://{blob.bucket}/{blob.name}"):
                found = self.client.bucket(blob.bucket).get_blob(blob.name, retry=self._retry())
        except LoadError:
            return blob.generation
        return None if found is None else int(found.generation)

    def _retry(self):
        from google.cloud.storage.retry import DEFAULT_RETRY

        # The library's default keeps retrying for two minutes; a cold start
        # should rather answer 503 sooner and let the next request try again.
        return DEFAULT_RETRY.with_timeout(self._retry_seconds)

    def _folder_path(self, listing: Listing) -> Path:
        members = sorted((_relative(b, listing), b) for b in listing.blobs)
        key = hashlib.sha256(
            repr([listing.uri] + [(rel, b.generation) for rel, b in members]).encode()
        ).hexdigest()[:40]
        return self._root / "models" / key

    def _assemble(self, listing: Listing) -> Path:
        members = sorted((_relative(b, listing), b) for b in listing.blobs)
        final = self._folder_path(listing)

        def build(tmp: Path) -> None:
            for rel, blob in members:
                target = tmp / rel
                try:
                    target.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise LoadError(
                        f"model directory {listing.uri} cannot be laid out: the name "
                        f"{str(Path(rel).parent)!r} is both an object and a folder"
                    ) from exc
                source = self._object_path(blob)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)

        cache.materialize(final, build)
        return final


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


def _relative(blob: Blob, listing: Listing) -> str:
    rel = blob.name[len(listing.prefix) :]
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise LoadError(
            f"object gs://{blob.bucket}/{blob.name} cannot be placed in a model directory: "
            "expected a relative name without empty, '.' or '..' segments"
        )
    return rel


def _split_gs(uri: str) -> tuple[str, str]:
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket:
        raise LoadError(f"expected gs://bucket/path, got {uri!r}")
    return bucket, name


def _local_path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri).expanduser()


class _translated:
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
