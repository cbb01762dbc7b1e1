"""``infer()`` answered by the training process itself, between two optimizer steps.

The sidecar hands each request over a Unix socket beside the event log (``infer.sock``, see
:mod:`arkor_ops.sidecar.app`). A thread of this process accepts it, checks it and queues it;
the training thread answers everything queued at the next step boundary (the ``on_step_end``
callback), so training pauses for exactly as long as the answers take, and each answer reports
that pause (``usage.training_pause_seconds``).

Which weights answer: the checkpoint's. At each save (``on_save``) the trainable parameters
(the LoRA matrices) are copied to CPU memory, for the newest :data:`HELD_CHECKPOINTS`
checkpoints. To answer, the live values are set aside (cloned on their device), the
checkpoint's copied in place, the model generates, and the live values are copied back. Why
not PEFT named adapters: each held adapter would occupy accelerator memory, switching the
active adapter changes which parameters require gradients under the optimizer, and Unsloth's
patched model does not support several adapters; copying values in place keeps every
parameter object (the optimizer's state refers to them) and costs only host memory (a few MB
per checkpoint of a 270M model at rank 16). A request for a step no longer held, or after
training ended, is refused at once with a code the client maps to
:class:`~arkor_ops.errors.CheckpointUnavailableError`.

JSON is enforced while decoding with xgrammar (``xgrammar.contrib.hf.LogitsProcessor``, a
transformers logits processor): it compiles the JSON Schema to a grammar and masks, at every
token, what cannot continue a valid answer, so even a poor model's output parses and matches
(strict mode: no extra properties; compact whitespace, so an answer cannot run on in spaces).
Why xgrammar: it is maintained, the default structured-output engine of vLLM and SGLang (the
engines the serving stage uses, so a checkpoint and its served adapter agree on a schema), has
binary wheels for CPU and CUDA, and works on transformers' ``generate`` unchanged.
lm-format-enforcer (pure Python, a ``prefix_allowed_tokens_fn``) was slower per token and
outlines pulls in far more.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from arkor_ops.inference import (
    HELD_CHECKPOINTS,
    NOT_HELD,
    RUN_ENDED,
    InferRequest,
    NamedToolChoice,
    socket_address,
    worker_line,
)

log = logging.getLogger(__name__)

#: Most requests waiting for a step boundary; one more is refused (429).
MAX_PENDING = 16
DEFAULT_MAX_TOKENS = 256


@dataclass
class _Pending:
    conn: socket.socket
    step: int
    request: InferRequest
    received: float = field(default_factory=time.perf_counter)


class _GoneError(Exception):
    """The sidecar closed the connection: stop generating."""


def _send(conn: socket.socket, **fields: Any) -> None:
    try:
        conn.sendall(worker_line(**fields))
    except OSError as exc:
        raise _GoneError from exc


class InferServer:
    """The socket, the held checkpoints and the queue (see the module docstring)."""

    def __init__(self, path: Path, job_id: str, *, held: int = HELD_CHECKPOINTS) -> None:
        self.path = path
        self.job_id = job_id
        self.held = held
        self._weights: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Pending] = queue.Queue()
        self._finished = False
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._engine: _Engine | None = None
        self.paused_seconds = 0.0
        self.answered = 0

    # -- the socket (its own thread) -----------------------------------------------------------

    def start(self) -> None:
        """Listen on the socket (replacing a stale one left by a previous process)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with socket_address(self.path) as address:
            sock.bind(address)
        sock.listen(MAX_PENDING)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, name="arkor-infer", daemon=True)
        self._thread.start()
        log.info("answering infer() on %s", self.path)

    def _accept(self) -> None:
        assert self._sock is not None
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            try:
                self._receive(conn)
            except Exception as exc:
                log.warning("infer: dropping a request: %s", exc)
                conn.close()

    def _receive(self, conn: socket.socket) -> None:
        conn.settimeout(10.0)
        with conn.makefile("rb") as stream:
            line = stream.readline(2**22)
        conn.settimeout(None)
        try:
            data = json.loads(line)
            step = int(data["step"])
            request = InferRequest.model_validate(data["request"])
        except (ValueError, KeyError, TypeError) as exc:
            detail = str(exc) if isinstance(exc, ValidationError) else "malformed request"
            _refuse(conn, 400, "invalid_request", detail)
            return
        with self._lock:
            finished, held = self._finished, list(self._weights)
        if finished:
            _refuse(conn, 410, RUN_ENDED, "training is over")
        elif step not in held:
            _refuse(conn, 409, NOT_HELD, f"it holds steps {held or 'none'}")
        elif self._queue.qsize() >= MAX_PENDING:
            _refuse(conn, 429, "busy", f"{MAX_PENDING} requests already wait; retry later")
        else:
            self._queue.put(_Pending(conn, step, request))

    # -- the training thread -------------------------------------------------------------------

    def snapshot(self, step: int, model: Any) -> None:
        """Hold ``step``'s trainable weights in host memory (the oldest beyond ``held`` go)."""
        if self.held <= 0:
            return
        weights = {
            name: p.detach().to("cpu", copy=True)
            for name, p in model.named_parameters()
            if p.requires_grad
        }
        with self._lock:
            self._weights[step] = weights
            while len(self._weights) > self.held:
                self._weights.popitem(last=False)

    def serve(self, model: Any, tokenizer: Any, backend: str) -> None:
        """Answer every queued request (called between optimizer steps)."""
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return
            try:
                self._answer(pending, model, tokenizer, backend)
            except _GoneError:
                log.info("infer: the client left before the answer for step %d", pending.step)
            except Exception as exc:
                log.warning(
                    "infer for step %d failed: %s: %s", pending.step, type(exc).__name__, exc
                )
                with contextlib.suppress(_GoneError):
                    _send(pending.conn, error=f"{type(exc).__name__}: {exc}"[:500], status=500)
            finally:
                pending.conn.close()

    def finish(self) -> None:
        """Training is over: refuse what waits and whatever comes later (``run_ended``)."""
        with self._lock:
            self._finished = True
            self._weights.clear()
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                break
            _refuse(pending.conn, 410, RUN_ENDED, "training is over")

    def close(self) -> None:
        """Stop listening and remove the socket."""
        self.finish()
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        if self.answered:
            log.info(
                "infer: %d answers paused training for %.2f s in all",
                self.answered,
                self.paused_seconds,
            )

    def _answer(self, pending: _Pending, model: Any, tokenizer: Any, backend: str) -> None:
        import torch

        with self._lock:
            weights = self._weights.get(pending.step)
        if weights is None:
            _refuse(pending.conn, 409, NOT_HELD, "it was replaced by newer checkpoints meanwhile")
            return
        if self._engine is None:
            self._engine = _Engine(model, tokenizer)
        began = time.perf_counter()
        params = [(n, p) for n, p in model.named_parameters() if n in weights]
        was_training = model.training
        with torch.no_grad():
            live = [p.detach().clone() for _, p in params]
            for name, p in params:
                p.copy_(weights[name].to(p.device))
        try:
            _inference_mode(model, backend, on=True)
            model.eval()
            self._engine.generate(pending, self.job_id, began)
        finally:
            with torch.no_grad():
                for (_, p), value in zip(params, live, strict=True):
                    p.copy_(value)
            _inference_mode(model, backend, on=False)
            model.train(was_training)
            paused = time.perf_counter() - began
            self.paused_seconds += paused
            self.answered += 1
            log.info("infer for step %d: training paused %.3f s", pending.step, paused)


