"""Model directories and packages from Cloud Storage or local paths, laid out in the cache."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import unquote, urlparse

from ..errors import LoadError
from . import cache, ramp, space
from .gcs import Blob, CloudStorage, split_gs

log = logging.getLogger(__name__)


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
        self._gcs = CloudStorage(client=client, retry_seconds=retry_seconds)
        self._parallelism = parallelism

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
        bucket, prefix = split_gs(uri)
        prefix = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        blobs = tuple(b for b in self._gcs.list(bucket, prefix) if not b.name.endswith("/"))
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
        bucket, name = split_gs(uri)
        blobs = tuple(b for b in self._gcs.list(bucket, name) if b.name == name)
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
        stats = self._fetch_blobs(listing.blobs, listing.uri)
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

    def _fetch_blobs(self, blobs: Iterable[Blob], uri: str) -> Fetched:
        blobs = list(blobs)
        cache.sweep(self._root / "objects")
        # What is cached already is left out here, so the measure of speed sees downloads only.
        missing = [b for b in blobs if not self._object_path(b).exists()]
        if missing:
            # Another worker may be downloading the same objects (each warms up at once):
            # what its partial files hold already is not needed twice.
            under_way = space.partial_bytes(self._root / "objects")
            space.check_room(self._root, sum(b.size for b in missing) - under_way, uri)
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
        with space.reported(self._root, f"gs://{blob.bucket}/{blob.name}"):
            return cache.materialize(
                self._object_path(blob), lambda tmp: self._gcs.download(blob, tmp), sweep=False
            )

    def _object_path(self, blob: Blob) -> Path:
        key = hashlib.sha256(f"{blob.bucket}/{blob.name}".encode()).hexdigest()[:40]
        return self._root / "objects" / f"{key}-{blob.generation}"

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
                    if space.is_full(exc):
                        raise
                    raise LoadError(
                        f"model directory {listing.uri} cannot be laid out: the name "
                        f"{str(Path(rel).parent)!r} is both an object and a folder"
                    ) from exc
                source = self._object_path(blob)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)

        with space.reported(self._root, f"model directory {listing.uri}"):
            cache.materialize(final, build)
        return final


def _relative(blob: Blob, listing: Listing) -> str:
    rel = blob.name[len(listing.prefix) :]
    parts = rel.split("/")
    if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise LoadError(
            f"object gs://{blob.bucket}/{blob.name} cannot be placed in a model directory: "
            "expected a relative name without empty, '.' or '..' segments"
        )
    return rel


def _local_path(uri: str) -> Path:
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri).expanduser()
