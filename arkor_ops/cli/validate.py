"""`arkor-ops validate CONFIG` and `arkor-ops schema`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from arkor_ops.config import TrainerConfig, config_json_schema, validate_config
from arkor_ops.errors import ConfigError
from arkor_ops.loader import EntryError, load_config_data, load_trainer


def register(sub: Any) -> None:
    """Add the commands of this module to the parser."""
    p = sub.add_parser("validate", help="check a trainer file (.py), or a YAML/JSON config")
    p.add_argument("config", type=Path, help="Python file exporting `trainer`, or .yaml/.yml/.json")
    p.set_defaults(func=run_validate)
    s = sub.add_parser("schema", help="print the JSON Schema of the trainer config")
    s.set_defaults(func=run_schema)


def load_any_config(path: Path) -> TrainerConfig:
    """The validated config in ``path`` (a trainer file, YAML or JSON)."""
    if path.suffix == ".py":
        trainer = load_trainer(path)
        config: TrainerConfig = trainer.config
        return config
    return validate_config(load_config_data(path))


def load_or_report(path: Path) -> TrainerConfig | int:
    """The validated config in ``path``; or, after printing why not on stderr, the exit code:
    1 for an invalid config (each bad field path on a line), 2 for a file that cannot load."""
    try:
        return load_any_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid config", file=sys.stderr)
        for field, msg in exc.problems:
            print(f"  {field or '<root>'}: {msg}", file=sys.stderr)
        return 1
    except EntryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_validate(args: argparse.Namespace) -> int:
    """Validate a config; print each bad field path; exit 1 when invalid."""
    config = load_or_report(args.config)
    if isinstance(config, int):
        return config
    print(f"{args.config}: ok ({config.name}: {config.model}, dataset {config.dataset.type})")
    return 0


def run_schema(args: argparse.Namespace) -> int:
    """Print the config's JSON Schema."""
    print(json.dumps(config_json_schema(), indent=2))
    return 0
