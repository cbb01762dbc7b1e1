"""Load a trainer or a config from a file: a Python file exporting a trainer, YAML or JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import yaml

from arkor_ops.errors import ArkorOpsError, ConfigError

TRAINER_EXPORTS = ("arkor", "trainer", "default")


class EntryError(ArkorOpsError):
    """A trainer file or config file could not be loaded."""


def load_module(path: Path) -> Any:
    """Import the Python file at ``path`` as a fresh module."""
    if not path.is_file():
        raise EntryError(f"Training entry not found: {path}")
    name = f"arkor_entry_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise EntryError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _is_trainer(obj: Any) -> bool:
    return all(callable(getattr(obj, m, None)) for m in ("start", "wait", "cancel"))


def load_trainer(path: Path) -> Any:
    """The trainer a Python file exports, looked up as Arkor does.

    Order: ``arkor`` (a manifest holding ``trainer``, or a trainer), ``trainer``, ``default``
    (a manifest or a trainer), ``default.trainer``.

    Raises:
        EntryError: the file is missing or exports no trainer.
        ConfigError: the trainer in the file has an invalid config.
    """
    module = load_module(path)
    for attr in TRAINER_EXPORTS:
        obj = getattr(module, attr, None)
        if obj is None:
            continue
        if _is_trainer(obj):
            return obj
        inner = obj.get("trainer") if isinstance(obj, dict) else getattr(obj, "trainer", None)
        if inner is not None and _is_trainer(inner):
            return inner
    raise EntryError(
        f"{path}: training entry must export `trainer` (or `arkor`, or a default) "
        "made with arkor_ops.create_trainer(...)"
    )


def load_config_data(path: Path) -> dict[str, Any]:
    """Raw config data from a YAML or JSON file."""
    if not path.is_file():
        raise EntryError(f"config file not found: {path}")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise EntryError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError([("", f"{path}: expected a mapping of config fields")])
    return data
