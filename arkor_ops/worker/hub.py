"""The Hugging Face Hub: pin a revision to a commit, download a model, and say what went wrong.

Everything here goes through ``huggingface_hub`` (its cache layout, file locks, ``hf_xet`` and
parallel downloads), so ``HF_ENDPOINT`` (a mirror or a private hub), ``HF_TOKEN`` and
``HF_HUB_OFFLINE`` mean what they mean to every Hugging Face tool. What this module adds:

- **Pinning**: a branch or tag is resolved to its commit once per run (:func:`resolve_commit`);
  the worker records the commit and every retry or resume of the run downloads that commit,
  even after the branch moved.
- **Only what a causal LM needs** (:data:`MODEL_FILES`): config, tokenizer, safetensors shards,
  never ``*.bin`` duplicates, ``original/`` checkpoints or GGUF files a repo may also hold.
- **Errors a user can act on**, decided by the first metadata request, before any weights move:
  a gated repo (accept the license, set the token), no such repo or revision (with the
  branches and tags that exist), a refused token. These are :class:`HubAccessError` (the run
  can never succeed as configured: exit 2, never retried). Network errors and 5xx are retried
  here with the run's backoff, then surface as retryable (exit 1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from arkor_ops.polling import retry_sync
from arkor_ops.reconnect import ReconnectPolicy
from arkor_ops.worker.errors import HubAccessError

log = logging.getLogger(__name__)

RepoType = Literal["model", "dataset"]
T = TypeVar("T")

#: Files a causal LM needs from a model repo (``allow_patterns`` of the download).
MODEL_FILES = (
    "*.json",
    "*.safetensors",
    "*.model",
    "*.tiktoken",
    "*.txt",
    "*.jinja",
    "*.py",
)
#: Tried this many times on network errors and 5xx before the run fails as retryable.
HUB_ATTEMPTS = 4
#: The branch a hub serves when no revision is given (as ``huggingface_hub`` assumes).
DEFAULT_BRANCH = "main"
_BACKOFF = ReconnectPolicy(base_delay_seconds=1.0, max_delay_seconds=20.0)
_COMPLETE = ".arkor-complete"


@dataclass(frozen=True)
class HubRef:
    """A repo on the Hub at a revision, and who asks for it."""

    repo_id: str
    repo_type: RepoType
    revision: str | None
    token: str | None
    endpoint: str
    token_variable: str = "HF_TOKEN"

    @property
    def kind(self) -> str:
        """``model`` or ``dataset``, for messages."""
        return self.repo_type

    @property
    def page(self) -> str:
        """The repo's page on the hub (where a license is accepted)."""
        prefix = "datasets/" if self.repo_type == "dataset" else ""
        return f"{self.endpoint.rstrip('/')}/{prefix}{self.repo_id}"


def _describe_refs(ref: HubRef) -> str:
    """``branches: a, b; tags: c`` of the repo, or "" when they cannot be listed."""
    from huggingface_hub import HfApi

    try:
        refs = HfApi(endpoint=ref.endpoint).list_repo_refs(
            ref.repo_id, repo_type=ref.repo_type, token=ref.token or None
        )
    except Exception:  # a best-effort hint; the error itself is already decided
        return ""
    branches = ", ".join(sorted(b.name for b in refs.branches)) or "none"
    tags = ", ".join(sorted(t.name for t in refs.tags)) or "none"
    return f" (branches: {branches}; tags: {tags})"


