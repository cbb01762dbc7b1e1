"""``arkor-ops serve`` as a user runs it: the URL and the key printed once, answers, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import openai
import pytest

pytestmark = pytest.mark.serving


def test_serve_prints_the_url_and_a_key_and_answers(
    llama_home: Path, tiny_model_dir: Path, adapters: dict[str, str], tmp_path: Path
) -> None:
    cmd = [sys.executable, "-m", "arkor_ops.cli", "serve", "triage", "--model", str(tiny_model_dir)]
    cmd += ["--adapter", adapters["a"], "--port", "0", "--vocab-pre", "gpt-2"]
    cmd += ["--workdir", str(tmp_path / "ep")]
    env = {**os.environ, "ARKOR_LLAMA_CPP_HOME": str(llama_home)}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(3)]
        found = re.fullmatch(
            r"arkor-ops serve: (http://127\.0\.0\.1:\d+/v1) serves model 'triage'", lines[0].strip()
        )
        assert found, lines
        url = found.group(1)
        key = lines[1].strip().removeprefix("API key (shown once): ")
        assert key.startswith("ak-")
        c = openai.OpenAI(base_url=url, api_key=key, max_retries=0)
        answer = c.chat.completions.create(
            model="triage", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert answer.model == "triage@1" and answer.choices[0].message.content
        assert key not in (tmp_path / "ep" / "keys.jsonl").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert key not in stderr


def test_serve_refuses_a_model_folder_that_is_not_one(tmp_path: Path, llama_home: Path) -> None:
    env = {**os.environ, "ARKOR_LLAMA_CPP_HOME": str(llama_home)}
    out = subprocess.run(
        [sys.executable, "-m", "arkor_ops.cli", "serve", "triage", "--model", str(tmp_path)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 2
    assert f"base model {tmp_path}: no config.json there" in out.stderr


def test_export_prints_each_file_with_its_sha256(
    llama_home: Path, tiny_model_dir: Path, adapters: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "export"
    cmd = [sys.executable, "-m", "arkor_ops.cli", "export", adapters["a"]]
    cmd += ["--model", str(tiny_model_dir), "--out", str(out), "--format", "gguf-q8_0"]
    cmd += ["--vocab-pre", "gpt-2"]
    env = {**os.environ, "ARKOR_LLAMA_CPP_HOME": str(llama_home)}
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    line = done.stdout.strip()
    assert line.startswith(f"{out / 'model-q8_0.gguf'}  ") and " sha256:" in line
    again = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "exports never overwrite" in again.stderr


def test_serve_on_a_port_in_use_says_so_and_starts_nothing(
    tmp_path: Path, llama_home: Path, tiny_model_dir: Path
) -> None:
    env = {**os.environ, "ARKOR_LLAMA_CPP_HOME": str(llama_home)}
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        cmd = [sys.executable, "-m", "arkor_ops.cli", "serve", "triage", "--port", str(port)]
        cmd += ["--model", str(tiny_model_dir), "--workdir", str(tmp_path / "ep")]
        cmd += ["--vocab-pre", "gpt-2"]  # a model that converts: the port alone is the problem
        out = subprocess.run(
            cmd,
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
    assert out.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in out.stderr
    assert "give another port" in out.stderr
    assert not (tmp_path / "ep" / "engine").exists()  # no engine was started
