"""Keep an endpoint on a registered model's ``champion``: look at the alias, deploy when it moves.

The registry is the one place that knows which version is the champion (the promotion gate and
``arkor-ops models promote`` move the alias, :mod:`arkor_ops.models`), so the endpoint asks it:
every ``interval`` seconds, :meth:`ChampionFollower.sync` reads the alias and, when it names a
version other than the one serving, deploys that version's committed adapter (its lineage tag
``arkor-ops.final_adapter``, in run storage) through :meth:`LocalEndpoint.deploy`, the hot swap.

A version that is refused (its adapter fails its manifest, will not convert or load) is not tried
again while the alias stays on it: the old version keeps serving, the refusal is logged once and
kept in :attr:`ChampionFollower.refused`. A registry that does not answer is logged and asked
again at the next look; nothing changes meanwhile.
"""

from __future__ import annotations

import logging
import threading

from arkor_ops.errors import ArkorOpsError, RegistryError
from arkor_ops.models import champion
from arkor_ops.registry import RegistrySettings
from arkor_ops.serving.endpoint import LocalEndpoint

log = logging.getLogger(__name__)


class ChampionFollower:
    """Moves ``endpoint`` to ``model``'s champion as the alias moves."""

    def __init__(
        self,
        endpoint: LocalEndpoint,
        settings: RegistrySettings,
        model: str,
        *,
        interval: float = 10.0,
    ) -> None:
        self.endpoint = endpoint
        self.settings = settings
        self.model = model
        self.interval = interval
        #: Versions refused, with why: not tried again while the alias stays on them.
        self.refused: dict[str, str] = {}

    def sync(self) -> str | None:
        """Look at the alias once; deploy a new champion. Returns the version serving after."""
        try:
            info = champion(self.settings, self.model)
        except RegistryError as exc:
            log.warning("%s: the registry did not answer (%s); asking again later", self.model, exc)
            return self.endpoint.serving
        if info is None or info.version == self.endpoint.serving:
            return self.endpoint.serving
        if info.version in self.refused:
            return self.endpoint.serving
        adapter = info.lineage.get("final_adapter")
        if not adapter:
            self._refuse(info.version, "its version has no arkor-ops.final_adapter tag")
            return self.endpoint.serving
        try:
            self.endpoint.deploy(info.version, adapter)
        except ArkorOpsError as exc:
            self._refuse(info.version, str(exc))
        return self.endpoint.serving

    def _refuse(self, version: str, why: str) -> None:
        self.refused[version] = why
        log.warning(
            "%s v%s is the champion but was refused, v%s keeps serving: %s",
            self.model,
            version,
            self.endpoint.serving or "(nothing)",
            why,
        )

    def run(self, stop: threading.Event) -> None:
        """:meth:`sync` every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            self.sync()
            stop.wait(self.interval)
