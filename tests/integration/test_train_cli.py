"""`syntriever train` as a user runs it: a real subprocess killed with SIGKILL mid-run, then the same command again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import PYTHON, ROOT, build_tiny_bert

pytest.importorskip("sentence_transformers")


def _write_stage1(path: Path, n: int = 64) -> Path:
    words = "iron blood heart attack aspirin bone fracture elderly paris france river music art book".split()
    rows = []
    for i in range(n):
        query = f"{words[i % len(words)]} {words[(i * 3 + 1) % len(words)]} {i}"
        rows.append(
            {
                "id": f"r{i}",
                "kind": "retriever",
                "query_id": f"q{i}",
                "query": query,
                "positives": [{"text": f"{query} passage {i} with more words", "source": "gold"}],
                "negatives": [{"text": f"unrelated {words[(i + 5) % len(words)]} text {i}", "source": "llm_negative"}],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.integration
def test_sigkilled_training_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    base = build_tiny_bert(tmp_path / "bi", kind="bi-encoder")
    data = _write_stage1(tmp_path / "retriever.jsonl")
    out = tmp_path / "run"
    command = [
        str(PYTHON), "-m", "syntriever_haystack", "train", "retriever", "--stage", "1", "--base", str(base),
        "--data", str(data), "--out", str(out), "--epochs", "3", "--batch-size", "4", "--checkpoint-steps", "2",
        "--no-bf16", "--quiet",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    checkpoints = out / "checkpoints"
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoints.is_dir() and any((p / "state.pt").is_file() for p in checkpoints.glob("step-*")):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "history.json").exists()  # it really died mid-run
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert len(history["resumed_from"]) == 1
    assert history["resumed_from"][0] >= 2
    assert [s["step"] for s in history["steps"]] == list(range(1, history["total_steps"] + 1))  # no step lost or twice
    assert (out / "model.safetensors").is_file()
    assert not list(checkpoints.glob(".tmp-*"))
