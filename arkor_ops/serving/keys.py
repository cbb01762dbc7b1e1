"""An endpoint's API keys: shown once when created, stored only as their sha256.

A key is ``ak-`` and 43 URL-safe characters (256 random bits); its file holds one JSON object
per key, ``{"name": ..., "sha256": ..., "created_at": ...}``, and never the key. A request's key
is hashed and compared with each stored hash in constant time. On Kubernetes the same file is
the data of the endpoint's Secret; locally it is ``<endpoint dir>/keys.jsonl``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from arkor_ops.errors import ServingError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def new_key() -> str:
    """A fresh API key."""
    return "ak-" + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    """The stored form of ``key``."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyRecord:
    """A stored key: its name, hash and creation time (Unix seconds)."""

    name: str
    sha256: str
    created_at: float


def parse_records(text: str) -> list[KeyRecord]:
    """The records of a key file's text (one JSON object per line)."""
    return [KeyRecord(**json.loads(line)) for line in text.splitlines() if line.strip()]


def dump_records(records: list[KeyRecord]) -> str:
    """A key file's text for ``records``."""
    rows = ({"name": r.name, "sha256": r.sha256, "created_at": r.created_at} for r in records)
    return "".join(json.dumps(row) + "\n" for row in rows)


def matches(records: list[KeyRecord], key: str) -> bool:
    """Whether ``key`` is one of ``records``, compared in constant time with every hash."""
    digest = key_hash(key)
    found = False
    for record in records:  # no early exit: each comparison takes the same time
        found |= hmac.compare_digest(digest, record.sha256)
    return found


def add_record(records: list[KeyRecord], name: str) -> tuple[list[KeyRecord], str]:
    """``records`` with a new key named ``name``, and the key (the only time it is shown).

    Raises:
        ServingError: the name is not 1-63 letters, digits, ``.``, ``_``, ``-``, or is taken.
    """
    if not _NAME.match(name):
        raise ServingError(f"key name {name[:80]!r}: use 1-63 letters, digits, '.', '_' or '-'")
    if any(r.name == name for r in records):
        raise ServingError(f"a key named {name!r} exists: revoke it first or pick another")
    key = new_key()
    return [*records, KeyRecord(name, key_hash(key), time.time())], key


def drop_record(records: list[KeyRecord], name: str) -> list[KeyRecord]:
    """``records`` without the key named ``name``.

    Raises:
        ServingError: there is no key named ``name``.
    """
    if not any(r.name == name for r in records):
        raise ServingError(f"no key named {name!r}")
    return [r for r in records if r.name != name]


class KeySet:
    """Keys held in memory, replaced as a whole (the endpoint pod's copy of its Secret)."""

    def __init__(self, records: list[KeyRecord] | None = None) -> None:
        self._records = list(records or [])

    def replace(self, records: list[KeyRecord]) -> None:
        """Use ``records`` from now on (one assignment: a request sees the old or the new)."""
        self._records = list(records)

    def records(self) -> list[KeyRecord]:
        """The keys in use."""
        return list(self._records)

    def verify(self, key: str) -> bool:
        """Whether ``key`` is one of the keys."""
        return matches(self._records, key)


class KeyFile:
    """The keys of one endpoint, in a file; re-read when the file changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._records: list[KeyRecord] = []

    def records(self) -> list[KeyRecord]:
        """The stored keys (re-read when the file's size or mtime changed)."""
        with self._lock:
            try:
                st = self.path.stat()
            except FileNotFoundError:
                self._stamp, self._records = None, []
                return []
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                self._records = parse_records(self.path.read_text())
                self._stamp = stamp
            return list(self._records)

    def verify(self, key: str) -> bool:
        """Whether ``key`` is one of the stored keys."""
        return matches(self.records(), key)

    def _write(self, records: list[KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(dump_records(records))
        os.replace(tmp, self.path)

    def create(self, name: str) -> str:
        """Store a new key named ``name`` and return it (the only time it is shown).

        Raises:
            ServingError: the name is not 1-63 letters, digits, ``.``, ``_``, ``-``, or is taken.
        """
        records, key = add_record(self.records(), name)
        self._write(records)
        return key

    def revoke(self, name: str) -> None:
        """Remove the key named ``name`` (requests with it get 401 from then on)."""
        self._write(drop_record(self.records(), name))
