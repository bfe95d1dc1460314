"""The Hayhooks `search` wrapper over a saved run folder, and `syntriever serve` on loopback.

The wrapper is driven directly (setup + run_api), its request model is the one Hayhooks builds, and one loopback
test starts the real server (`syntriever serve` and plain `hayhooks run` with the documented environment).
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from syntriever_haystack.errors import SyntrieverError
from tests.conftest import PYTHON
from tests.support.serving_run import build_run_folder, serving_documents

hayhooks = pytest.importorskip("hayhooks", reason="serving needs the `serve` extra (hayhooks)")

from pydantic import ValidationError  # noqa: E402

from syntriever_haystack.serve.cli import hayhooks_command, served_yaml, server_environment  # noqa: E402
from syntriever_haystack.serve.hayhooks import PIPELINES_DIR  # noqa: E402
from syntriever_haystack.serve.hayhooks.search import SearchWrapper, check_filters  # noqa: E402

WRAPPER = PIPELINES_DIR / "search" / "pipeline_wrapper.py"
NO_DOCUMENTS = r"holds no document|document_store\.json"  # empty store, or a self-loading store's missing file
GEOGRAPHY = {"field": "meta.topic", "operator": "==", "value": "geography"}


@pytest.fixture(scope="module")
def run_folder(
    exported_bi_encoder: Path, exported_cross_encoder: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return build_run_folder(
        tmp_path_factory.mktemp("serving") / "run", exported_bi_encoder, exported_cross_encoder, serving_documents()
    )


def _wrapper(monkeypatch: pytest.MonkeyPatch, **env: str) -> SearchWrapper:
    for name in ("SYNTRIEVER_RUN", "SYNTRIEVER_PIPELINE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    wrapper = SearchWrapper()
    wrapper.setup()
    return wrapper


def test_the_shipped_wrapper_file_is_the_package_class() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("search_pipeline_wrapper", WRAPPER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert issubclass(module.PipelineWrapper, SearchWrapper)
    assert sorted(p.name for p in PIPELINES_DIR.iterdir() if p.name != "__pycache__") == ["search"]


@pytest.mark.parametrize("rerank", [False, True], ids=["query", "query-rerank"])
def test_wrapper_serves_the_saved_pipeline(run_folder: Path, monkeypatch: pytest.MonkeyPatch, rerank: bool) -> None:
    env = {"SYNTRIEVER_RUN": str(run_folder)}
    if rerank:
        env["SYNTRIEVER_PIPELINE"] = "pipelines/query-rerank.yaml"  # relative to SYNTRIEVER_RUN
    wrapper = _wrapper(monkeypatch, **env)
    assert wrapper.path == run_folder / "pipelines" / ("query-rerank.yaml" if rerank else "query.yaml")
    assert wrapper.final == ("ranker" if rerank else "joiner")
    hits = wrapper.run_api("heart attack aspirin", top_k=2)
    assert len(hits) == 2
    assert set(hits[0]) == {"id", "content", "score", "meta"}
    assert hits[0]["score"] >= hits[1]["score"]
    assert {hit["meta"]["title"] for hit in hits} <= {d.meta["title"] for d in serving_documents()}
    if not rerank:  # top_k above the saved pipeline's own (3) is honoured
        assert len(wrapper.run_api("capital city of france", top_k=5)) == 5
    json.dumps(hits)  # the API answer is JSON as it is


def test_filters_reach_both_retrievers(run_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wrapper = _wrapper(monkeypatch, SYNTRIEVER_RUN=str(run_folder))
    hits = wrapper.run_api("heart attack aspirin", top_k=5, filters=GEOGRAPHY)
    assert hits
    assert {hit["meta"]["topic"] for hit in hits} == {"geography"}
    either = {"operator": "OR", "conditions": [GEOGRAPHY, {"field": "meta.title", "operator": "in", "value": ["Fox"]}]}
    assert {h["meta"]["title"] for h in wrapper.run_api("fox", top_k=5, filters=either)} == {"Paris", "Berlin", "Fox"}
    assert len(wrapper.run_api("fox", top_k=5, filters={})) == 5  # an empty filter is no filter
    with pytest.raises(ValueError, match="operator"):
        wrapper.run_api("fox", filters={"field": "meta.topic", "operator": "~=", "value": "x"})


def test_the_request_model_hayhooks_builds_rejects_unknown_fields(
    run_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Loaded as Hayhooks loads it (module from the pipelines folder, instance, setup, method flags)."""
    from hayhooks.server.pipelines.models import create_pipeline_metadata
    from hayhooks.server.utils.module_loader import create_pipeline_wrapper_instance, load_pipeline_module

    monkeypatch.delenv("SYNTRIEVER_PIPELINE", raising=False)
    monkeypatch.setenv("SYNTRIEVER_RUN", str(run_folder))
    wrapper = create_pipeline_wrapper_instance(load_pipeline_module("search", PIPELINES_DIR / "search"))
    model = create_pipeline_metadata("search", wrapper)["request_model"]
    ok = model.model_validate({"query": "fox", "top_k": 3, "filters": GEOGRAPHY})
    assert ok.model_dump() == {"query": "fox", "top_k": 3, "filters": GEOGRAPHY}
    assert model.model_validate({"query": "fox"}).model_dump() == {"query": "fox", "top_k": 5, "filters": None}
    bad: list[dict[str, Any]] = [
        {"query": "fox", "filter": GEOGRAPHY},  # unknown field (a typo of filters)
        {"query": "fox", "top_k": 0},
        {"query": "fox", "top_k": 101},
        {"query": "   "},
        {"query": "x" * 4097},
        {"query": "fox", "filters": {"field": "meta.topic", "value": "x"}},
        {"query": "fox", "filters": {"operator": "AND", "conditions": []}},
        {"query": "fox", "filters": {"field": "meta.topic", "operator": "in", "value": "geography"}},
        {},
    ]
    for body in bad:
        with pytest.raises(ValidationError):
            model.model_validate(body)


