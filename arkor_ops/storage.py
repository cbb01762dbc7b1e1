"""Run storage: ``s3://`` (any S3-compatible store) and ``file://``, behind one small interface.

S3 settings come from the environment (:class:`arkor_ops.settings.S3Settings`:
``ARKOR_S3_ENDPOINT_URL``, ``AWS_REGION``; boto3 reads ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY`` itself), so MinIO, moto and AWS all work unchanged.

Layout of one run under the storage prefix (:class:`RunLayout`)::

    {prefix}/{job_id}/config.json
    {prefix}/{job_id}/events.jsonl
    {prefix}/{job_id}/attempts.json   (the worker's attempt record, see arkor_ops.worker.attempts)
    {prefix}/{job_id}/cancel-requested.json   (a cancel: backends/kubernetes/cancel.py)
    {prefix}/{job_id}/checkpoints/step-{step:08d}/...   (manifest.json written last = committed)
    {prefix}/{job_id}/final/...
    {prefix}/{job_id}/loss.png        (the loss curve, saved by the Prefect flow: docs/prefect.md)
"""

from __future__ import annotations

import builtins
import logging
import shutil
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from arkor_ops.errors import StorageError
from arkor_ops.settings import S3Settings, read

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its URI, size in bytes and an opaque version of its content (the
    S3 ETag, a hash of the bytes for a single-part upload; a file's mtime)."""

    uri: str
    size: int
    version: str


def join_uri(base: str, *parts: str) -> str:
    """Join URI path segments with single slashes."""
    out = base.rstrip("/")
    for part in parts:
        out += "/" + part.strip("/")
    return out


class Storage(ABC):
    """Object storage addressed by URIs of one scheme."""

    @abstractmethod
    def put_bytes(self, uri: str, data: bytes) -> None:
        """Write ``data`` to ``uri`` (replacing it)."""

    @abstractmethod
    def put_file(self, uri: str, path: Path) -> None:
        """Upload the local file ``path`` to ``uri``."""

    def put_files(self, items: Sequence[tuple[str, Path]]) -> None:
        """Upload each ``(uri, local path)``; returns once every one is stored, in any order.

        Raises :class:`StorageError` for the first that failed, after the others finished.
        """
        for uri, path in items:
            self.put_file(uri, path)

    @abstractmethod
    def get_bytes(self, uri: str) -> bytes:
        """Read ``uri``; raises :class:`StorageError` when it does not exist."""

    @abstractmethod
    def get_file(self, uri: str, path: Path) -> None:
        """Download ``uri`` to the local file ``path``."""

    @abstractmethod
    def exists(self, uri: str) -> bool:
        """Whether an object exists at ``uri``."""

    def list(self, prefix: str) -> builtins.list[str]:
        """URIs of all objects under ``prefix`` (recursive), sorted."""
        return [obj.uri for obj in self.list_objects(prefix)]

    @abstractmethod
    def list_objects(self, prefix: str) -> builtins.list[ObjectInfo]:
        """Every object under ``prefix`` (recursive) with its size and version, sorted by URI."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix``."""

    def version(self, uri: str) -> str | None:
        """An opaque version of the object (ETag, version id or mtime); None when absent."""
        return None

    def upload_dir(self, uri: str, directory: Path) -> builtins.list[str]:
        """Upload every file under ``directory`` below ``uri``; returns the relative names."""
        names = []
        for path in sorted(p for p in directory.rglob("*") if p.is_file()):
            rel = path.relative_to(directory).as_posix()
            self.put_file(join_uri(uri, rel), path)
            names.append(rel)
        return names

    def download_dir(self, uri: str, directory: Path) -> builtins.list[str]:
        """Download every object under ``uri`` into ``directory``; returns the relative names."""
        prefix = uri.rstrip("/") + "/"
        names = []
        for obj in self.list(prefix):
            rel = obj[len(prefix) :]
            target = directory / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.get_file(obj, target)
            names.append(rel)
        return names


class FileStorage(Storage):
    """``file://`` URIs on the local disk (local runs and tests)."""

    @staticmethod
    def _path(uri: str) -> Path:
        parsed = urlparse(uri)
        if parsed.scheme != "file":
            raise StorageError(f"not a file:// URI: {uri}")
        return Path(unquote(parsed.netloc + parsed.path))

    def put_bytes(self, uri: str, data: bytes) -> None:
        path = self._path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(data)
        tmp.replace(path)

    def put_file(self, uri: str, path: Path) -> None:
        target = self._path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        shutil.copyfile(path, tmp)
        tmp.replace(target)

    def get_bytes(self, uri: str) -> bytes:
        try:
            return self._path(uri).read_bytes()
        except FileNotFoundError:
            raise StorageError(f"{uri} does not exist") from None

    def get_file(self, uri: str, path: Path) -> None:
        try:
            shutil.copyfile(self._path(uri), path)
        except FileNotFoundError:
            raise StorageError(f"{uri} does not exist") from None

    def exists(self, uri: str) -> bool:
        return self._path(uri).is_file()

    def list_objects(self, prefix: str) -> builtins.list[ObjectInfo]:
        root = self._path(prefix.rstrip("/"))
        base = prefix.rstrip("/")
        if root.is_file():
            paths = [(base, root)]
        elif root.is_dir():
            paths = [
                (join_uri(base, p.relative_to(root).as_posix()), p)
                for p in root.rglob("*")
                if p.is_file() and not p.name.endswith(".part")
            ]
        else:
            return []
        out = []
        for uri, path in sorted(paths):
            stat = path.stat()
            out.append(ObjectInfo(uri, stat.st_size, str(stat.st_mtime_ns)))
        return out

    def delete_prefix(self, prefix: str) -> None:
        root = self._path(prefix.rstrip("/"))
        if root.is_dir():
            shutil.rmtree(root)
        elif root.exists():
            root.unlink()

    def version(self, uri: str) -> str | None:
        path = self._path(uri)
        return str(path.stat().st_mtime_ns) if path.exists() else None


def s3_client_kwargs(
    env: Mapping[str, str] | S3Settings | None = None,
) -> dict[str, Any]:
    """boto3 ``client("s3", **kwargs)`` arguments (path-style addressing).

    Args:
        env: :class:`~arkor_ops.settings.S3Settings`, or the variables to read them from;
            default: this process's environment.
    """
    from botocore.config import Config

    s3 = env if isinstance(env, S3Settings) else read(S3Settings, env, what="S3 settings")
    endpoint = s3.endpoint_url
    kwargs: dict[str, Any] = {
        "region_name": s3.region_name(),
        "config": Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
        ),
    }
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    return kwargs


