"""Serve the trained adapter on the CPU engine and ask it a held-out ticket, beside transformers.

    python examples/triage/serve.py JOB_ID|RESULT.json

Starts a local endpoint (:class:`arkor_ops.serving.endpoint.LocalEndpoint`, what
``arkor-ops serve`` runs): Gemma 3 270M converted to GGUF, the run's final adapter fetched from
``$ARKOR_STORAGE_URI``, checked against its manifest and converted, llama-server in router mode
behind the gateway with an API key. The official ``openai`` client asks the first ticket of
``test.jsonl``; the same adapter then answers it in transformers + peft (greedy, the same
length, stopping where a chat server stops: at the end of the turn), and the two answers' JSON
fields are shown side by side, with a verdict (the same fields, or how they differ). Exit code
0 once the endpoint answered. ``make demo`` runs it last.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
FIELDS = ("category", "urgency", "summary", "nextAction")
MAX_TOKENS = 64


def fields(text: str | None) -> dict[str, Any] | None:
    """The answer's JSON object, or None when it is not one."""
    try:
        value = json.loads(text or "")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def in_transformers(base: Path, adapter: Path, messages: list[dict[str, str]]) -> str:
    """The adapter's greedy answer in transformers + peft."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arkor_ops.worker.evaluate import stop_tokens

    tok = AutoTokenizer.from_pretrained(base)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
    stop = stop_tokens(tok, model.generation_config.eos_token_id)  # <end_of_turn> too, as servers
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False, eos_token_id=stop)
    return str(tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)).strip()


def main() -> int:
    """Serve, ask, compare."""
    import openai

    from arkor_ops.serving.endpoint import LocalEndpoint
    from arkor_ops.settings.worker import model_cache_dir
    from arkor_ops.storage import RunLayout
    from arkor_ops.worker.models import prepare_gemma

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("job_id", help="the run, or the file `arkor-ops start --result-file` wrote")
    args = parser.parse_args()
    if Path(args.job_id).is_file():
        args.job_id = json.loads(Path(args.job_id).read_text())["job"]["id"]
    storage = os.environ.get("ARKOR_STORAGE_URI")
    if not storage:
        sys.exit("ARKOR_STORAGE_URI is not set: the run's storage, as for the training run")
    final = RunLayout(storage, args.job_id).final
    base = prepare_gemma(model_cache_dir())
    messages = json.loads((HERE / "test.jsonl").read_text().splitlines()[0])["messages"]
    ticket, expected = messages[:-1], messages[-1]["content"]
    console = Console(highlight=False)
    with tempfile.TemporaryDirectory(prefix="arkor-demo-serve-") as tmp:
        with console.status("converting Gemma 3 270M to GGUF and starting llama-server"):
            endpoint = LocalEndpoint("triage", base, Path(tmp)).start()
        try:
            with console.status(f"loading the adapter {final} (verified, converted)"):
                endpoint.deploy("1", final)
            key = endpoint.keys.create("demo")
            client = openai.OpenAI(base_url=endpoint.url + "/v1", api_key=key, max_retries=0)
            answer = client.chat.completions.create(
                model="triage", messages=ticket, max_tokens=MAX_TOKENS, temperature=0
            )
            served = (answer.choices[0].message.content or "").strip()
            console.print(f"endpoint {endpoint.url}/v1 answered as {answer.model}")
        finally:
            endpoint.close()
        with console.status("the same adapter in transformers + peft"):
            reference = in_transformers(base, _download(final, Path(tmp)), ticket)
    console.print(compare(served, reference, expected))
    return 0


def compare(served: str, reference: str, expected: str) -> Table:
    """The two answers side by side, titled with the verdict."""
    got, ref = fields(served), fields(reference)
    if got is not None and ref is not None:
        verdict = "the same JSON fields" if set(got) == set(ref) else "DIFFERENT JSON fields"
    else:
        kinds = f"endpoint {'JSON' if got else 'not JSON'}, transformers "
        kinds += "JSON" if ref else "not JSON"
        verdict = f"{'identical' if served == reference else 'different'} answers ({kinds})"
    table = Table(
        title=f"the first held-out ticket, endpoint (GGUF, llama.cpp) vs transformers: {verdict}",
        caption=f"expected: {expected}",
    )
    table.add_column("field")
    table.add_column("endpoint", overflow="fold")
    table.add_column("transformers", overflow="fold")
    if got is None or ref is None:
        table.add_row("answer", served or "(empty)", reference or "(empty)")
    else:
        for name in FIELDS:
            table.add_row(name, str(got.get(name, "-")), str(ref.get(name, "-")))
    return table


def _download(uri: str, tmp: Path) -> Path:
    """The adapter's files, checked against its manifest."""
    from arkor_ops.checkpoints import committed_adapter
    from arkor_ops.storage import open_storage
    from arkor_ops.worker.checkpoints import download_files

    storage = open_storage(uri)
    return download_files(storage, uri, committed_adapter(storage, uri), tmp / "adapter")


if __name__ == "__main__":
    raise SystemExit(main())
