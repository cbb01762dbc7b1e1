"""Answer unseen tickets with the base model and with the trained adapter, side by side.

    python examples/triage/compare.py JOB_ID|RESULT.json [--count 2]

Reads the adapter from the run's storage (`{ARKOR_STORAGE_URI}/{job_id}/final/`, `s3://` or
`file://`), loads the base model the run used (its `config.json`), and generates greedily with
the chat template, stopping at `<end_of_turn>`. An answer is shown up to the end of its first
JSON object (`…` marks that the model went on), with a verdict: is it triage JSON, are category
and urgency right.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent


def load_tickets(count: int) -> list[dict[str, Any]]:
    """The first ``count`` held-out conversations."""
    lines = (HERE / "test.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines[:count]]


def generate(model: Any, tok: Any, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    """Greedy answer to the conversation's system + user turns."""
    import torch

    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    inputs = tok(prompt, return_tensors="pt", add_special_tokens=False)
    stop = [tok.convert_tokens_to_ids("<end_of_turn>"), tok.eos_token_id]
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=[t for t in stop if t is not None],
            pad_token_id=tok.pad_token_id,
        )
    text: str = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    return text.strip()


def first_json(text: str) -> dict[str, Any] | None:
    """The first JSON object in ``text`` (the answer), or None when there is none."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def shown(text: str) -> str:
    """The answer as shown: cut after its first JSON object (marked with …) when it has one."""
    obj = first_json(text)
    if obj is None:
        return text or "(empty)"
    start = text.find("{")
    _, end = json.JSONDecoder().raw_decode(text[start:])
    rest = text[start + end :].strip()
    return text[: start + end] + (" …" if rest else "")


def verdict(text: str, expected: dict[str, Any]) -> str:
    """Whether the answer is triage JSON, and whether category and urgency are right."""
    obj = first_json(text)
    if obj is None or not {"category", "urgency"} <= obj.keys():
        return "no triage JSON"
    marks = [
        f"{key} {'✓' if obj.get(key) == expected[key] else '✗'}" for key in ("category", "urgency")
    ]
    return "JSON ✓, " + ", ".join(marks)


def main() -> int:
    """Print base vs. adapter answers for a few test tickets."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job_id", help="the run, or the file `arkor-ops start --result-file` wrote")
    parser.add_argument("--count", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--storage-uri", default=os.environ.get("ARKOR_STORAGE_URI"))
    args = parser.parse_args()
    if Path(args.job_id).is_file():  # job ids have no "/": a path is a result file
        args.job_id = json.loads(Path(args.job_id).read_text())["job"]["id"]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from arkor_ops.backends.local import LocalSettings
    from arkor_ops.storage import RunLayout, open_storage
    from arkor_ops.worker.models import resolve_model
    from arkor_ops.worker.settings import default_model_cache

    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    storage_uri = args.storage_uri or f"file://{LocalSettings().runs_dir.resolve()}/storage"
    layout = RunLayout(storage_uri, args.job_id)
    storage = open_storage(storage_uri)
    config = json.loads(storage.get_bytes(layout.config))
    base_path = resolve_model(config["model"], default_model_cache()).path
    console = Console(highlight=False, soft_wrap=True)
    with tempfile.TemporaryDirectory() as tmp:
        adapter_dir = Path(tmp) / "adapter"
        if not storage.download_dir(layout.final, adapter_dir):
            console.print(f"no adapter under {layout.final}")
            return 1
        tok = AutoTokenizer.from_pretrained(
            adapter_dir if (adapter_dir / "tokenizer_config.json").exists() else base_path
        )
        base = AutoModelForCausalLM.from_pretrained(base_path)
        base.eval()
        tickets = load_tickets(args.count)
        before = [generate(base, tok, t["messages"], args.max_new_tokens) for t in tickets]
        tuned = PeftModel.from_pretrained(base, adapter_dir)
        tuned.eval()
        after = [generate(tuned, tok, t["messages"], args.max_new_tokens) for t in tickets]
    for i, ticket in enumerate(tickets):
        table = Table(title=f"unseen ticket {i + 1}", show_lines=True, expand=True)
        table.add_column("", style="bold", width=10)
        table.add_column("text", overflow="fold")
        table.add_row("ticket", ticket["messages"][1]["content"])
        expected = ticket["messages"][2]["content"]
        table.add_row("base", shown(before[i]))
        table.add_row("adapter", shown(after[i]))
        table.add_row("expected", expected)
        table.add_row(
            "verdict",
            f"base: {verdict(before[i], json.loads(expected))}\n"
            f"adapter: {verdict(after[i], json.loads(expected))}",
        )
        console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
