"""``arkor-ops serve NAME --model DIR [--adapter URI | --follow MODEL]``: a local endpoint.

The CPU engine (llama.cpp's llama-server, built by ``scripts/build-llama-server.sh``) serves the
base model with the committed adapter at ``--adapter`` (``file://`` or ``s3://``; checked file by
file against its manifest), behind the gateway on ``--host:--port``. With ``--auth key`` (the
default) a key is made and printed once; clients send it as ``Authorization: Bearer <key>`` and
``"model": NAME``. ``--follow MODEL`` serves the registered model's ``champion`` instead and
moves to each new champion as it is promoted (MLflow, ``MLFLOW_TRACKING_URI``; looked at every
``--interval`` seconds). Serves until Ctrl-C. Exit codes: 0 stopped, 2 bad input or the engine
failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any

from rich.console import Console

from arkor_ops.errors import ArkorOpsError


def register(sub: Any) -> None:
    """Add ``serve`` to the parser."""
    p = sub.add_parser("serve", help="a local OpenAI-compatible endpoint (CPU engine)")
    p.add_argument("name", help='the endpoint\'s name: clients send it as "model"')
    p.add_argument("--model", required=True, type=Path, help="the base model's folder")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--adapter", default=None, help="a committed adapter (file:// or s3://)")
    target.add_argument("--follow", default=None, metavar="MODEL", help="serve MODEL's champion")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between looks (--follow)")
    p.add_argument("--version", default="1", help="the version name the adapter serves as")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="0: a free one (the URL is printed)")
    p.add_argument("--auth", choices=["key", "none"], default="key")
    p.add_argument("--workdir", type=Path, default=None, help="GGUF files, logs (default: temp)")
    p.add_argument(
        "--vocab-pre", default=None, help="BPE pre-tokenizer for a tokenizer llama.cpp lacks"
    )
    p.add_argument("--gguf-type", default="f16", choices=["f32", "f16", "bf16", "q8_0"])
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    for module in ("starlette", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            err.print(f"error: serving needs {module}: pip install 'arkor-ops[serve]'")
            return 2
    from arkor_ops.serving.endpoint import LocalEndpoint

    with tempfile.TemporaryDirectory(prefix="arkor-serve-") as tmp:
        workdir = args.workdir or Path(tmp)
        try:
            endpoint = LocalEndpoint(
                args.name,
                args.model,
                workdir,
                auth=args.auth,
                host=args.host,
                port=args.port,
                vocab_pre=args.vocab_pre,
                gguf_type=args.gguf_type,
            )
            err.print(f"converting {args.model} and starting the engine …")
            endpoint.start()
        except ArkorOpsError as exc:
            err.print(f"error: {exc}")
            return 2
        stop = threading.Event()
        try:
            if args.follow:
                follower = _follower(endpoint, args)
                serving = follower.sync()
                err.print(
                    f"following {args.follow}'s champion: "
                    + (f"v{serving} serves" if serving else "none yet, nothing serves")
                )
                threading.Thread(target=follower.run, args=(stop,), daemon=True).start()
            else:
                what = "the base model" if args.adapter is None else args.adapter
                err.print(f"loading {what} as version {args.version} …")
                endpoint.deploy(args.version, args.adapter)
            out = Console(highlight=False, soft_wrap=True)
            out.print(f"arkor-ops serve: {endpoint.url}/v1 serves model {args.name!r}")
            if args.auth == "key":
                key = endpoint.keys.create("serve")
                out.print(f"API key (shown once): {key}")
            out.print("(Ctrl-C stops it)")
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            with contextlib.suppress(KeyboardInterrupt):
                stop.wait()
        except ArkorOpsError as exc:
            err.print(f"error: {exc}")
            return 2
        finally:
            stop.set()
            endpoint.close()
    return 0


def _follower(endpoint: Any, args: argparse.Namespace) -> Any:
    from arkor_ops.registry import RegistrySettings
    from arkor_ops.serving.champion import ChampionFollower

    return ChampionFollower(endpoint, RegistrySettings(), args.follow, interval=args.interval)
