"""Serving what was trained: OpenAI-compatible endpoints, one adapter version at a time.

An endpoint serves a base model with one adapter under one public model name, behind API keys,
on a maintained engine (llama.cpp's llama-server on CPU; vLLM on GPU is the plan, docs/serving.md),
and moves to a new version without a restart and without a failed request:

* :mod:`.endpoint`: :class:`~.endpoint.LocalEndpoint` (``arkor-ops serve``), the engine and the
  gateway on one machine, and ``deploy()``, the hot swap;
* :mod:`.gateway`: the thin front (keys, the model name, the switch between versions);
* :mod:`.llama_cpp`: the CPU engine in router mode; :mod:`.gguf`: GGUF conversion;
* :mod:`.keys`: API keys, stored only hashed.

Needs the ``serve`` extra (Starlette, uvicorn) and the llama.cpp build of
``scripts/build-llama-server.sh``; the conversions need the ``train`` extra (torch,
transformers) in the process that runs them.
"""
