"""The SSE sidecar: serves one run's event log to any number of clients.

`python -m arkor_ops.sidecar` runs it.

Modules: :mod:`.tail` (one shared reader of the log that also persists it to storage),
:mod:`.app` (the Starlette app and its stream endpoint), :mod:`.__main__` (the entrypoint:
uvicorn with a shutdown that persists and drains first). The environment it reads is
:class:`arkor_ops.settings.SidecarSettings`.
"""