def test_check_filters_bounds_the_filter() -> None:
    assert check_filters(None) is None
    assert check_filters({}) is None
    assert check_filters(GEOGRAPHY) == GEOGRAPHY
    deep = {"operator": "OR", "conditions": [GEOGRAPHY] * 64}
    with pytest.raises(ValueError, match="more than 64"):
        check_filters(deep)
    with pytest.raises(ValueError, match="conditions\\[1\\]"):
        check_filters({"operator": "NOT", "conditions": [GEOGRAPHY, "meta.topic"]})


def test_setup_fails_loudly(run_folder: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(SyntrieverError, match="SYNTRIEVER_RUN"):
        _wrapper(monkeypatch)  # nothing to serve
    with pytest.raises(SyntrieverError, match=r"nowhere/pipelines/query\.yaml"):
        _wrapper(monkeypatch, SYNTRIEVER_RUN=str(tmp_path / "nowhere"))
    with pytest.raises(SyntrieverError, match="not a syntriever query pipeline"):
        _wrapper(monkeypatch, SYNTRIEVER_PIPELINE=str(run_folder / "pipelines" / "indexing.yaml"))
    broken = tmp_path / "broken.yaml"
    broken.write_text("components: [unclosed\n", encoding="utf-8")
    with pytest.raises(SyntrieverError, match=r"broken\.yaml"):
        _wrapper(monkeypatch, SYNTRIEVER_PIPELINE=str(broken))
    with pytest.raises(SyntrieverError, match=NO_DOCUMENTS):  # an empty store is refused, not served
        _wrapper(monkeypatch, SYNTRIEVER_RUN=str(_without_documents(run_folder, tmp_path / "no-data")))
    shutil.rmtree(tmp_path / "no-data" / "models" / "reranker-onnx")
    with pytest.raises(SyntrieverError, match="reranker-onnx"):  # a missing model
        _wrapper(monkeypatch, SYNTRIEVER_PIPELINE=str(tmp_path / "no-data" / "pipelines" / "query-rerank.yaml"))


def _without_documents(run: Path, copy: Path) -> Path:
    """A copy of ``run`` without data/ whose store uses another in-memory index (nothing shared in-process)."""
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("data"))
    for yaml in (copy / "pipelines").glob("*.yaml"):
        yaml.write_text(yaml.read_text(encoding="utf-8").replace("serving-", "other-"), encoding="utf-8")
    return copy


