"""Datasets: fetch from a source, parse the file, check every row, fingerprint the result.

Sources: ``huggingface`` (through ``datasets``; a local ``save_to_disk`` folder, a folder in the
Hub layout, or a Hub id found in the local cache), ``blob`` (HTTP(S), ``Authorization: Bearer``
when a token is given), ``s3`` and ``file``. File formats by extension: ``.jsonl``/``.ndjson``,
``.json``, ``.csv``, ``.parquet``.

Row formats: chat ``messages`` (default), alpaca (``instruction``/``input``/``output``) and plain
``text``. Rows become the examples TRL's ``SFTTrainer`` takes: ``{"messages": [...]}`` for chat
and alpaca (rendered with the model's chat template), ``{"text": ...}`` for text. Bad rows fail
before training with the row number and what is wrong.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from arkor_ops.config import (
    BlobDataset,
    DatasetFormatType,
    FileDataset,
    HuggingFaceDataset,
    S3Dataset,
    TrainerConfig,
)
from arkor_ops.worker.errors import DatasetError

log = logging.getLogger(__name__)

DRY_RUN_ROWS = 50
MAX_REPORTED_PROBLEMS = 5
ROLES = ("system", "user", "assistant")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
_SUFFIXES[".parquet"] = "parquet"
_CONTENT_TYPES = {"application/json": "json", "text/csv": "csv", "application/x-ndjson": "jsonl"}


@dataclass(frozen=True)
class PreparedDataset:
    """Checked training examples plus what identifies them."""

    examples: list[dict[str, Any]]
    fingerprint: str
    rows: int
    source: str
    format: DatasetFormatType


# --- fetching ---------------------------------------------------------------------------------


def _file_kind(name: str, content_type: str = "") -> str:
    suffix = Path(urlparse(name).path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    base = content_type.split(";", maxsplit=1)[0].strip().lower()
    return _CONTENT_TYPES.get(base, "parquet" if "parquet" in base else "jsonl")


def _safe_url(url: str) -> str:
    """The URL without query string, fragment or user info (these may hold credentials)."""
    parsed = urlparse(url)
    host = parsed.hostname or ""
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.scheme}://{host}{port}{parsed.path}"


def fetch_blob(source: BlobDataset, work_dir: Path) -> tuple[Path, str]:
    """Download a blob dataset; returns the local file and its kind."""
    import httpx

    headers = {"User-Agent": "arkor-ops-worker"}
    if source.token is not None:
        headers["Authorization"] = f"Bearer {source.token.get_secret_value()}"
    shown = _safe_url(source.url)
    kind = _file_kind(source.url)
    target = work_dir / f"dataset.{kind}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with httpx.stream(
            "GET", source.url, headers=headers, follow_redirects=True, timeout=60.0
        ) as resp:
            if resp.status_code in (401, 403):
                hint = "the token was refused" if source.token else "it needs a token"
                raise DatasetError(
                    f"dataset URL {shown} answered {resp.status_code} "
                    f"{resp.reason_phrase}: {hint} (dataset.token / ARKOR_DATASET_TOKEN)"
                )
            if resp.status_code == 404:
                raise DatasetError(f"dataset URL {shown} answered 404 Not Found: check the URL")
            if resp.status_code >= 400:
                raise RuntimeError(f"dataset URL {shown} answered {resp.status_code}")
            kind = _file_kind(source.url, resp.headers.get("content-type", ""))
            target = work_dir / f"dataset.{kind}"
            with target.open("wb") as fh:
                for chunk in resp.iter_bytes(1 << 20):
                    fh.write(chunk)
    except httpx.HTTPError as exc:
        raise RuntimeError(
            f"downloading the dataset from {shown} failed: {type(exc).__name__}"
        ) from None
    return target, kind


def fetch_s3(source: S3Dataset, work_dir: Path) -> tuple[Path, str]:
    """Download an ``s3://`` dataset file; returns the local file and its kind."""
    from arkor_ops.errors import StorageError
    from arkor_ops.storage import open_storage

    kind = _file_kind(source.uri)
    target = work_dir / f"dataset.{kind}"
    target.parent.mkdir(parents=True, exist_ok=True)
    storage = open_storage(source.uri)
    if not storage.exists(source.uri):
        raise DatasetError(f"dataset {source.uri} does not exist")
    try:
        storage.get_file(source.uri, target)
    except StorageError as exc:
        raise RuntimeError(f"downloading the dataset failed: {exc}") from exc
    return target, kind


def load_huggingface(source: HuggingFaceDataset, work_dir: Path) -> list[dict[str, Any]]:
    """Rows of a Hugging Face dataset: a ``save_to_disk`` folder, a Hub-layout folder or id."""
    import datasets

    path = Path(source.name)
    try:
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if source.split not in loaded:
                    raise DatasetError(
                        f"dataset {source.name} has no split {source.split!r} "
                        f"(it has {', '.join(sorted(loaded))})"
                    )
                loaded = loaded[source.split]
        else:
            # A local Hub-layout folder gets its cache in the work dir; a Hub id uses the HF cache.
            cache = str(work_dir / "hf-datasets") if path.is_dir() else None
            loaded = datasets.load_dataset(
                source.name, source.subset, split=source.split, cache_dir=cache
            )
    except DatasetError:
        raise
    except (FileNotFoundError, ValueError) as exc:
        raise DatasetError(
            f"Hugging Face dataset {source.name!r} (subset {source.subset}, split "
            f"{source.split}) cannot be loaded offline: {exc}"
        ) from exc
    return [dict(row) for row in loaded]


