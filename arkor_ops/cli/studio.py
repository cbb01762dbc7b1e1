"""``arkor-ops studio [--port N] [--no-open] [--backend local|kubernetes]``: the local web app.

It serves the runs of the backend chosen as for ``arkor-ops list`` (``--backend``, else
``$ARKOR_BACKEND``, else ``kubernetes``; ``--namespace`` on Kubernetes) on 127.0.0.1, prints the
URL with the session token, opens a browser unless ``--no-open``, and serves until Ctrl-C.
Exit codes: 0 stopped, 2 the backend or the port refused, or the ``studio`` extra is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import webbrowser
from typing import Any

from rich.console import Console

from arkor_ops.cli.ops import backend_options, command_backend
from arkor_ops.errors import ArkorOpsError


def register(sub: Any) -> None:
    """Add ``studio`` to the parser."""
    p = sub.add_parser(
        "studio", parents=[backend_options()], help="local web app: runs, loss chart, playground"
    )
    p.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default 0: a free one)")
    p.add_argument("--no-open", action="store_true", help="print the URL, open no browser")
    p.set_defaults(func=run_studio)


def _missing_extra() -> str | None:
    for module in ("starlette", "uvicorn"):
        if importlib.util.find_spec(module) is None:
            return module
    return None


def run_studio(args: argparse.Namespace) -> int:
    """Serve the studio until interrupted."""
    err = Console(stderr=True, highlight=False)
    missing = _missing_extra()
    if missing:
        err.print(f"error: the studio needs {missing}: pip install 'arkor-ops[studio]'")
        return 2
    from arkor_ops.studio import server

    try:
        sock = server.bind(args.port)
    except OSError as exc:
        err.print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}")
        return 2
    token = server.new_token()
    link = server.url(sock, token)

    def ready() -> None:
        out = Console(highlight=False, soft_wrap=True)  # the URL stays on one line
        out.print(f"arkor-ops studio: {link}\n(Ctrl-C stops it)")
        if not args.no_open:
            webbrowser.open(link)

    async def main() -> None:
        async with command_backend(args) as backend:
            await server.serve(backend, sock, token, on_ready=ready)

    try:
        asyncio.run(main())
    except ArkorOpsError as exc:
        err.print(f"error: {exc}")
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        sock.close()
    return 0
