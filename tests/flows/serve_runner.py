"""A runner for the flow tests: ``python -m tests.flows.serve_runner SUFFIX``.

Serves the deployments (names ending in SUFFIX) against ``$PREFECT_API_URL`` until terminated:
those of the environment (``ARKOR_RETRAIN_CONFIG``, ``ARKOR_RETRAIN_EVALUATION``,
``ARKOR_WATCH_DATASETS``: see :mod:`arkor_ops.flows.deploy`), as ``python -m
arkor_ops.flows.deploy`` serves them.
With ``ARKOR_TEST_BREAK_HOOKS=1`` the fine-tune flow's cancellation and crash hooks are replaced
by one that raises, to show that the reaper cleans up after a failed hook.
"""

from __future__ import annotations

import os
import sys
from typing import Any


async def broken_hook(flow: Any, flow_run: Any, state: Any) -> None:
    """A cancellation hook that fails (test knob)."""
    raise RuntimeError("hook broken on purpose by the test")


def main() -> None:
    """Serve until terminated."""
    from prefect import serve

    from arkor_ops.flows.deploy import from_env
    from arkor_ops.flows.fine_tune import fine_tune

    if os.environ.get("ARKOR_TEST_BREAK_HOOKS") == "1":
        fine_tune.on_cancellation_hooks = [broken_hook]
        fine_tune.on_crashed_hooks = [broken_hook]
    serve(*from_env(suffix=sys.argv[1]), print_starting_message=False)


if __name__ == "__main__":
    main()
