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

import codecs
import csv
import hashlib
import json
import logging
import re
import zlib
from collections.abc import Iterable, Iterator
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
from arkor_ops.worker.errors import DatasetError, HubAccessError, excerpt
from arkor_ops.worker.hub import HubRef, call_hub
from arkor_ops.worker.settings import DEFAULT_MAX_DATASET_BYTES

log = logging.getLogger(__name__)

DRY_RUN_ROWS = 50
MAX_REPORTED_PROBLEMS = 5
ROLES = ("system", "user", "assistant")
_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
_SUFFIXES[".parquet"] = "parquet"
_CONTENT_TYPES = {"application/json": "json", "text/csv": "csv", "application/x-ndjson": "jsonl"}
MAX_BYTES_ENV = "ARKOR_MAX_DATASET_BYTES"
#: Longest problem text per bad row in a DatasetError (rows and values are quoted bounded).
MAX_PROBLEM_CHARS = 300
_DECODED_CHUNK = 1 << 20


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


def _too_big(what: str, max_bytes: int) -> DatasetError:
    return DatasetError(
        f"{what} is larger than {MAX_BYTES_ENV}={max_bytes} bytes: use a smaller file, or raise "
        f"{MAX_BYTES_ENV} (on Kubernetes through ARKOR_K8S_ENV, with a scratch volume to match)"
    )


def _decoded(raw: Iterable[bytes], encoding: str, shown: str) -> Iterator[bytes]:
    """The body's bytes after its ``Content-Encoding``, inflated at most 1 MiB at a time, so a
    gzip bomb is stopped by the size cap instead of filling memory first."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        yield from raw
        return
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise DatasetError(f"dataset URL {shown} sent an unsupported Content-Encoding {encoding!r}")
    inflater = zlib.decompressobj(wbits=47)  # gzip or zlib header, detected
    try:
        for chunk in raw:
            data = inflater.decompress(chunk, _DECODED_CHUNK)
            while data:
                yield data
                data = inflater.decompress(inflater.unconsumed_tail, _DECODED_CHUNK)
        yield inflater.flush()
    except zlib.error as exc:
        raise DatasetError(f"dataset URL {shown} sent a corrupt {encoding} body: {exc}") from None


def fetch_blob(
    source: BlobDataset, work_dir: Path, max_bytes: int = DEFAULT_MAX_DATASET_BYTES
) -> tuple[Path, str]:
    """Download a blob dataset; returns the local file and its kind.

    At most ``max_bytes`` are written, counted after the ``Content-Encoding`` is undone.

    Raises:
        DatasetError: 401/403/404, a body over ``max_bytes``, or an unusable encoding.
    """
    import httpx

    headers = {"User-Agent": "arkor-ops-worker", "Accept-Encoding": "gzip, deflate"}
    if source.token is not None:
        headers["Authorization"] = f"Bearer {source.token.get_secret_value()}"
    shown = _safe_url(source.url)
    kind = _file_kind(source.url)
    target = work_dir / f"dataset.{kind}"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with httpx.stream(
            "GET", source.fetch_url(), headers=headers, follow_redirects=True, timeout=60.0
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
            encoding = resp.headers.get("content-encoding", "")
            length = resp.headers.get("content-length", "")
            if not encoding and length.isdigit() and int(length) > max_bytes:
                raise _too_big(f"the dataset at {shown} ({length} bytes)", max_bytes)
            written = 0
            with target.open("wb") as fh:
                for chunk in _decoded(resp.iter_raw(1 << 16), encoding, shown):
                    written += len(chunk)
                    if written > max_bytes:
                        raise _too_big(f"the dataset at {shown}", max_bytes)
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


def _hub_choices(source: HuggingFaceDataset, hub: HubRef, commit: str) -> str:
    """What the dataset has, for an error message: its subsets and the subset's splits."""
    import datasets

    kw: dict[str, Any] = {"revision": commit, "token": hub.token or None}
    found = []
    try:
        subsets = datasets.get_dataset_config_names(source.name, **kw)
        found.append(f"subsets: {', '.join(subsets)}")
        if source.subset is None or source.subset in subsets:
            splits = datasets.get_dataset_split_names(source.name, source.subset, **kw)
            found.append(f"splits: {', '.join(splits)}")
    except Exception as exc:  # a best-effort hint
        log.debug("could not list the dataset's subsets and splits: %s", exc)
    return f" ({'; '.join(found)})" if found else ""


