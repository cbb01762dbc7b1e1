"""docs/architecture.md names every module of the package, and only modules that exist."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def documented() -> set[str]:
    """The modules named in the module column of the package's table."""
    text = (REPO / "docs" / "architecture.md").read_text()
    table = text.split("## The package", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            names.update(re.findall(r"`([A-Za-z0-9_/]+)`", cells[1]))
    return names


def test_every_module_is_documented_and_every_documented_module_exists() -> None:
    package = REPO / "arkor_ops"
    modules = {
        str(p.relative_to(package).with_suffix(""))
        for p in package.rglob("*.py")
        if "__pycache__" not in p.parts
    }
    names = documented()
    assert modules - names == set(), "add these to docs/architecture.md"
    assert names - modules == set(), "these are in docs/architecture.md but not in arkor_ops/"
