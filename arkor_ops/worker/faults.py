"""Fault injection for tests only: ``ARKOR_TEST_FAULT_STORAGE_ATTEMPTS``.

When the variable lists this attempt's number (see :mod:`arkor_ops.worker.attempts`), every
storage call of the run's pipeline (resume lookup, checkpoint and final uploads) raises
:class:`StorageError`, as an unreachable S3 endpoint would. The attempt ledger and the seeding
of the event log keep the real storage, so the attempt count itself stays reliable. Never set
it in production: it exists so that the retry path can be tested on a real cluster.
"""

from __future__ import annotations

import builtins
from pathlib import Path
from typing import NoReturn

from arkor_ops.errors import StorageError
from arkor_ops.storage import ObjectInfo, Storage


class FaultyStorage(Storage):
    """A storage whose every call fails (test hook)."""

    def __init__(self, attempt: int) -> None:
        self.attempt = attempt

    def _fail(self, uri: str) -> NoReturn:
        raise StorageError(
            f"storage unavailable for {uri} (injected by ARKOR_TEST_FAULT_STORAGE_ATTEMPTS "
            f"in attempt {self.attempt})"
        )

    def put_bytes(self, uri: str, data: bytes) -> None:
        self._fail(uri)

    def put_file(self, uri: str, path: Path) -> None:
        self._fail(uri)

    def get_bytes(self, uri: str) -> bytes:
        self._fail(uri)

    def get_file(self, uri: str, path: Path) -> None:
        self._fail(uri)

    def exists(self, uri: str) -> bool:
        self._fail(uri)

    def list_objects(self, prefix: str) -> builtins.list[ObjectInfo]:
        self._fail(prefix)

    def delete_prefix(self, prefix: str) -> None:
        self._fail(prefix)
