"""The node cache (arkor_ops/worker/cache.py) as the runs of one node use it: models in S3 keyed
by their content, downloaded once by runs that start together (counted in the S3-protocol
server's own request log), never used half-written, verified on use, and evicted least recently
used first without touching an entry a run is using."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from arkor_ops.storage import join_uri, open_storage
from arkor_ops.worker.cache import NodeCache
from arkor_ops.worker.models import resolve_model
from tests.fixtures.s3 import LoggedS3
from tests.worker.helpers import ROWS, RunDir, base_config, of_type, run_inprocess, write_rows

pytestmark = [pytest.mark.s3, pytest.mark.timeout(120)]

WEIGHTS = 3 << 20
ROOT = Path(__file__).resolve().parents[2]


def _model_folder(root: Path, marker: str) -> Path:
    """A folder shaped like a Hugging Face model: config.json and a weights file."""
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": "gemma3_text", "marker": marker}))
    (root / "model.safetensors").write_bytes(os.urandom(WEIGHTS))
    return root


def _upload(tmp: Path, uri: str, marker: str) -> Path:
    folder = _model_folder(tmp / f"upload-{marker}", marker)
    open_storage(uri).upload_dir(uri, folder)
    return folder


def test_a_model_replaced_at_the_same_uri_is_downloaded_again(
    tmp_path: Path, logged_s3: LoggedS3
) -> None:
    uri = join_uri(f"s3://{logged_s3.bucket}", "models", "base")
    cache = tmp_path / "cache"
    _upload(tmp_path, uri, "first")
    first = resolve_model(uri, cache)
    assert first.how == "downloaded from S3"
    again = resolve_model(uri, cache)
    assert (again.path, again.how) == (first.path, "already in the node cache, from S3")
    assert logged_s3.downloads(join_uri(uri, "model.safetensors")) == 1

    new = _upload(tmp_path, uri, "second")  # a new model under the same name
    replaced = resolve_model(uri, cache)
    assert replaced.how == "downloaded from S3"
    assert json.loads((replaced.path / "config.json").read_text())["marker"] == "second"
    got = (replaced.path / "model.safetensors").read_bytes()
    assert got == (new / "model.safetensors").read_bytes()


_RESOLVE = """
import sys
from pathlib import Path
from arkor_ops.worker.models import resolve_model
print(resolve_model(sys.argv[1], Path(sys.argv[2])).path, flush=True)
"""


def test_runs_that_start_together_on_a_cold_node_download_once(
    tmp_path: Path, logged_s3: LoggedS3
) -> None:
    uri = join_uri(f"s3://{logged_s3.bucket}", "models", "base")
    _upload(tmp_path, uri, "only")
    cache = tmp_path / "node-cache"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _RESOLVE, uri, str(cache)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(3)
    ]
    outs = [run.communicate(timeout=90) for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], [err[-2000:] for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1, "one entry for all three"
    for name in ("config.json", "model.safetensors"):
        assert logged_s3.downloads(join_uri(uri, name)) == 1, name


def test_a_fill_that_fails_or_dies_leaves_no_entry(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")

    def broken(staging: Path) -> None:
        (staging / "config.json").write_text("{}")
        raise OSError("connection reset")

    with pytest.raises(OSError, match="connection reset"):
        cache.get("s3-model", "k1", broken)
    assert cache.entries() == []

    # a filler killed mid-download (SIGKILL: no clean-up runs) holds the lock until it dies
    killed = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from pathlib import Path\n"
            "from arkor_ops.worker.cache import NodeCache\n"
            "def fill(staging):\n"
            "    (staging / 'config.json').write_text('{}')\n"
            "    print('filling', flush=True)\n"
            "    time.sleep(60)\n"
            "NodeCache(Path(sys.argv[1])).get('s3-model', 'k1', fill)\n",
            str(tmp_path / "cache"),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert killed.stdout is not None
    assert killed.stdout.readline().strip() == "filling"
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=10)
    assert cache.entries() == [], "a half-written fill is never an entry"

    def good(staging: Path) -> None:
        (staging / "config.json").write_text('{"ok": true}')

    entry = cache.get("s3-model", "k1", good)
    assert entry.filled
    assert json.loads((entry.path / "config.json").read_text()) == {"ok": True}


def test_an_entry_changed_on_disk_is_filled_again(tmp_path: Path) -> None:
    cache = NodeCache(tmp_path / "cache")
    fills = []

    def fill(staging: Path) -> None:
        fills.append(staging)
        (staging / "weights.bin").write_bytes(b"w" * 1000)

    entry = cache.get("s3-model", "k", fill)
    entry.release()
    with (entry.path / "weights.bin").open("r+b") as fh:
        fh.truncate(10)  # a disk that lost part of the file
    again = cache.get("s3-model", "k", fill)
    assert again.filled and len(fills) == 2
    assert (again.path / "weights.bin").read_bytes() == b"w" * 1000


_HOLD = """
import sys
from pathlib import Path
from arkor_ops.worker.cache import NodeCache
entry = NodeCache(Path(sys.argv[1])).get(sys.argv[2], sys.argv[3], lambda s: None)
print("holding", flush=True)
sys.stdin.read()
"""


def test_eviction_takes_the_least_recently_used_entries_no_run_is_using(
    tmp_path: Path,
) -> None:
    root = tmp_path / "cache"
    cache = NodeCache(root)

    def sized(size: int) -> Callable[[Path], None]:
        def fill(staging: Path) -> None:
            (staging / "blob").write_bytes(b"x" * size)

        return fill

    for key in ("a", "b", "c"):
        cache.get("m", key, sized(100)).release()  # used in the order a, b, c
    holder = subprocess.Popen(  # a run on the node using b, the second oldest
        [sys.executable, "-c", _HOLD, str(root), "m", "b"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "holding"
        os.utime(root / "entries" / "m" / "b" / ".arkor-entry.json", (1, 1))  # b oldest now
        bounded = NodeCache(root, max_bytes=250)
        d = bounded.get("m", "d", sized(100))
        # 400 bytes over 250: b is the oldest but in use, so a goes, then c (200 bytes fit)
        left = sorted(path.name for _, _, path in bounded.entries())
        assert left == ["b", "d"]
        assert d.filled and (d.path / "blob").stat().st_size == 100
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)


@pytest.mark.train
@pytest.mark.timeout(400)
def test_a_second_run_on_the_node_trains_on_the_tokenized_data_of_the_first(
    tmp_path: Path, s3_prefix: str, tiny_model_dir: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", ROWS["chatml"](24))
    node = tmp_path / "node-cache"
    split = {"enabled": True, "testSize": 0.25, "seed": 3}
    dataset = {"type": "file", "path": str(rows)}
    config = base_config(
        tiny_model_dir, dataset, maxSteps=4, datasetSplit=split, trainOnResponsesOnly=True
    )

    def run(job: str, **changes: object) -> tuple[str, list[float], list[float]]:
        run_dir = RunDir(tmp_path / job, job, s3_prefix, {"ARKOR_MODEL_CACHE": str(node)})
        assert run_inprocess(run_dir.env({**config, **changes})) == 0
        events = run_dir.events()
        started = of_type(events, "training.started")[0]
        logs = of_type(events, "training.log")
        losses = [e.loss for e in logs if e.loss is not None]
        evals = [e.eval_loss for e in logs if e.eval_loss is not None]
        return started.metadata["tokenizedData"], losses, evals

    first = run("job-first")
    assert first[0] == "tokenized (now in the node cache)"
    second = run("job-second")
    assert second[0] == "from the node cache"
    assert second[1:] == first[1:], "the same tokens: the same losses, train and eval"
    assert first[2], "the eval split was evaluated"
    other = run("job-other-length", lora={"r": 8, "alpha": 16, "maxLength": 64})
    assert other[0] == "tokenized (now in the node cache)", "another max length, another entry"


@pytest.mark.train
@pytest.mark.timeout(400)
def test_the_converted_gemma_is_a_cache_entry_inside_the_bound(tmp_path: Path) -> None:
    """Gemma 3 270M, converted from its PyPI package, is filled once into the node cache,
    verified and counted like any entry, so the cache's bound can evict it when no run uses it."""
    root = tmp_path / "cache"

    def prepare() -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "arkor_ops.worker.models", "prepare-gemma", "--cache"]
        return subprocess.run(
            [*cmd, str(root)], check=False, capture_output=True, text=True, cwd=ROOT
        )

    first = prepare()
    assert first.returncode == 0, first.stderr
    folder = Path(first.stdout.strip())
    assert folder.parent == root / "entries" / "gemma"
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert not list(root.glob(".gemma-gguf-*")), "the assembled GGUF is not left behind"
    (entry,) = NodeCache(root).entries()
    weights = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
    assert entry[2] == folder and entry[1] > weights > 500_000_000  # fp32, 268M parameters

    again = prepare()
    assert again.stdout.strip() == str(folder)
    assert "converting" not in again.stderr, "filled once per node"

    assert NodeCache(root).evict(max_bytes=weights // 2) == [folder]  # no run is using it
    assert not folder.exists()