#: Multipart above 8 MiB in 8 MiB parts; 10 requests in flight (boto3's default), shared by
#: every file of one :meth:`S3Storage.put_files` call.
_MULTIPART_BYTES = 8 << 20
_MAX_REQUESTS = 10


class S3Storage(Storage):
    """``s3://bucket/key`` URIs through boto3 (multipart for large files).

    One client and one s3transfer manager serve every upload of the instance: creating either
    costs more than a small object's PUT, and the manager keeps its connections and threads
    warm between checkpoints.
    """

    def __init__(self, client: Any = None) -> None:
        if client is None:
            import boto3

            client = boto3.client("s3", **s3_client_kwargs())
        self.client = client
        self._manager: Any = None

    @staticmethod
    def split(uri: str) -> tuple[str, str]:
        """``s3://bucket/key`` → ``(bucket, key)``."""
        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageError(f"not an s3:// URI: {uri}")
        return parsed.netloc, parsed.path.lstrip("/")

    def _call(self, what: str, uri: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise StorageError(f"{uri} does not exist") from exc
            raise StorageError(f"{what} {uri} failed: {code or exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"{what} {uri} failed: {exc}") from exc

    def put_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = self.split(uri)
        self._call("writing", uri, self.client.put_object, Bucket=bucket, Key=key, Body=data)

    def put_file(self, uri: str, path: Path) -> None:
        self.put_files([(uri, path)])

    def _transfers(self) -> Any:
        if self._manager is None:
            from boto3.s3.transfer import TransferConfig, create_transfer_manager

            config = TransferConfig(
                multipart_threshold=_MULTIPART_BYTES,
                multipart_chunksize=_MULTIPART_BYTES,
                max_concurrency=_MAX_REQUESTS,
            )
            self._manager = create_transfer_manager(self.client, config)
        return self._manager

    def put_files(self, items: Sequence[tuple[str, Path]]) -> None:
        # All files go to one transfer manager at once: small files no longer wait in line
        # behind each other's round trips, and big ones are split into parallel parts.
        manager = self._transfers()
        futures = []
        for uri, path in items:
            bucket, key = self.split(uri)
            futures.append((uri, manager.upload(str(path), bucket, key)))
        failure: StorageError | None = None
        for uri, future in futures:
            try:
                self._call("uploading", uri, future.result)
            except StorageError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure

    def get_bytes(self, uri: str) -> bytes:
        bucket, key = self.split(uri)
        resp = self._call("reading", uri, self.client.get_object, Bucket=bucket, Key=key)
        return bytes(resp["Body"].read())

    def get_file(self, uri: str, path: Path) -> None:
        bucket, key = self.split(uri)
        self._call("downloading", uri, self.client.download_file, bucket, key, str(path))

    def exists(self, uri: str) -> bool:
        return self.version(uri) is not None

    def version(self, uri: str) -> str | None:
        bucket, key = self.split(uri)
        try:
            head = self._call("checking", uri, self.client.head_object, Bucket=bucket, Key=key)
        except StorageError:
            return None
        return str(head.get("VersionId") or head.get("ETag", "")).strip('"') or None

    def list_objects(self, prefix: str) -> builtins.list[ObjectInfo]:
        bucket, key = self.split(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        out: builtins.list[ObjectInfo] = []
        pages = self._call(
            "listing", prefix, lambda: list(paginator.paginate(Bucket=bucket, Prefix=key))
        )
        for page in pages:
            out.extend(
                ObjectInfo(
                    f"s3://{bucket}/{obj['Key']}", int(obj["Size"]), str(obj["ETag"]).strip('"')
                )
                for obj in page.get("Contents", [])
            )
        return sorted(out, key=lambda obj: obj.uri)

    def delete_prefix(self, prefix: str) -> None:
        bucket, _ = self.split(prefix)
        keys = [self.split(u)[1] for u in self.list(prefix)]
        for i in range(0, len(keys), 1000):
            batch = {"Objects": [{"Key": k} for k in keys[i : i + 1000]]}
            self._call("deleting", prefix, self.client.delete_objects, Bucket=bucket, Delete=batch)


def open_storage(uri: str) -> Storage:
    """The storage for a URI's scheme (``s3://`` or ``file://``).

    Raises:
        StorageError: for any other scheme.
    """
    scheme = urlparse(uri).scheme
    if scheme == "s3":
        return S3Storage()
    if scheme == "file":
        return FileStorage()
    raise StorageError(f"unsupported storage URI {uri!r}: use s3://bucket/prefix or file:///path")


@dataclass(frozen=True)
class RunLayout:
    """Where one run's files live under the storage prefix."""

    prefix: str
    job_id: str

    @property
    def root(self) -> str:
        """The run's own prefix."""
        return join_uri(self.prefix, self.job_id)

    @property
    def config(self) -> str:
        """The run's config (JSON, no secrets)."""
        return join_uri(self.root, "config.json")

    @property
    def events(self) -> str:
        """The persisted event log (JSON Lines)."""
        return join_uri(self.root, "events.jsonl")

    @property
    def checkpoints(self) -> str:
        """Prefix of all checkpoints."""
        return join_uri(self.root, "checkpoints")

    def checkpoint(self, step: int) -> str:
        """Prefix of the checkpoint at ``step``."""
        return join_uri(self.checkpoints, f"step-{step:08d}")

    @property
    def final(self) -> str:
        """Prefix of the final adapter."""
        return join_uri(self.root, "final")

    @property
    def evaluation(self) -> str:
        """Prefix of an evaluation job's results: ``samples.jsonl``, ``metrics.json`` and the
        manifest, written last."""
        return join_uri(self.root, "evaluation")

    @property
    def loss_curve(self) -> str:
        """The loss curve beside the final adapter (PNG, drawn by the Prefect flow)."""
        return join_uri(self.root, "loss.png")
