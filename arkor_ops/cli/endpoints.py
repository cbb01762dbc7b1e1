"""``arkor-ops endpoints``: OpenAI-compatible endpoints on the cluster (docs/serving.md).

- ``create NAME --model M [--target champion|VERSION]``: serve registered model ``M``'s champion
  (default) or a version; the base model comes from the version's lineage. Or
  ``create NAME --base BASE --adapter URI [--version V]`` without a registry. Prints the first
  API key once (``--auth none``: none); ``--render`` prints the objects instead (no key).
- ``list``, ``show NAME``, ``delete NAME``.
- ``target NAME ...`` (the same target options): the pod swaps to it without a restart.
- ``keys create NAME KEY`` (prints the key once), ``keys revoke NAME KEY``.

The cluster comes from ``ARKOR_K8S_*`` (``ARKOR_K8S_NAMESPACE``, ``ARKOR_K8S_SERVING_IMAGE``, …),
the registry from ``MLFLOW_TRACKING_URI``. Exit codes: 0 done, 2 bad input or refused.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from rich.console import Console
from rich.table import Table

from arkor_ops.errors import ArkorOpsError


def _target_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="the registered model to serve (MLflow)")
    p.add_argument(
        "--target", default="champion", help="champion (default; follows promotions) or VERSION"
    )
    p.add_argument("--adapter", default=None, help="a committed adapter URI, instead of --model")
    p.add_argument("--version", default="1", help="the version name --adapter serves as")


def register(sub: Any) -> None:
    """Add ``endpoints`` to the parser."""
    group = sub.add_parser("endpoints", help="OpenAI-compatible endpoints on the cluster")
    group.add_argument("--namespace", default=None, help="default: ARKOR_K8S_NAMESPACE")
    cmds = group.add_subparsers(dest="endpoints_command", required=True)
    p = cmds.add_parser("create", help="a Deployment + Service serving a model and its adapter")
    p.add_argument("name", help='the endpoint\'s name: clients send it as "model"')
    _target_options(p)
    p.add_argument("--base", default=None, help="the base model (with --adapter)")
    p.add_argument("--auth", choices=["key", "none"], default="key")
    p.add_argument("--vocab-pre", default=None, help="BPE pre-tokenizer llama.cpp lacks")
    p.add_argument(
        "--engine",
        choices=["llama.cpp", "vllm"],
        default="llama.cpp",
        help="llama.cpp (CPU, default) or vllm (GPU: a vLLM container with LoRA)",
    )
    p.add_argument("--max-lora-rank", type=int, default=64, help="vllm: the largest LoRA rank")
    p.add_argument(
        "--render", action="store_true", help="print the objects as YAML, create nothing"
    )
    p.set_defaults(func=run_create)
    p = cmds.add_parser("list", help="every endpoint: target, ready, URL")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_list)
    p = cmds.add_parser("show", help="one endpoint")
    p.add_argument("name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run_show)
    p = cmds.add_parser("delete", help="delete an endpoint's objects")
    p.add_argument("name")
    p.set_defaults(func=run_delete)
    p = cmds.add_parser("target", help="what an endpoint serves (hot swap, no restart)")
    p.add_argument("name")
    _target_options(p)
    p.set_defaults(func=run_target)
    keys = cmds.add_parser("keys", help="API keys").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("create", help="a new key, printed once")
    p.add_argument("name")
    p.add_argument("key", help="the key's name")
    p.set_defaults(func=run_key_create)
    p = keys.add_parser("revoke", help="refuse a key from now on")
    p.add_argument("name")
    p.add_argument("key", help="the key's name")
    p.set_defaults(func=run_key_revoke)


def _endpoints(args: argparse.Namespace) -> Any:
    from arkor_ops.serving.cluster import Endpoints
    from arkor_ops.settings import KubernetesSettings, read

    settings = read(KubernetesSettings)
    if args.namespace:
        settings = settings.model_copy(update={"namespace": args.namespace})
    return Endpoints(settings)


def _target(args: argparse.Namespace) -> tuple[Any, str | None]:
    """The target the options name, and the base model it was trained on (None: not known)."""
    from arkor_ops.errors import ServingError
    from arkor_ops.registry import RegistrySettings
    from arkor_ops.serving.cluster import Target, resolve_target

    if args.adapter and args.model:
        raise ServingError("give --model (a registered model) or --adapter (a URI), not both")
    if args.adapter:
        return Target(args.version, args.adapter), None
    if not args.model:
        raise ServingError(
            "what to serve: --model NAME [--target champion|VERSION] or --adapter URI"
        )
    registry = RegistrySettings()
    if not registry.tracking_uri:
        raise ServingError("MLFLOW_TRACKING_URI is not set: which MLflow server has --model?")
    return resolve_target(registry, args.model, args.target)


def _run(body: Any) -> int:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        return int(body())
    except ArkorOpsError as exc:
        err.print(f"error: {exc}", markup=False)
        return 2


def run_create(args: argparse.Namespace) -> int:
    """Create an endpoint; print its first key."""
    from arkor_ops.errors import ServingError
    from arkor_ops.serving.cluster import EndpointSpec

    def body() -> int:
        target, trained_on = _target(args)
        base = args.base or trained_on
        if base is None:
            raise ServingError("--adapter needs --base: the model the adapter was trained on")
        spec = EndpointSpec(
            args.name,
            base,
            target,
            auth=args.auth,
            vocab_pre=args.vocab_pre,
            engine=args.engine,
            max_lora_rank=args.max_lora_rank,
        )
        if args.render:
            return _render(spec, args)
        with _endpoints(args) as endpoints:
            key = endpoints.create(spec)
        out = Console(highlight=False, soft_wrap=True)
        out.print(f"endpoint {args.name}: serving {base} with version {target.version}")
        if key:
            out.print(f"API key (shown once): {key}")
        out.print(f"arkor-ops endpoints show {args.name}: its URL once the pod is ready")
        return 0

    return _run(body)


def _render(spec: Any, args: argparse.Namespace) -> int:
    import sys

    import yaml

    from arkor_ops.serving.cluster import render
    from arkor_ops.settings import KubernetesSettings, read

    settings = read(KubernetesSettings)
    namespace = args.namespace or settings.namespace
    objects = render(spec, settings)
    for obj in objects:
        obj["metadata"]["namespace"] = namespace
    yaml.safe_dump_all(objects, sys.stdout, sort_keys=False)
    return 0


def _rows(infos: list[Any]) -> Table:
    table = Table(box=None, header_style="bold")
    for col in ("NAME", "READY", "VERSION", "SOURCE", "BASE", "URL"):
        table.add_column(col, overflow="fold")
    for i in infos:
        t = i.target
        table.add_row(
            i.name,
            "yes" if i.ready else "no",
            t.version if t else "-",
            (f"{t.source} {t.model}" if t and t.model else t.source if t else "-"),
            i.base_model,
            i.url or "-",
        )
    return table


def _as_dict(info: Any) -> dict[str, Any]:
    return {**asdict(info), "url": info.url}


def run_list(args: argparse.Namespace) -> int:
    """Print every endpoint."""

    def body() -> int:
        with _endpoints(args) as endpoints:
            infos = endpoints.list_all()
        if args.json:
            print(json.dumps([_as_dict(i) for i in infos], indent=2))
        else:
            Console(highlight=False).print(_rows(infos))
        return 0

    return _run(body)


def run_show(args: argparse.Namespace) -> int:
    """Print one endpoint."""

    def body() -> int:
        with _endpoints(args) as endpoints:
            info = endpoints.show(args.name)
        if args.json:
            print(json.dumps(_as_dict(info), indent=2))
            return 0
        out = Console(highlight=False, soft_wrap=True)
        out.print(_rows([info]))
        out.print(f"keys: {', '.join(info.keys) or '(none)'}")
        if info.target and info.target.adapter:
            out.print(f"adapter: {info.target.adapter}")
        return 0

    return _run(body)


def run_delete(args: argparse.Namespace) -> int:
    """Delete an endpoint."""

    def body() -> int:
        with _endpoints(args) as endpoints:
            endpoints.delete(args.name)
        Console(highlight=False).print(f"endpoint {args.name} deleted")
        return 0

    return _run(body)


def run_target(args: argparse.Namespace) -> int:
    """Retarget an endpoint."""

    def body() -> int:
        target, _ = _target(args)
        with _endpoints(args) as endpoints:
            endpoints.set_target(args.name, target)
        Console(highlight=False).print(
            f"endpoint {args.name}: version {target.version} requested; its pod swaps to it "
            "(arkor-ops endpoints show, or kubectl describe deployment, tell when)"
        )
        return 0

    return _run(body)


def run_key_create(args: argparse.Namespace) -> int:
    """Create a key; print it once."""

    def body() -> int:
        with _endpoints(args) as endpoints:
            key = endpoints.create_key(args.name, args.key)
        Console(highlight=False, soft_wrap=True).print(f"API key {args.key} (shown once): {key}")
        return 0

    return _run(body)


def run_key_revoke(args: argparse.Namespace) -> int:
    """Revoke a key."""

    def body() -> int:
        with _endpoints(args) as endpoints:
            endpoints.revoke_key(args.name, args.key)
        Console(highlight=False).print(f"key {args.key} of endpoint {args.name} revoked")
        return 0

    return _run(body)
