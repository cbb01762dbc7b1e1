"""The environment tables in docs/ are the ones generated from the settings' descriptions."""

from __future__ import annotations

from pathlib import Path

import pytest

from arkor_ops.settings.docs import NAMES, REGENERATE, blocks, render, update_text

DOCS = Path(__file__).resolve().parents[2] / "docs"
DOC_FILES = sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_each_settings_table_in_the_docs_is_up_to_date(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if update_text(text) != text:
        stale = [name for name in blocks(text) if render(name) not in text]
        pytest.fail(f"docs/{path.name}: settings tables {stale} are out of date; run {REGENERATE}")


def test_every_settings_group_is_documented_somewhere() -> None:
    documented = {name for path in DOC_FILES for name in blocks(path.read_text("utf-8"))}
    assert documented == set(NAMES)


def test_a_changed_table_is_found_and_rewritten() -> None:
    fresh = f"intro\n<!-- settings:sidecar -->\n{render('sidecar')}<!-- /settings:sidecar -->\n"
    stale = fresh.replace("`8377`", "`8378`")
    assert stale != fresh and update_text(stale) == fresh


def test_the_command_prints_a_group_and_rewrites_a_docs_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from arkor_ops.cli import main

    assert main(["settings", "sidecar"]) == 0
    assert "| `ARKOR_SIDECAR_PORT` | `8377` |" in capsys.readouterr().out
    doc = tmp_path / "page.md"
    doc.write_text("<!-- settings:s3 -->\nold\n<!-- /settings:s3 -->\n", encoding="utf-8")
    assert main(["settings", "--write-docs", str(tmp_path)]) == 0
    assert render("s3") in doc.read_text(encoding="utf-8")
