"""Configs as users write them: Arkor docs configs load unchanged; bad ones name each field."""

from __future__ import annotations

import json

import pytest

from arkor_ops import ConfigError, TrainerConfig, create_trainer, validate_config
from tests.core.helpers import CONFIG


def test_a_config_from_the_arkor_docs_validates_unchanged():
    config = validate_config(CONFIG)
    assert config.lora is not None
    assert (config.lora.r, config.lora.alpha, config.lora.load_in_4bit) == (16, 16, True)
    assert config.max_steps == 100
    assert config.dataset.type == "huggingface"
    assert create_trainer(CONFIG).config == config


def test_snake_case_kwargs_and_camel_case_mean_the_same_config():
    snake = create_trainer(
        name="support-bot-v1",
        model="unsloth/gemma-3-270m-it",
        dataset={"type": "huggingface", "name": "arkorlab/triage-demo"},
        lora={"r": 16, "alpha": 16, "load_in_4bit": True},
        max_steps=100,
    )
    camel = create_trainer(**CONFIG)
    assert snake.config == camel.config == validate_config(CONFIG)


def test_omitting_both_max_steps_and_epochs_is_fine():
    config = validate_config({k: v for k, v in CONFIG.items() if k != "maxSteps"})
    assert config.max_steps is None
    assert config.num_train_epochs is None


@pytest.mark.parametrize(
    ("change", "path"),
    [
        ({"maxStep": 100}, "maxStep"),
        ({"max_steps": "many"}, "max_steps"),
        ({"lora": {"r": 0, "alpha": 16}}, "lora.r"),
        ({"lora": {"r": 8, "alpha": 16, "rank": 4}}, "lora.rank"),
        ({"learning_rate": -0.001}, "learning_rate"),
        ({"dataset": {"type": "huggingface"}}, "dataset.name"),
        ({"dataset": {"type": "ftp", "name": "x"}}, "dataset"),
        ({"dataset": {"type": "blob", "url": "ftp://x"}}, "dataset.url"),
        ({"name": ""}, "name"),
        ({"dry_run": "maybe"}, "dry_run"),
    ],
)
def test_a_bad_config_names_the_field_path(change, path):
    with pytest.raises(ConfigError) as info:
        create_trainer({**CONFIG, **change})
    assert path in [p for p, _ in info.value.problems]
    assert path in str(info.value)


def test_every_bad_field_is_reported_at_once():
    bad = {"name": "x", "model": "m", "dataset": {"type": "huggingface"}, "lora": {"r": -1}}
    with pytest.raises(ConfigError) as info:
        validate_config({**bad, "epochs": 3})
    paths = {p for p, _ in info.value.problems}
    assert {"dataset.name", "lora.r", "lora.alpha", "epochs"} <= paths


def test_config_and_keyword_fields_together_is_an_error():
    with pytest.raises(TypeError, match="not both"):
        create_trainer(CONFIG, max_steps=3)


def test_a_validated_config_is_accepted_as_is():
    config = TrainerConfig.model_validate(CONFIG)
    assert create_trainer(config).config is config


SIGNED = (
    "https://alice:pw-9f3@data.example.com/b/rows.jsonl?X-Amz-Signature=sig-7d1e&X-Amz-Expires=60"
)


def test_blob_url_credentials_are_secret_and_come_back_only_from_the_env():
    config = validate_config({**CONFIG, "dataset": {"type": "blob", "url": SIGNED}})
    assert config.dataset.url == "https://data.example.com/b/rows.jsonl"
    assert config.dataset.fetch_url() == SIGNED
    shown = [json.dumps(config.to_wire()), repr(config), str(config), config.model_dump_json()]
    for text in shown:
        assert "sig-7d1e" not in text and "pw-9f3" not in text and "alice" not in text
    assert config.secret_env() == {"ARKOR_DATASET_URL": SIGNED}
    # the worker gets the wire form plus the Secret's env, and downloads with the full URL
    again = TrainerConfig.from_wire(config.to_wire(), config.secret_env())
    assert again.dataset.fetch_url() == SIGNED and again.config_hash() == config.config_hash()
    assert TrainerConfig.from_wire(config.to_wire()).dataset.fetch_url() == config.dataset.url


@pytest.mark.parametrize(
    "dataset",
    [
        {"type": "blob", "url": "http://data.example.com/d.jsonl", "token": "tok-1"},
        {"type": "blob", "url": "http://data.example.com/d.jsonl?sig=abc"},
        {"type": "blob", "url": "http://u:p@10.0.0.7/d.jsonl"},
    ],
)
def test_credentials_over_plain_http_are_refused(dataset):
    with pytest.raises(ConfigError) as info:
        validate_config({**CONFIG, "dataset": dataset})
    assert "dataset" in str(info.value) and "https://" in str(info.value)
    assert "abc" not in str(info.value) and "tok-1" not in str(info.value)


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost", "[::1]:9000"])
def test_credentials_over_http_to_loopback_are_allowed(host):
    config = validate_config(
        {**CONFIG, "dataset": {"type": "blob", "url": f"http://{host}/d.jsonl?sig=abc"}}
    )
    assert config.dataset.url == f"http://{host}/d.jsonl"
