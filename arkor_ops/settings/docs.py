"""The environment tables in ``docs/``, rendered from the settings' field descriptions.

A table sits between ``<!-- settings:NAME -->`` and ``<!-- /settings:NAME -->`` in a Markdown
file; :func:`update_docs` rewrites each one from :data:`GROUPS`, and a test fails when a
committed table differs (``arkor-ops settings --write-docs`` regenerates them).
"""

from __future__ import annotations

import json
import re
import sys
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from arkor_ops.settings._common import env_names
from arkor_ops.settings.flows import BackendChoiceSettings, FlowSettings
from arkor_ops.settings.kubernetes import KubernetesSettings
from arkor_ops.settings.local import LocalSettings
from arkor_ops.settings.registry import MlflowRegistrySettings
from arkor_ops.settings.run import RunSettings
from arkor_ops.settings.s3 import S3Settings
from arkor_ops.settings.secrets import SECRET_ENV
from arkor_ops.settings.serving import EndpointPodSettings, ServingSettings
from arkor_ops.settings.sidecar import SidecarSettings
from arkor_ops.settings.worker import WorkerEnvSettings

#: Each documented group: its name in the markers, and its class.
GROUPS: dict[str, type[BaseSettings]] = {
    "run": RunSettings,
    "worker": WorkerEnvSettings,
    "sidecar": SidecarSettings,
    "local": LocalSettings,
    "kubernetes": KubernetesSettings,
    "s3": S3Settings,
    "backend": BackendChoiceSettings,
    "flows": FlowSettings,
    "registry": MlflowRegistrySettings,
    "serving": ServingSettings,
    "endpoint_pod": EndpointPodSettings,
}
#: Every table :func:`render` knows: the groups, then the list of secret variables.
NAMES = (*GROUPS, "secrets")
#: Groups whose table leaves out what a parent group's table already lists.
_PARENTS: dict[str, type[BaseSettings]] = {"worker": RunSettings, "sidecar": RunSettings}
REGENERATE = "arkor-ops settings --write-docs"
_BLOCK = re.compile(r"(<!-- settings:(\w+) -->\n)(.*?)(<!-- /settings:\2 -->)", re.DOTALL)


def _default(info: Any) -> str:
    """How the table shows a field's default (machine-independent: ``~``, "this Python")."""
    if info.default is PydanticUndefined and info.default_factory is None:
        return "required"
    value = info.default_factory() if info.default_factory is not None else info.default
    if value is None:
        return "—"
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if value == "":
        text = "empty"
    elif value == sys.executable:
        text = "this Python"
    elif isinstance(value, bool):
        text = f"`{str(value).lower()}`"
    elif isinstance(value, (dict, list, tuple)):
        text = f"`{json.dumps(value)}`"
    elif isinstance(value, Path):
        text = f"`{str(value).replace(str(Path.home()), '~')}`"
    else:
        text = f"`{value}`"
    return text


def markdown_table(cls: type[BaseSettings], *, skip: type[BaseSettings] | None = None) -> str:
    """The Markdown table of ``cls``'s variables: name, default, description.

    Args:
        cls: a settings group.
        skip: leave out the fields this (parent) group already documents.

    Returns:
        The table, ending with a newline.
    """
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for field, info in cls.model_fields.items():
        if skip is not None and field in skip.model_fields:
            continue
        names = ", ".join(f"`{n}`" for n in env_names(cls, field)[:1])
        description = (info.description or "").replace("|", "\\|")
        rows.append(f"| {names} | {_default(info)} | {description} |")
    return "\n".join(rows) + "\n"


def secrets_table() -> str:
    """The table of the secret variables (:data:`~arkor_ops.settings.SECRET_ENV`)."""
    rows = ["| variable | handling |", "|---|---|"]
    rows += [f"| `{name}` | {_SECRET_NOTE} |" for name in SECRET_ENV]
    return "\n".join(rows) + "\n"


_SECRET_NOTE = "secret: scrubbed from logs and events, never sent to MLflow"


def render(name: str) -> str:
    """The table of the group called ``name`` (a key of :data:`GROUPS`, or ``secrets``)."""
    if name == "secrets":
        return secrets_table()
    return markdown_table(GROUPS[name], skip=_PARENTS.get(name))


def update_text(text: str) -> str:
    """``text`` with each settings block replaced by its generated table.

    Raises:
        KeyError: a block names a group that does not exist.
    """
    return _BLOCK.sub(lambda m: m.group(1) + render(m.group(2)) + m.group(4), text)


def blocks(text: str) -> list[str]:
    """The group names of the settings blocks in ``text``, in order."""
    return [m.group(2) for m in _BLOCK.finditer(text)]


def update_docs(docs_dir: Path) -> list[Path]:
    """Rewrite every settings block of ``docs_dir/*.md``; returns the files that changed."""
    changed = []
    for path in sorted(docs_dir.glob("*.md")):
        text = path.read_text(encoding="utf-8")
        new = update_text(text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed
