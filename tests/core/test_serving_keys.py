"""Endpoint API keys (stored only as sha256), and the engine build's version pin."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from arkor_ops.errors import ServingError
from arkor_ops.serving.keys import KeyFile
from arkor_ops.settings import LLAMA_CPP_VERSION

REPO = Path(__file__).resolve().parents[2]


def test_a_key_is_shown_once_stored_hashed_and_revocable(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.jsonl")
    first, second = keys.create("ci"), keys.create("laptop")
    assert first.startswith("ak-") and first != second
    text = (tmp_path / "keys.jsonl").read_text()
    assert first not in text and second not in text
    assert (tmp_path / "keys.jsonl").stat().st_mode & 0o777 == 0o600
    assert keys.verify(first) and keys.verify(second)
    assert not keys.verify("ak-guess") and not keys.verify(first + "x")
    keys.revoke("ci")
    assert not keys.verify(first) and keys.verify(second)
    assert KeyFile(tmp_path / "keys.jsonl").verify(second)  # another reader sees the same


def test_key_names_are_checked(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.jsonl")
    keys.create("ci")
    with pytest.raises(ServingError, match="exists"):
        keys.create("ci")
    with pytest.raises(ServingError, match="letters, digits"):
        keys.create("no spaces")
    with pytest.raises(ServingError, match="no key named 'gone'"):
        keys.revoke("gone")


def test_the_build_script_builds_the_version_the_settings_expect() -> None:
    script = (REPO / "scripts" / "build-llama-server.sh").read_text()
    assert re.search(r"^VERSION=(\S+)$", script, re.M)[1] == LLAMA_CPP_VERSION  # type: ignore[index]