def read_file(path: Path, kind: str) -> list[Any]:
    """Parse a dataset file into rows; malformed lines fail with their row number."""
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    if kind == "parquet":
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        try:
            return list(pq.read_table(path).to_pylist())
        except Exception as exc:
            raise DatasetError(f"dataset file is not valid Parquet: {exc}") from exc
    text = path.read_text(encoding="utf-8-sig")
    if kind == "csv":
        return [dict(row) for row in csv.DictReader(io.StringIO(text))]
    if kind == "json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise DatasetError(f"dataset file is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            data = data.get("data", data.get("rows", data.get("train")))
        if not isinstance(data, list):
            raise DatasetError('a JSON dataset must be a list of rows (or {"data": [...]})')
        return data
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            raise DatasetError(
                f"row {len(rows) + 1} (line {number}): not valid JSON: {exc}"
            ) from None
    return rows


def fetch_rows(config: TrainerConfig, work_dir: Path) -> tuple[list[Any], str]:
    """All rows of the configured source, and a short description of the source for logs."""
    source = config.dataset
    if isinstance(source, HuggingFaceDataset):
        return load_huggingface(source, work_dir), f"huggingface:{source.name}[{source.split}]"
    if isinstance(source, BlobDataset):
        path, kind = fetch_blob(source, work_dir)
        return read_file(path, kind), f"blob:{_safe_url(source.url)}"
    if isinstance(source, S3Dataset):
        path, kind = fetch_s3(source, work_dir)
        return read_file(path, kind), f"s3:{source.uri}"
    assert isinstance(source, FileDataset)
    return read_file(Path(source.path), _file_kind(source.path)), f"file:{source.path}"


# --- row checks -------------------------------------------------------------------------------


def _text(row: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None or value == "":
        if required:
            raise ValueError(f"`{key}` is missing or empty")
        return ""
    if not isinstance(value, str):
        raise ValueError(f"`{key}` must be a string, got {type(value).__name__}")
    return value


def _chat(row: dict[str, Any]) -> dict[str, Any]:
    messages = row.get("messages", row.get("conversations"))
    if isinstance(messages, str):
        try:
            messages = json.loads(messages)
        except ValueError:
            raise ValueError("`messages` is a string that is not JSON") from None
    if not isinstance(messages, list) or not messages:
        raise ValueError("`messages` must be a non-empty list of {role, content}")
    out = []
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise ValueError(f"`messages[{i}]` must be an object with role and content")
        role = msg.get("role")
        if role not in ROLES:
            raise ValueError(
                f"`messages[{i}].role` is {role!r}; expected one of {', '.join(ROLES)}"
            )
        content = msg.get("content")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"`messages[{i}].content` must be a non-empty string")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise ValueError("`messages` has no assistant turn to learn from")
    return {"messages": out}


def _alpaca(row: dict[str, Any]) -> dict[str, Any]:
    instruction = _text(row, "instruction")
    extra = _text(row, "input", required=False)
    output = _text(row, "output")
    prompt = f"{instruction}\n\n{extra}" if extra else instruction
    return {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]
    }


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {"text": _text(row, "text")}


_CONVERTERS = {"chatml": _chat, "messages": _chat, "alpaca": _alpaca, "text": _plain}


def check_rows(rows: Iterable[Any], fmt: DatasetFormatType) -> list[dict[str, Any]]:
    """Check and convert every row; raises one error listing the first bad rows (1-based)."""
    convert = _CONVERTERS[fmt]
    examples: list[dict[str, Any]] = []
    problems: list[str] = []
    count = 0
    for number, row in enumerate(rows, start=1):
        count = number
        try:
            if not isinstance(row, dict):
                raise ValueError(f"expected an object, got {type(row).__name__}")
            examples.append(convert(row))
        except ValueError as exc:
            problems.append(f"row {number}: {exc}")
    if problems:
        shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
        more = len(problems) - MAX_REPORTED_PROBLEMS
        tail = f" (and {more} more bad rows)" if more > 0 else ""
        raise DatasetError(f"{len(problems)} bad row(s) in the {fmt} dataset: {shown}{tail}")
    if count == 0:
        raise DatasetError("the dataset has no rows")
    return examples


def fingerprint(examples: list[dict[str, Any]], fmt: DatasetFormatType) -> str:
    """sha256 over the checked examples (what is trained on, whatever the source)."""
    digest = hashlib.sha256(f"arkor-dataset-v1:{fmt}\n".encode())
    for example in examples:
        digest.update(json.dumps(example, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def prepare_dataset(config: TrainerConfig, work_dir: Path) -> PreparedDataset:
    """Fetch, check and fingerprint the run's dataset (a dry run keeps the first 50 rows).

    Raises:
        DatasetError: the dataset cannot be fetched (401/403/404) or has bad rows.
    """
    fmt: DatasetFormatType = config.dataset_format.type if config.dataset_format else "chatml"
    rows, source = fetch_rows(config, work_dir)
    if config.dry_run:
        rows = rows[:DRY_RUN_ROWS]
    examples = check_rows(rows, fmt)
    fp = fingerprint(examples, fmt)
    log.info("dataset %s: %d rows, format %s, fingerprint %s", source, len(examples), fmt, fp[:12])
    return PreparedDataset(
        examples=examples, fingerprint=fp, rows=len(examples), source=source, format=fmt
    )
