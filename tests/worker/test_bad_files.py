"""Bad dataset files fail before training with the row number, exit 2 (never retried), and a
bounded message; valid rows with unusual characters are read as written."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from arkor_ops.worker.data import read_file
from arkor_ops.worker.errors import DatasetError
from tests.worker.helpers import ROWS, RunDir, base_config, run_inprocess

#: What a user may expect an error about one bad row to stay under.
MESSAGE_BOUND = 2_000


def _chat_line(text: str) -> str:
    row = {
        "messages": [
            {"role": "user", "content": text},
            {"role": "assistant", "content": "ok"},
        ]
    }
    return json.dumps(row, ensure_ascii=False)


def _good_lines(n: int) -> list[str]:
    return [json.dumps(r) for r in ROWS["chatml"](n)]


def _non_utf8_jsonl(path: Path) -> Path:
    lines = [line.encode() for line in _good_lines(4)]
    lines.insert(2, _chat_line("caf\u00e9").encode().replace("\u00e9".encode(), b"\xe9"))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _non_utf8_csv(path: Path) -> Path:
    head = b"text\n" + b"".join(f"row {i}\n".encode() for i in range(1, 4))
    path.write_bytes(head + b"caf\xe9 latin-1\n" + b"row 5\n")
    return path


def _non_utf8_json(path: Path) -> Path:
    rows = ROWS["chatml"](3)
    rows[1]["messages"][1]["content"] = "caf\u00e9"
    path.write_bytes(json.dumps(rows, ensure_ascii=False).encode().replace(b"\xc3\xa9", b"\xe9"))
    return path


def _huge_csv_field(path: Path) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text"])
        writer.writerow(["a short row"])
        writer.writerow(["x" * (csv.field_size_limit() + 10)])
    return path


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _deep_jsonl(path: Path) -> Path:
    lines = _good_lines(2)
    lines.append('{"messages": ' + _nested(100_000) + "}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _deep_json(path: Path) -> Path:
    rows = ",".join(_good_lines(3))
    path.write_text("[" + rows + ',{"messages": ' + _nested(100_000) + "}]")
    return path


BAD_FILES = {
    "non-utf8.jsonl": (_non_utf8_jsonl, "jsonl", "row 3 (line 3: not UTF-8"),
    "non-utf8.csv": (_non_utf8_csv, "csv", "row 4 (line 5: not UTF-8"),
    "non-utf8.json": (_non_utf8_json, "json", "row 2 (line 1): not UTF-8"),
    "huge-field.csv": (_huge_csv_field, "csv", "row 2 (line 3): not valid CSV"),
    "deep.jsonl": (_deep_jsonl, "jsonl", "row 3 (line 3): JSON nested too deeply"),
    "deep.json": (_deep_json, "json", "row 4 (line 1): JSON nested too deeply"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_is_a_dataset_error_naming_the_row(tmp_path: Path, name: str) -> None:
    make, kind, expected = BAD_FILES[name]
    path = make(tmp_path / name)

    with pytest.raises(DatasetError) as info:
        read_file(path, kind)

    assert expected in str(info.value)
    assert len(str(info.value)) < MESSAGE_BOUND


def test_jsonl_with_raw_line_separators_inside_strings_is_one_row_each(tmp_path: Path) -> None:
    texts = ["before\u2028after", "para\u2029graph", "next\x85line", "form\x0cfeed"]
    path = tmp_path / "separators.jsonl"
    path.write_text("\n".join(_chat_line(t) for t in texts) + "\n", encoding="utf-8")

    rows = read_file(path, "jsonl")

    assert [r["messages"][0]["content"] for r in rows] == texts


@pytest.mark.s3
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_fails_the_run_with_exit_2_and_the_row(
    tmp_path: Path, run_dir: RunDir, name: str
) -> None:
    make, _kind, expected = BAD_FILES[name]
    path = make(tmp_path / name)
    fmt = {"datasetFormat": "text"} if name.endswith(".csv") else {}
    config = base_config(tmp_path / "no-model", {"type": "file", "path": str(path)}, **fmt)

    code = run_inprocess(run_dir.env(config))

    assert code == 2
    events = run_dir.events()
    assert [e.type for e in events] == ["training.failed"]
    assert expected in events[0].error


def _two_mb_bad_row(path: Path) -> Path:
    lines = _good_lines(3)
    bad: dict[str, Any] = {
        "messages": [
            {"role": "x" * 2_000_000, "content": "hi"},
            {"role": "assistant", "content": "ok"},
        ]
    }
    lines.insert(1, json.dumps(bad))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.s3
def test_a_2mb_bad_row_gives_a_bounded_error_and_event(tmp_path: Path, run_dir: RunDir) -> None:
    path = _two_mb_bad_row(tmp_path / "big.jsonl")
    config = base_config(tmp_path / "no-model", {"type": "file", "path": str(path)})

    code = run_inprocess(run_dir.env(config))

    assert code == 2
    (failed,) = run_dir.events()
    assert failed.type == "training.failed"
    assert "row 2: `messages[0].role` is 'xxxx" in failed.error
    assert "(2000002 characters)" in failed.error
    assert len(failed.error) < MESSAGE_BOUND
    assert run_dir.event_log.stat().st_size < 2 * MESSAGE_BOUND


@pytest.mark.s3
def test_any_failure_event_is_bounded(
    tmp_path: Path, run_dir: RunDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A huge error from anywhere (here a model lookup quoting a 1 MB name) is cut.

    The config refuses such a model id itself now, so the lookup is made to raise it."""
    from arkor_ops.worker import models
    from arkor_ops.worker.errors import ModelError

    huge = "no-such-org/" + "m" * 1_000_000

    def lookup(*args: object, **kwargs: object) -> None:
        raise ModelError(f"model {huge} does not exist")

    monkeypatch.setattr(models, "resolve_model", lookup)
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(_good_lines(4)) + "\n")
    config = base_config(tmp_path, {"type": "file", "path": str(rows)})

    code = run_inprocess(run_dir.env(config))

    (failed,) = run_dir.events()
    assert code != 0
    assert failed.type == "training.failed"
    assert "no-such-org/mmm" in failed.error
    assert failed.error.endswith(f"({len(huge) + 21} characters)")
    assert len(failed.error) <= MESSAGE_BOUND
