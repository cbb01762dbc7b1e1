"""`arkor-ops init`: what it writes, that it never overwrites, its errors, and the templates'
bundled data (every reference answer fits the schema its checkpoints answer with)."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import tomllib
from pathlib import Path
from types import ModuleType

import jsonschema
import pytest
import yaml

from arkor_ops.cli import main
from arkor_ops.cli.init import FILES, TEMPLATES
from arkor_ops.config import validate_config
from tests.local.helpers import REPO

PACKAGE_TEMPLATES = REPO / "arkor_ops" / "templates"
WRITTEN = [relative for relative, _ in FILES]


def init(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(["init", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def report(lines: list[str]) -> dict[str, str]:
    """``{path: status}`` from the one line a file that init prints."""
    pairs = [line.split() for line in lines if line.split()[:1] in (["created"], ["kept"])]
    return {path: status for status, path in pairs}


def load_module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"template_{path.parent.name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("template", TEMPLATES)
def test_init_writes_the_project_and_reports_each_file_created(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], template: str
) -> None:
    target = tmp_path / "new" / "project"  # made, with its parents
    code, lines, err = init(capsys, str(target), "--template", template)
    assert code == 0, err
    assert report(lines) == dict.fromkeys(WRITTEN, "created")
    for relative, source in FILES:
        assert (target / relative).read_bytes() == (
            PACKAGE_TEMPLATES / template / source
        ).read_bytes()
    assert f"arkor-ops start {target / 'trainer.py'} --backend local" in lines[-1]
    config = load_module(target / "trainer.py").trainer.config
    assert config.name == f"{template}-run"
    assert Path(config.dataset.path) == target / "data" / "train.jsonl"


def test_the_default_template_is_triage_and_the_default_dir_is_here(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, lines, _ = init(capsys)
    assert code == 0
    assert report(lines) == dict.fromkeys(WRITTEN, "created")
    assert (tmp_path / "trainer.py").read_bytes() == (
        PACKAGE_TEMPLATES / "triage" / "trainer.py"
    ).read_bytes()


def test_a_second_init_keeps_every_file_and_a_changed_one_stays_changed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert init(capsys, str(tmp_path), "--template", "translate")[0] == 0
    (tmp_path / "trainer.py").write_text("# mine\n")
    (tmp_path / "data" / "test.jsonl").unlink()  # a missing file comes back, alone
    code, lines, _ = init(capsys, str(tmp_path), "--template", "redaction")
    assert code == 0
    assert report(lines) == {**dict.fromkeys(WRITTEN, "kept"), "data/test.jsonl": "created"}
    assert (tmp_path / "trainer.py").read_text() == "# mine\n"
    assert (tmp_path / "README.md").read_bytes() == (
        PACKAGE_TEMPLATES / "translate" / "README.md"
    ).read_bytes()
    code, lines, _ = init(capsys, str(tmp_path), "--template", "translate")
    assert report(lines) == dict.fromkeys(WRITTEN, "kept")


def test_an_unknown_template_names_the_valid_ones_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, err = init(capsys, str(tmp_path / "p"), "--template", "summarize")
    assert code == 2
    assert "unknown template 'summarize'" in err
    assert "triage, translate, redaction" in err
    assert lines == [] and not (tmp_path / "p").exists()


def test_dir_being_a_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("x")
    code, lines, err = init(capsys, str(path))
    assert code == 2
    assert f"{path} exists and is not a folder" in err
    assert lines == [] and path.read_text() == "x"


def test_a_file_in_the_way_of_a_folder_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").write_text("not a folder")
    code, _, err = init(capsys, str(tmp_path))
    assert code == 2
    assert f"{tmp_path / 'data'} is not a folder" in err
    assert not (tmp_path / "trainer.py").exists()  # checked before any file is written
    assert (tmp_path / "data").read_text() == "not a folder"


def test_the_wheel_ships_every_template_file() -> None:
    """pyproject's package-data patterns cover each file init reads (a wheel install has them)."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["arkor_ops"]
    for template in TEMPLATES:
        for _, source in FILES:
            relative = f"templates/{template}/{source}"
            assert (REPO / "arkor_ops" / relative).is_file(), relative
            assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative


@pytest.mark.parametrize("template", TEMPLATES)
def test_every_reference_answer_fits_the_checkpoint_schema(template: str) -> None:
    """`on_checkpoint` constrains each answer to SCHEMA: a row the schema refuses would teach an
    answer the checkpoints cannot give."""
    folder = PACKAGE_TEMPLATES / template
    schema = load_module(folder / "trainer.py").SCHEMA
    jsonschema.Draft202012Validator.check_schema(schema)
    train = (folder / "data" / "train.jsonl").read_text("utf-8").splitlines()
    test = (folder / "data" / "test.jsonl").read_text("utf-8").splitlines()
    assert len(train) >= 300 and len(test) >= 20
    questions = set()
    for n, line in enumerate(train + test, 1):
        messages = json.loads(line)["messages"]
        assert [m["role"] for m in messages] == ["system", "user", "assistant"], n
        try:
            jsonschema.validate(json.loads(messages[2]["content"]), schema)
        except jsonschema.ValidationError as exc:
            raise AssertionError(f"{template} row {n}: {exc.message}") from None
        questions.add(messages[1]["content"])
    assert len(questions) == len(train) + len(test)  # no held-out question was trained on


def test_the_triage_data_is_the_examples() -> None:
    """The triage template bundles examples/triage's rows (examples/triage/make_dataset.py)."""
    for name in ("train.jsonl", "test.jsonl"):
        assert (PACKAGE_TEMPLATES / "triage" / "data" / name).read_bytes() == (
            REPO / "examples" / "triage" / name
        ).read_bytes()


@pytest.mark.parametrize("template", ["translate", "redaction"])
def test_the_generator_reproduces_the_committed_rows(template: str) -> None:
    module = load_module(PACKAGE_TEMPLATES / template / "make_dataset.py")
    train, test = module.build(360, 40)
    folder = PACKAGE_TEMPLATES / template / "data"
    for rows, name in ((train, "train.jsonl"), (test, "test.jsonl")):
        lines = [json.dumps(r, ensure_ascii=False) for r in rows]
        assert lines == (folder / name).read_text("utf-8").splitlines()


def test_the_generators_vary_their_rows() -> None:
    """Many templates, each language and each kind of personal data in many rows."""
    counts: dict[str, dict[str, int]] = {}
    for template in ("translate", "redaction"):
        module = load_module(PACKAGE_TEMPLATES / template / "make_dataset.py")
        assert len(module.TEMPLATES) >= 20
        train = (PACKAGE_TEMPLATES / template / "data" / "train.jsonl").read_text("utf-8")
        seen = counts.setdefault(template, {})
        for line in train.splitlines():
            answer = json.loads(json.loads(line)["messages"][2]["content"])
            for label in answer.get("tags", [answer.get("detectedLanguage")]):
                seen[label] = seen.get(label, 0) + 1
    assert set(counts["translate"]) == {"French", "German", "Italian", "Portuguese", "Spanish"}
    assert min(counts["translate"].values()) >= 50
    assert set(counts["redaction"]) == set(module.KINDS)
    assert min(counts["redaction"].values()) >= 20


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_prefect_deployment_runs_the_same_config(template: str) -> None:
    folder = PACKAGE_TEMPLATES / template
    (deployment,) = yaml.safe_load((folder / "prefect.yaml").read_text())["deployments"]
    assert deployment["entrypoint"] == "arkor_ops.flows.fine_tune:fine_tune"
    flow_config = validate_config(deployment["parameters"]["config"])
    local = load_module(folder / "trainer.py").trainer.config
    # the same run but for where the data lives (S3, for a pod) and the callbacks
    keep = {"name", "model", "lora", "max_steps", "batch_size", "learning_rate", "save_steps"}
    assert flow_config.model_dump(include=keep) == local.model_dump(include=keep)
    assert flow_config.dataset.type == "s3"


def test_a_file_it_cannot_write_is_an_error_naming_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = Path("/proc/arkor-ops-init")  # nobody, root included, makes a folder in /proc
    code, lines, err = init(capsys, str(target))
    assert code == 2
    assert f"error: cannot write {target / 'trainer.py'}: " in err
    assert lines == []