def _refuse(conn: socket.socket, status: int, code: str, detail: str) -> None:
    with contextlib.suppress(_GoneError):
        _send(conn, error=detail, status=status, code=code)
    conn.close()


def _inference_mode(model: Any, backend: str, *, on: bool) -> None:
    if backend != "unsloth":
        return
    from unsloth import FastLanguageModel

    if on:
        FastLanguageModel.for_inference(model)
    else:
        FastLanguageModel.for_training(model)


class _Engine:
    """Generation for one model: the chat template, xgrammar's compiled grammars, streaming."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model
        self.tok = tokenizer
        vocab = tokenizer.get_vocab()
        ends = {vocab[t] for t in ("<end_of_turn>", "<|im_end|>", "<|eot_id|>") if t in vocab}
        if tokenizer.eos_token_id is not None:
            ends.add(int(tokenizer.eos_token_id))
        self.stops = sorted(ends)
        self._compiler: Any = None

    def _grammar_processor(self, request: InferRequest) -> tuple[Any, bool]:
        """xgrammar's logits processor for the request (None: free text), and whether the
        answer is a forced tool call."""
        schema, tool_call = _constraint(request)
        if schema is None:
            return None, False
        import xgrammar as xgr

        if self._compiler is None:
            vocab_size = self.model.get_output_embeddings().weight.shape[0]
            info = xgr.TokenizerInfo.from_huggingface(
                self.tok, vocab_size=vocab_size, stop_token_ids=self.stops
            )
            self._compiler = xgr.GrammarCompiler(info)
        if schema == "json_object":
            compiled = self._compiler.compile_builtin_json_grammar()
        else:
            compiled = self._compiler.compile_json_schema(
                json.dumps(bounded_strings(schema)), any_whitespace=False, strict_mode=True
            )
        return xgr.contrib.hf.LogitsProcessor(compiled), tool_call

    def generate(self, pending: _Pending, job_id: str, began: float) -> None:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        request = pending.request
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        tools = None
        if request.tools and request.tool_choice != "none":
            tools = [t.model_dump(exclude_none=True) for t in request.tools]
        encoded = self.tok.apply_chat_template(
            messages, tools=tools, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        device = next(self.model.parameters()).device
        input_ids = encoded["input_ids"].to(device)
        processor, tool_call = self._grammar_processor(request)
        answer = _Answer(
            pending.conn,
            self.tok,
            job_id=job_id,
            step=pending.step,
            tool_call=tool_call,
            stops=self.stops,
        )
        answer.open()
        temperature = 1.0 if request.temperature is None else request.temperature
        max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_tokens,
            "do_sample": temperature > 0,
            "eos_token_id": self.stops,
            "pad_token_id": self.tok.pad_token_id,
            "streamer": answer,
        }
        if temperature > 0:
            kwargs["temperature"] = temperature
            kwargs["top_p"] = request.top_p or 1.0

        class _ClientGone(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kw: Any) -> Any:
                return torch.full((input_ids.shape[0],), answer.gone, dtype=torch.bool)

        kwargs["stopping_criteria"] = StoppingCriteriaList([_ClientGone()])
        if processor is not None:
            kwargs["logits_processor"] = LogitsProcessorList([processor])
        self.model.generate(
            input_ids=input_ids,
            attention_mask=encoded["attention_mask"].to(device),
            **kwargs,
        )
        if answer.gone:
            raise _GoneError
        answer.close(
            prompt_tokens=int(input_ids.shape[1]),
            max_tokens=max_tokens,
            pause=time.perf_counter() - began,
        )


def _constraint(request: InferRequest) -> tuple[dict[str, Any] | str | None, bool]:
    """The JSON Schema the answer must match (``"json_object"``: any object), and whether it is
    a forced tool call."""
    choice = request.tool_choice
    if request.tools and (choice == "required" or isinstance(choice, NamedToolChoice)):
        wanted = choice.function.get("name") if isinstance(choice, NamedToolChoice) else None
        options = [
            {
                "type": "object",
                "properties": {
                    "name": {"const": t.function.name},
                    "arguments": t.function.parameters or {"type": "object"},
                },
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
            for t in request.tools
            if wanted is None or t.function.name == wanted
        ]
        return (options[0] if len(options) == 1 else {"anyOf": options}), True
    fmt = request.response_format
    if fmt is None or fmt.type == "text":
        return None, False
    if fmt.type == "json_object":
        return "json_object", False
    assert fmt.json_schema is not None
    return fmt.json_schema.schema_, False


def bounded_strings(node: Any) -> Any:
    """``node`` with each length-bounded string (``minLength``/``maxLength``, no ``pattern``)
    turned into the same bounds as a ``pattern`` of JSON-safe characters.

    xgrammar 0.2 decodes such strings from any character but quote, backslash and line breaks,
    so an answer could hold a raw control character (``\\x1a``), which is not JSON; its
    ``pattern`` strings have no such gap. (The pattern also leaves out escapes.)
    """
    if isinstance(node, list):
        return [bounded_strings(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: bounded_strings(value) for key, value in node.items()}
    lengths = "minLength" in out or "maxLength" in out
    if (
        out.get("type") == "string"
        and lengths
        and not ({"pattern", "enum", "const", "format"} & set(out))
    ):
        low, high = out.pop("minLength", 0), out.pop("maxLength", "")
        out["pattern"] = f'^[^\\x00-\\x1f"\\\\]{{{low},{high}}}$'
    return out


class _Answer:
    """A transformers streamer that sends each new piece of text as a chunk."""

    def __init__(
        self,
        conn: socket.socket,
        tok: Any,
        *,
        job_id: str,
        step: int,
        tool_call: bool,
        stops: list[int],
    ) -> None:
        self.conn = conn
        self.tok = tok
        self.tool_call = tool_call
        self.stops = set(stops)
        self.ids: list[int] = []
        self.sent = ""
        self.gone = False
        self._prompt_seen = False
        self.base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": f"{job_id}@step-{step}",
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
        if self.gone:
            return
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        try:
            _send(self.conn, chunk={**self.base, "choices": [choice], **extra})
        except _GoneError:
            self.gone = True

    def open(self) -> None:
        """The first chunk: the role."""
        self._chunk({"role": "assistant", "content": ""})

    def put(self, value: Any) -> None:
        """transformers: the prompt first, then each new token."""
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        if self.tool_call:
            return  # sent whole, as tool_calls, at the end
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):
            return  # a character split across tokens: wait for the rest
        if len(text) > len(self.sent) and text.startswith(self.sent):
            self._chunk({"content": text[len(self.sent) :]})
            self.sent = text

    def end(self) -> None:
        """transformers: generation ended (the last chunk is sent by :meth:`close`)."""

    def close(self, *, prompt_tokens: int, max_tokens: int, pause: float) -> None:
        """The last chunk: what is left of the text, why it stopped, the usage."""
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        stopped = bool(self.ids) and self.ids[-1] in self.stops
        finish = "stop" if stopped or len(self.ids) < max_tokens else "length"
        delta: dict[str, Any] = {}
        if self.tool_call:
            try:
                call = json.loads(text)
                delta["tool_calls"] = [
                    {
                        "index": 0,
                        "id": f"call_{uuid.uuid4().hex[:24]}",
                        "type": "function",
                        "function": {
                            "name": call["name"],
                            "arguments": json.dumps(call["arguments"]),
                        },
                    }
                ]
                finish = "tool_calls"
            except (ValueError, KeyError, TypeError):
                delta["content"] = text  # cut off by max_tokens: the raw text
        elif len(text) > len(self.sent) and text.startswith(self.sent):
            delta["content"] = text[len(self.sent) :]
        completion = len([t for t in self.ids if t not in self.stops])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "training_pause_seconds": round(pause, 4),
        }
        self._chunk(delta, finish, usage=usage)
        if not self.gone:
            with contextlib.suppress(_GoneError):
                _send(self.conn, done=True)