def test_cli_resolves_the_run_folder_and_prints_the_hayhooks_line(
    run_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from syntriever_haystack.cli import main

    assert served_yaml(run_folder) == run_folder / "pipelines" / "query.yaml"
    assert served_yaml(run_folder, rerank=True) == run_folder / "pipelines" / "query-rerank.yaml"
    assert served_yaml(run_folder / "pipelines" / "query.yaml") == run_folder / "pipelines" / "query.yaml"
    assert main(["serve", str(run_folder), "--rerank", "--port", "9999", "--print-command"]) == 0
    line = capsys.readouterr().out.strip()
    assert line == hayhooks_command(run_folder / "pipelines" / "query-rerank.yaml", port=9999)
    for setting in ("HAYHOOKS_DURABLE_MODE=true", f"HAYHOOKS_PIPELINES_DIR={PIPELINES_DIR}", "--host 127.0.0.1"):
        assert setting in line
    assert line.endswith("hayhooks run --host 127.0.0.1 --port 9999")
    (tmp_path / "run" / "pipelines").mkdir(parents=True)
    (tmp_path / "run" / "pipelines" / "query.yaml").write_text("{}", encoding="utf-8")
    assert main(["serve", str(tmp_path / "run"), "--rerank"]) == 1
    assert "has no reranker" in capsys.readouterr().err
    assert main(["serve", str(tmp_path / "missing")]) == 1
    assert "neither a run folder nor a pipeline YAML" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _wait_until_up(process: subprocess.Popen[str], base: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}: {process.stderr.read()[-3000:]}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(f"{base}/status/search", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise AssertionError("the server did not come up")


@pytest.mark.loopback
@pytest.mark.parametrize("how", ["syntriever-serve", "hayhooks-run"])
def test_server_answers_on_loopback(run_folder: Path, subprocess_env: dict[str, str], tmp_path: Path, how: str) -> None:
    port = _free_port()
    env = {k: v for k, v in subprocess_env.items() if not k.startswith(("HAYHOOKS_", "SYNTRIEVER_"))}
    env.update({"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")})
    if how == "syntriever-serve":
        command = [PYTHON, "-m", "syntriever_haystack", "serve", str(run_folder), "--rerank", "--port", str(port)]
    else:  # the documented line: plain `hayhooks run` under server_environment()
        env.update(server_environment(run_folder / "pipelines" / "query-rerank.yaml", port=port))
        command = [str(Path(sys.executable).parent / "hayhooks"), "run", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        command, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(process, base)
        status, answer = _post(f"{base}/search/run", {"query": "heart attack aspirin", "top_k": 2})
        assert status == 200, answer
        result = answer["result"]
        assert len(result) == 2
        assert result[0]["score"] >= result[1]["score"]
        status, answer = _post(f"{base}/search/run", {"query": "paris", "top_k": 3, "filters": GEOGRAPHY})
        assert status == 200, answer
        assert {hit["meta"]["topic"] for hit in answer["result"]} == {"geography"}
        assert _post(f"{base}/search/run", {"query": "paris", "unknown": 1})[0] == 422
        assert _post(f"{base}/deploy_files", {"name": "x", "files": {"pipeline_wrapper.py": ""}})[0] in (404, 405)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:  # pragma: no cover
            process.kill()
            process.wait()


@pytest.mark.loopback
def test_server_refuses_to_start_on_an_empty_store(
    run_folder: Path, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    empty = _without_documents(run_folder, tmp_path / "run")
    env = {k: v for k, v in subprocess_env.items() if not k.startswith(("HAYHOOKS_", "SYNTRIEVER_"))}
    env["HOME"] = str(tmp_path)
    done = subprocess.run(
        [PYTHON, "-m", "syntriever_haystack", "serve", str(empty), "--port", str(_free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 1, done.stderr[-3000:]
    assert re.search(NO_DOCUMENTS, done.stderr), done.stderr[-3000:]
