"""The endpoint's front: API keys, one public model name, and the switch between versions.

Ours, and thin, because the engines leave exactly this out: llama-server and vLLM each check a
fixed key list given at start (no revoking, no hashes), and neither moves traffic from one
loaded version to another. The gateway does only that and forwards everything else unchanged:

* ``Authorization: Bearer <key>`` checked against the endpoint's :class:`~.keys.KeyFile`
  (``auth="none"`` turns it off); anything else gets 401 in OpenAI's error shape;
* ``POST /v1/chat/completions`` and ``/v1/completions`` with ``"model"`` the endpoint's name (or
  left out) are sent to the engine instance of the active version, streamed back byte for byte
  (SSE included); the answer's ``model`` names that instance (``<endpoint>@<version>``), so a
  client can tell which version answered;
* ``GET /v1/models`` lists the endpoint's name; ``GET /health`` is 200 once a version serves.

:meth:`Gateway.switch` moves traffic: requests that started keep their instance to the end,
new ones go to the new instance, and it returns the old instance's name once nothing uses it
(so the caller can unload it). No request fails because of a switch.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from arkor_ops.errors import ServingError

#: Request headers the engine gets (the key never reaches it).
_FORWARDED = ("content-type", "accept")


def _error(status: int, message: str, kind: str, code: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "param": None, "code": code}},
        status_code=status,
    )


class Gateway:
    """The ASGI app of one endpoint (:attr:`app`), forwarding to ``engine_url``.

    ``engine_url`` may be set after construction (the engine's port is known once it runs),
    but before the app starts.
    """

    def __init__(
        self,
        name: str,
        engine_url: str | None,
        *,
        verify: Callable[[str], bool] | None,
        timeout: float = 600.0,
    ) -> None:
        self.name = name
        self.engine_url = engine_url
        self._verify = verify
        self._timeout = timeout
        self._lock = threading.Condition()
        self._active: str | None = None
        self._inflight: Counter[str] = Counter()
        self._client: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[
                Route("/v1/chat/completions", self._forward, methods=["POST"]),
                Route("/v1/completions", self._forward, methods=["POST"]),
                Route("/v1/models", self._models, methods=["GET"]),
                Route("/health", self._health, methods=["GET"]),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        if self.engine_url is None:
            raise ServingError(f"the gateway of {self.name} has no engine URL")
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(
            base_url=self.engine_url, timeout=self._timeout, limits=limits
        ) as client:
            self._client = client
            yield
            self._client = None

    # -- versions --------------------------------------------------------------------------

    @property
    def active(self) -> str | None:
        """The engine instance new requests go to."""
        return self._active

    def switch(self, instance: str, drain_timeout: float = 600.0) -> str | None:
        """Send new requests to ``instance``; return the previous one once it has no request.

        Returns None when there was no previous instance, and the previous one's name also when
        ``drain_timeout`` passes with requests still on it (they are the engine's to finish).
        """
        with self._lock:
            old, self._active = self._active, instance
            if old is None or old == instance:
                return None
            deadline = time.monotonic() + drain_timeout
            while self._inflight[old] > 0 and time.monotonic() < deadline:
                self._lock.wait(timeout=max(0.0, deadline - time.monotonic()))
            return old

    def _enter(self) -> str | None:
        with self._lock:
            instance = self._active
            if instance is not None:
                self._inflight[instance] += 1
            return instance

    def _leave(self, instance: str) -> None:
        with self._lock:
            self._inflight[instance] -= 1
            if self._inflight[instance] <= 0:
                del self._inflight[instance]
                self._lock.notify_all()

    # -- routes ----------------------------------------------------------------------------

    def _refused(self, request: Request) -> JSONResponse | None:
        if self._verify is None:
            return None
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and key and self._verify(key.strip()):
            return None
        return _error(
            401,
            f"{self.name} needs a valid API key: send 'Authorization: Bearer <key>' with the key "
            "`arkor-ops serve` printed (or one from LocalEndpoint.keys.create)",
            "invalid_request_error",
            "invalid_api_key",
        )

    async def _health(self, request: Request) -> Response:
        if self._active is None:
            return JSONResponse({"status": "no version serving"}, status_code=503)
        return JSONResponse({"status": "ok", "endpoint": self.name, "serving": self._active})

    async def _models(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        entry = {"id": self.name, "object": "model", "created": 0, "owned_by": "arkor-ops"}
        if self._active is not None:
            entry["serving"] = self._active
        return JSONResponse({"object": "list", "data": [entry]})

    async def _forward(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        try:
            payload: Any = json.loads(await request.body())
        except ValueError as exc:
            return _error(400, f"the body is not JSON: {exc}", "invalid_request_error")
        if not isinstance(payload, dict):
            return _error(400, "the body must be a JSON object", "invalid_request_error")
        asked = payload.get("model")
        if asked not in (None, "", self.name):
            return _error(
                404,
                f"model {str(asked)[:100]!r} is not served here: this endpoint serves "
                f"{self.name!r}",
                "invalid_request_error",
                "model_not_found",
            )
        instance = self._enter()
        if instance is None:
            return _error(503, f"{self.name} has no version serving yet", "server_error")
        try:
            return await self._send(request, {**payload, "model": instance}, instance)
        except BaseException:
            self._leave(instance)
            raise

    async def _send(self, request: Request, payload: dict[str, Any], instance: str) -> Response:
        assert self._client is not None  # set by the lifespan
        headers = {k: v for k, v in request.headers.items() if k in _FORWARDED}
        upstream = self._client.build_request(
            "POST", request.url.path, json=payload, headers=headers
        )
        try:
            resp = await self._client.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            self._leave(instance)
            return _error(502, f"the engine did not answer: {exc}", "server_error")

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in resp.aiter_raw():
                    yield chunk
            finally:
                await resp.aclose()
                self._leave(instance)

        kept = {k: v for k, v in resp.headers.items() if k in ("content-type", "cache-control")}
        return StreamingResponse(body(), status_code=resp.status_code, headers=kept)
