"""The triage example: its trainer file, and a dataset that its generator reproduces."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from arkor_ops.loader import load_trainer
from tests.local.helpers import REPO

EXAMPLE = REPO / "examples" / "triage"
KEYS = {"category", "urgency", "summary", "nextAction"}


def test_the_example_trainer_is_the_demo_config() -> None:
    config = load_trainer(EXAMPLE / "trainer.py").config
    assert config.model == "google/gemma-3-270m"
    assert config.lora is not None and (config.lora.r, config.lora.alpha) == (16, 16)
    assert config.train_on_responses_only is True
    assert config.dataset_format is not None and config.dataset_format.is_chat
    assert config.save_steps is not None and 40 <= (config.max_steps or 0) <= 120
    assert Path(config.dataset.path) == EXAMPLE / "train.jsonl"  # type: ignore[union-attr]


def test_the_dataset_is_chat_rows_answering_triage_json() -> None:
    train = (EXAMPLE / "train.jsonl").read_text().splitlines()
    test = (EXAMPLE / "test.jsonl").read_text().splitlines()
    assert len(train) >= 300 and len(test) >= 20
    tickets = set()
    for line in train + test:
        messages = json.loads(line)["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant"]
        assert set(json.loads(messages[2]["content"])) == KEYS
        tickets.add(messages[1]["content"])
    assert len(tickets) == len(train) + len(test)  # no test ticket was seen in training


def test_the_generator_reproduces_the_committed_files() -> None:
    spec = importlib.util.spec_from_file_location("make_dataset", EXAMPLE / "make_dataset.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    train, test = module.build(360, 40)
    as_lines = [json.dumps(r, ensure_ascii=False) for r in train + test]
    committed = (EXAMPLE / "train.jsonl").read_text().splitlines()
    committed += (EXAMPLE / "test.jsonl").read_text().splitlines()
    assert as_lines == committed


def test_the_checkpoint_schema_admits_every_reference_answer() -> None:
    """`on_checkpoint` constrains each checkpoint's answer to TRIAGE_SCHEMA: a label or length
    the dataset uses but the schema refuses would force a wrong answer."""
    import jsonschema

    spec = importlib.util.spec_from_file_location("triage_trainer", EXAMPLE / "trainer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = (EXAMPLE / "train.jsonl").read_text().splitlines()
    lines += (EXAMPLE / "test.jsonl").read_text().splitlines()
    for n, line in enumerate(lines, 1):
        answer = json.loads(json.loads(line)["messages"][2]["content"])
        try:
            jsonschema.validate(answer, module.TRIAGE_SCHEMA)
        except jsonschema.ValidationError as exc:
            raise AssertionError(f"row {n}: {exc.message}") from None
    assert module.TICKET[-1]["role"] == "user"  # the question, without its answer