def access_error(ref: HubRef, exc: Exception) -> HubAccessError | None:
    """The user-facing error for a Hub refusal, or None when ``exc`` is worth retrying."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    what = f"{ref.kind} {ref.repo_id!r}"
    if isinstance(exc, GatedRepoError):
        has = "the token set has no access" if ref.token else "no HF token is set"
        return HubAccessError(
            f"{what} is gated and {has}: accept the license at {ref.page} with your account, "
            f"then set the HF token: {ref.token_variable}"
        )
    if isinstance(exc, RevisionNotFoundError):
        return HubAccessError(_no_revision(ref))
    if isinstance(exc, RepositoryNotFoundError):
        hint = (
            "check the id, and that the token set may read it"
            if ref.token
            else f"check the id; a private repo needs the HF token: {ref.token_variable}"
        )
        return HubAccessError(f"{what} does not exist on {ref.endpoint} or is private: {hint}")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else None
        if status in (401, 403):
            return HubAccessError(
                f"{ref.endpoint} refused the HF token for {what} ({status}): the token is "
                f"invalid or expired; set a valid one: {ref.token_variable}"
            )
        if status is not None and 400 <= status < 500 and status not in (408, 429):
            return HubAccessError(f"{ref.endpoint} answered {status} for {what}: {exc}")
    return None


def call_hub(
    ref: HubRef,
    what: str,
    fn: Callable[[], T],
    *,
    attempts: int = HUB_ATTEMPTS,
    permanent: tuple[type[Exception], ...] = (),
) -> T:
    """``fn()`` with Hub refusals mapped to :class:`HubAccessError` and transient errors retried.

    Args:
        ref: the repo asked for (for messages and the refusal mapping).
        what: what ``fn`` does, for messages.
        fn: the call.
        attempts: tries on network errors and 5xx.
        permanent: exception types ``fn`` raises for bad input: re-raised at once.

    Raises:
        HubAccessError: the Hub refused (never retried).
        RuntimeError: still failing after ``attempts`` tries (retryable by the Job).
    """

    def once() -> T:
        try:
            return fn()
        except HubAccessError:
            raise
        except Exception as exc:
            if isinstance(exc, permanent):
                raise
            refused = access_error(ref, exc)
            if refused is not None:
                raise refused from None
            raise _Transient(exc) from exc

    def failed(_attempt: int, error: BaseException, delay: float) -> None:
        exc = error.__cause__
        log.warning(
            "%s %s failed (%s: %s); retrying in %.1f s",
            what,
            ref.repo_id,
            type(exc).__name__,
            exc,
            delay,
        )

    try:
        return retry_sync(
            once, _BACKOFF.delays(), attempts=attempts, retry_on=_Transient, before_sleep=failed
        )
    except _Transient as error:
        exc = error.__cause__
        raise RuntimeError(
            f"{what} {ref.repo_id} from {ref.endpoint} failed {attempts} times: "
            f"{type(exc).__name__}: {exc}"
        ) from None


class _Transient(Exception):  # noqa: N818 - a wrapper, never seen outside call_hub
    """A network error or 5xx from the Hub (its ``__cause__``): retried by :func:`call_hub`."""


def resolve_commit(ref: HubRef) -> str:
    """The commit ``ref.revision`` (the default branch, ``main``, when None) points at now.

    Raises:
        HubAccessError: gated, missing repo or revision, refused token.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    api = HfApi(endpoint=ref.endpoint)

    def info(revision: str) -> str:
        got = api.repo_info(
            ref.repo_id, repo_type=ref.repo_type, revision=revision, token=ref.token or None
        )
        if not got.sha:
            raise RuntimeError(f"the hub reported no commit for {ref.repo_id}@{revision}")
        return got.sha

    try:
        return call_hub(
            ref,
            "resolving the revision of",
            lambda: info(ref.revision or DEFAULT_BRANCH),
            permanent=(RepositoryNotFoundError,),
        )
    except RepositoryNotFoundError as exc:
        # Some mirrors answer "no such repo" for a missing revision of a repo that exists:
        # look at the default branch before telling the user the repo is missing.
        if ref.revision not in (None, DEFAULT_BRANCH) and not isinstance(exc, GatedRepoError):
            try:
                info(DEFAULT_BRANCH)
            except Exception as probe:
                log.debug("the default branch is not there either: %s", probe)
            else:
                raise HubAccessError(_no_revision(ref)) from None
        refused = access_error(ref, exc)
        raise (refused or exc) from None


def _no_revision(ref: HubRef) -> str:
    return (
        f"{ref.kind} {ref.repo_id!r} has no revision {ref.revision!r}{_describe_refs(ref)}: set "
        "an existing branch, tag or commit"
    )


def download_model(ref: HubRef, commit: str, cache_dir: Path) -> tuple[Path, bool]:
    """The model's files at ``commit`` in ``cache_dir`` (Hub cache layout); downloads once.

    Returns:
        The snapshot folder, and whether anything was downloaded in this call.

    Raises:
        HubAccessError: the Hub refused.
        RuntimeError: the download kept failing.
    """
    from huggingface_hub import snapshot_download

    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = cache_dir / f"models--{ref.repo_id.replace('/', '--')}"
    marker = folder / f"{_COMPLETE}-{commit}"
    snapshot = folder / "snapshots" / commit
    if marker.is_file() and (snapshot / "config.json").is_file():
        return snapshot, False

    def fetch() -> Path:
        return Path(
            snapshot_download(
                ref.repo_id,
                revision=commit,
                cache_dir=cache_dir,
                allow_patterns=list(MODEL_FILES),
                token=ref.token or None,
                endpoint=ref.endpoint,
            )
        )

    path = call_hub(ref, "downloading", fetch)
    if not (path / "config.json").is_file():
        raise HubAccessError(
            f"model {ref.repo_id!r} at {commit[:12]} has no config.json: not a Transformers model"
        )
    if not any(path.glob("*.safetensors")):
        raise HubAccessError(
            f"model {ref.repo_id!r} at {commit[:12]} has no *.safetensors weights; arkor-ops "
            "loads only safetensors (convert the repo, or pass a local folder)"
        )
    marker.write_text(f"{ref.repo_id}@{commit}\n")
    return path, True
