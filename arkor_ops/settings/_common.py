"""What the settings groups share: reading the environment or a mapping; errors that name it."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, TypeVar, get_origin

from pydantic import AliasChoices, ValidationError
from pydantic_settings import BaseSettings

from arkor_ops.errors import ArkorOpsError

S = TypeVar("S", bound=BaseSettings)


class SettingsError(ArkorOpsError, ValueError):
    """The environment is missing a variable or holds a bad value (the message names it)."""


def env_names(cls: type[BaseSettings], field: str) -> list[str]:
    """The environment variables that set ``field`` of ``cls``, in the order they are tried."""
    info = cls.model_fields[field]
    alias = info.validation_alias
    if isinstance(alias, str):
        return [alias]
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    prefix = str(cls.model_config.get("env_prefix", ""))
    return [f"{prefix}{field}".upper()]


def problems(cls: type[BaseSettings], exc: ValidationError) -> str:
    """``NAME: message`` for each bad variable of ``exc``, joined by ``; ``."""
    out = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = [str(p) for p in err["loc"]]
        field = next((f for f in cls.model_fields if f in loc or _is_alias(cls, f, loc)), None)
        name = env_names(cls, field)[0] if field else "_".join(loc).upper()
        if err["type"] == "missing":
            description = cls.model_fields[field].description if field else None
            out.append(f"{name} is not set" + (f": {description}" if description else ""))
        else:
            out.append(f"{name}: {err['msg']}")
    return "; ".join(out)


def _is_alias(cls: type[BaseSettings], field: str, loc: list[str]) -> bool:
    return bool(loc) and loc[0].upper() in env_names(cls, field)


def read(
    cls: type[S],
    env: Mapping[str, str] | None = None,
    *,
    error: type[Exception] = SettingsError,
    what: str = "settings",
    **overrides: Any,
) -> S:
    """``cls`` from ``env`` (default: this process's environment) plus ``overrides``.

    Args:
        cls: the settings group.
        env: the variables to read; default ``os.environ``.
        error: the exception raised for a bad value.
        what: how the message names the group, e.g. ``"local backend settings"``.
        overrides: field values that win over the environment.

    Raises:
        SettingsError: (or ``error``) naming every bad variable.
    """
    try:
        if env is None:
            return cls(**overrides)
        return _from_mapping(cls, env, overrides)
    except ValidationError as exc:
        raise error(f"invalid {what}: {problems(cls, exc)}") from None


def _from_mapping(cls: type[S], env: Mapping[str, str], overrides: dict[str, Any]) -> S:
    """``cls`` reading ``env`` instead of ``os.environ`` (the same parsing and aliases)."""
    data: dict[str, Any] = {}
    ignore_empty = bool(cls.model_config.get("env_ignore_empty", False))
    upper = {k.upper(): v for k, v in env.items()}
    for field in cls.model_fields:
        for name in env_names(cls, field):
            value = upper.get(name.upper())
            if value is None or (ignore_empty and not value.strip()):
                continue
            key = field if cls.model_fields[field].validation_alias is None else name
            data[key] = _decode(cls, field, value)
            break
    data.update(overrides)
    # model_validate skips the environment sources: ``data`` is all there is
    return cls.model_validate(data)


def _decode(cls: type[BaseSettings], field: str, value: str) -> Any:
    """Lists and mappings are JSON in the environment, as pydantic-settings reads them."""
    origin = get_origin(cls.model_fields[field].annotation)
    if origin in (dict, list, tuple, set, frozenset):
        try:
            return json.loads(value)
        except ValueError:
            return value  # validation then names the variable
    return value


def environ() -> Mapping[str, str]:
    """This process's environment (the one place it is read as configuration)."""
    return os.environ