def load_huggingface(
    source: HuggingFaceDataset,
    work_dir: Path,
    hub: HubRef | None = None,
    commit: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of a Hugging Face dataset: a ``save_to_disk`` folder, a Hub-layout folder, or a Hub
    id (from the hub at the pinned ``commit`` when ``hub`` is given, else the local cache)."""
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
        elif hub is not None:
            loaded = call_hub(
                hub,
                "loading the dataset",
                lambda: datasets.load_dataset(
                    source.name,
                    source.subset,
                    split=source.split,
                    revision=commit,
                    token=hub.token or None,
                ),
                permanent=(ValueError, FileNotFoundError),
            )
        else:
            # A local Hub-layout folder gets its cache in the work dir; a Hub id uses the HF cache.
            cache = str(work_dir / "hf-datasets") if path.is_dir() else None
            loaded = datasets.load_dataset(
                source.name, source.subset, split=source.split, cache_dir=cache
            )
    except (DatasetError, HubAccessError):
        raise
    except (FileNotFoundError, ValueError) as exc:
        raise _not_loadable(source, hub, commit, exc) from exc
    return [dict(row) for row in loaded]


def _not_loadable(
    source: HuggingFaceDataset, hub: HubRef | None, commit: str | None, exc: BaseException
) -> DatasetError:
    where = f"from {hub.endpoint} at commit {commit}" if hub and commit else "offline"
    hint = _hub_choices(source, hub, commit) if hub and commit else ""
    return DatasetError(
        f"Hugging Face dataset {source.name!r} (subset {source.subset}, split {source.split}) "
        f"cannot be loaded {where}{hint}: {exc}"
    )


class _BadBytesError(ValueError):
    """A line that is not UTF-8 (carries its 1-based line number)."""

    def __init__(self, line: int, exc: UnicodeDecodeError) -> None:
        super().__init__(f"line {line}: not UTF-8 ({exc.reason} at byte {exc.start} of the line)")
        self.line = line


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` read one line at a time, split on ``\\n`` only (a raw U+2028
    inside a JSON string is part of its line); bad UTF-8 raises :class:`_BadBytesError`."""
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            raw = line.removeprefix(codecs.BOM_UTF8) if number == 1 else line
            try:
                yield number, raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _BadBytesError(number, exc) from None


def _read_jsonl(path: Path) -> list[Any]:
    rows: list[Any] = []
    number = 0
    try:
        for number, line in _lines(path):  # noqa: B007 - the except clauses report it
            if not line.strip():
                continue
            rows.append(json.loads(line))
    except _BadBytesError as exc:
        raise DatasetError(f"row {len(rows) + 1} ({exc})") from None
    except RecursionError:
        raise DatasetError(f"row {len(rows) + 1} (line {number}): JSON nested too deeply") from None
    except ValueError as exc:
        raise DatasetError(
            f"row {len(rows) + 1} (line {number}): not valid JSON: {excerpt(str(exc), 200)}"
        ) from None
    return rows


def _read_csv(path: Path) -> list[Any]:
    rows: list[Any] = []
    lines = _lines(path)
    current = [0]

    def text() -> Iterator[str]:
        for number, line in lines:
            current[0] = number
            yield line

    try:
        for row in csv.DictReader(text()):
            rows.append(dict(row))
    except _BadBytesError as exc:
        raise DatasetError(f"row {len(rows) + 1} ({exc})") from None
    except csv.Error as exc:
        raise DatasetError(
            f"row {len(rows) + 1} (line {current[0]}): not valid CSV: {exc} (a field over "
            f"{csv.field_size_limit()} characters needs JSONL or Parquet)"
        ) from None
    return rows


_WS = re.compile(r"[ \t\n\r]*")
_SURROGATE = re.compile("[\udc80-\udcff]")


def _where(text: str, rows: list[Any], pos: int) -> str:
    """``row N (line L)`` of the element starting at ``pos`` (counted only for an error)."""
    return f"row {len(rows) + 1} (line {text.count(chr(10), 0, pos) + 1})"


def _json_array(text: str, pos: int) -> list[Any]:
    """The elements of the JSON array at ``text[pos]``, one at a time, so that a bad element
    (bad bytes, bad JSON, nested too deeply) is reported with its row number."""
    decoder = json.JSONDecoder()
    rows: list[Any] = []
    pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
    while not text.startswith("]", pos):
        if rows:
            if not text.startswith(",", pos):
                raise DatasetError(f"row {len(rows) + 1}: not valid JSON: expected ',' or ']'")
            pos = _WS.match(text, pos + 1).end()  # type: ignore[union-attr]
        try:
            row, end = decoder.raw_decode(text, pos)
        except RecursionError:
            raise DatasetError(f"{_where(text, rows, pos)}: JSON nested too deeply") from None
        except ValueError as exc:
            why = excerpt(str(exc), 200)
            raise DatasetError(f"{_where(text, rows, pos)}: not valid JSON: {why}") from None
        if _SURROGATE.search(text, pos, end):
            raise DatasetError(f"{_where(text, rows, pos)}: not UTF-8 (undecodable bytes)")
        rows.append(row)
        pos = _WS.match(text, end).end()  # type: ignore[union-attr]
    if text[pos + 1 :].strip():
        raise DatasetError("dataset file is not valid JSON: text after the closing ]")
    return rows


def _read_json(path: Path) -> list[Any]:
    text = path.read_bytes().removeprefix(codecs.BOM_UTF8).decode("utf-8", "surrogateescape")
    start = _WS.match(text).end()  # type: ignore[union-attr]
    if text.startswith("[", start):
        return _json_array(text, start)
    bad = _SURROGATE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        raise DatasetError(f"dataset file is not UTF-8 (line {line})")
    try:
        data = json.loads(text)
    except RecursionError:
        raise DatasetError("dataset file is not valid JSON: nested too deeply") from None
    except ValueError as exc:
        raise DatasetError(f"dataset file is not valid JSON: {excerpt(str(exc), 200)}") from None
    if isinstance(data, dict):
        data = data.get("data", data.get("rows", data.get("train")))
    if not isinstance(data, list):
        raise DatasetError('a JSON dataset must be a list of rows (or {"data": [...]})')
    return data


def read_file(path: Path, kind: str, max_bytes: int = DEFAULT_MAX_DATASET_BYTES) -> list[Any]:
    """Parse a dataset file into rows; bad bytes, bad JSON or CSV and JSON nested too deeply
    fail with their row number. JSONL and CSV are read one line at a time.

    Raises:
        DatasetError: the file is missing, over ``max_bytes``, or malformed (naming the row).
    """
    if not path.is_file():
        raise DatasetError(f"dataset file {path} does not exist")
    size = path.stat().st_size
    if size > max_bytes:
        raise _too_big(f"the dataset file ({size} bytes)", max_bytes)
    if kind == "parquet":
        import pyarrow.parquet as pq  # type: ignore[import-untyped]

        try:
            return list(pq.read_table(path).to_pylist())
        except Exception as exc:
            raise DatasetError(
                f"dataset file is not valid Parquet: {excerpt(str(exc), 300)}"
            ) from exc
    if kind == "csv":
        return _read_csv(path)
    if kind == "json":
        return _read_json(path)
    return _read_jsonl(path)


def fetch_rows(
    config: TrainerConfig,
    work_dir: Path,
    max_bytes: int = DEFAULT_MAX_DATASET_BYTES,
    hub: HubRef | None = None,
    commit: str | None = None,
) -> tuple[list[Any], str]:
    """All rows of the configured source, and a short description of the source for logs."""
    source = config.dataset
    if isinstance(source, HuggingFaceDataset):
        rows = load_huggingface(source, work_dir, hub, commit)
        at = f"@{commit}" if commit else ""
        return rows, f"huggingface:{source.name}{at}[{source.split}]"
    if isinstance(source, BlobDataset):
        path, kind = fetch_blob(source, work_dir, max_bytes)
        return read_file(path, kind, max_bytes), f"blob:{_safe_url(source.url)}"
    if isinstance(source, S3Dataset):
        path, kind = fetch_s3(source, work_dir)
        return read_file(path, kind, max_bytes), f"s3:{source.uri}"
    assert isinstance(source, FileDataset)
    path = Path(source.path)
    return read_file(path, _file_kind(source.path), max_bytes), f"file:{source.path}"


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
                f"`messages[{i}].role` is {excerpt(role)}; expected one of {', '.join(ROLES)}"
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
        except RecursionError:
            problems.append(f"row {number}: nested too deeply")
        except ValueError as exc:
            problems.append(f"row {number}: {excerpt(str(exc), MAX_PROBLEM_CHARS, quote=False)}")
    if problems:
        shown = "; ".join(problems[:MAX_REPORTED_PROBLEMS])
        more = len(problems) - MAX_REPORTED_PROBLEMS
        tail = f" (and {more} more bad rows)" if more > 0 else ""
        raise DatasetError(f"{len(problems)} bad row(s) in the {fmt} dataset: {shown}{tail}")
    if count == 0:
        raise DatasetError("the dataset has no rows")
    return examples


def fingerprint(
    examples: list[dict[str, Any]], fmt: DatasetFormatType, commit: str | None = None
) -> str:
    """sha256 over the checked examples (what is trained on, whatever the source) and, for a
    dataset from the hub, the commit it was read at."""
    digest = hashlib.sha256(f"arkor-dataset-v1:{fmt}\n".encode())
    if commit:
        digest.update(f"hub-commit:{commit}\n".encode())
    for example in examples:
        digest.update(json.dumps(example, sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def prepare_dataset(
    config: TrainerConfig,
    work_dir: Path,
    max_bytes: int = DEFAULT_MAX_DATASET_BYTES,
    hub: HubRef | None = None,
    commit: str | None = None,
) -> PreparedDataset:
    """Fetch, check and fingerprint the run's dataset (a dry run keeps the first 50 rows).

    Args:
        config: the run's config.
        work_dir: scratch for the downloaded file.
        max_bytes: cap on the dataset file (``ARKOR_MAX_DATASET_BYTES``).
        hub: where a ``huggingface`` dataset id is read from (None: offline).
        commit: the commit the run pinned for it.

    Raises:
        DatasetError: the dataset cannot be fetched (401/403/404), is too big, or has bad rows.
        HubAccessError: the hub refused the dataset or the token.
    """
    fmt: DatasetFormatType = config.dataset_format.type if config.dataset_format else "chatml"
    rows, source = fetch_rows(config, work_dir, max_bytes, hub, commit)
    if config.dry_run:
        rows = rows[:DRY_RUN_ROWS]
    examples = check_rows(rows, fmt)
    fp = fingerprint(examples, fmt, commit)
    log.info("dataset %s: %d rows, format %s, fingerprint %s", source, len(examples), fmt, fp[:12])
    return PreparedDataset(
        examples=examples, fingerprint=fp, rows=len(examples), source=source, format=fmt
    )
