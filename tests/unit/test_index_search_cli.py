"""`syntriever index` + `syntriever search` with the in-memory store on a tiny BEIR folder and on files."""

from __future__ import annotations

import json
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

from syntriever_haystack.cli import main
from syntriever_haystack.serve.memory_store import load_memory_store
from syntriever_haystack.serve.pipelines import load_pipeline, run_query
from tests.conftest import PYTHON

CORPUS = [
    {"_id": "d-aspirin", "title": "Aspirin", "text": "aspirin reduce the risk of heart attack in patients"},
    {"_id": "d-iron", "title": "Iron", "text": "iron deficiency and blood loss cause anaemia"},
    {"_id": "d-paris", "title": "Paris", "text": "paris is the capital city of france"},
    {"_id": "d-brain", "title": "Brain", "text": "brain tumour in adults and children"},
    {"_id": "d-fox", "title": "", "text": "the quick brown fox jumps over the lazy dog"},
]


@pytest.fixture
def beir(tmp_path: Path) -> Path:
    folder = tmp_path / "tiny-beir"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in CORPUS) + "\n", encoding="utf-8")
    return folder


def _index(bi: Path, store: Path, *extra: str) -> list[str]:
    return [
        "index",
        "--model",
        str(bi),
        "--store-path",
        str(store),
        "--index",
        f"t{uuid.uuid4().hex}",
        "--quiet",
        *extra,
    ]


def test_index_then_search_memory_store(
    exported_bi_encoder: Path,
    exported_cross_encoder: Path,
    beir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "store.json"
    pipes = tmp_path / "pipes"
    args = _index(exported_bi_encoder, store, "--dataset", str(beir), "--pipelines-out", str(pipes))
    assert main([*args, "--ranker", str(exported_cross_encoder)]) == 0
    out = capsys.readouterr().out
    assert f"indexed 5 documents as 5 chunks into {store}" in out
    assert "32-d vectors, innerproduct" in out
    loaded, record = load_memory_store(store)
    assert loaded.count_documents() == 5
    assert record["dimension"] == 32
    assert {d.meta["source_id"] for d in loaded.filter_documents()} == {d["_id"] for d in CORPUS}
    assert "Aspirin aspirin reduce" in next(
        d.content for d in loaded.filter_documents() if d.meta["title"] == "Aspirin"
    )

    search = ["search", "--model", str(exported_bi_encoder), "--store-path", str(store), "--top-k", "3"]
    assert main([*search, "iron deficiency anaemia", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["store"] == "memory"
    assert len(payload["results"]) == 3
    assert payload["results"][0]["id"] == "d-iron"
    assert payload["results"][0]["title"] == "Iron"
    assert [r["rank"] for r in payload["results"]] == [1, 2, 3]

    assert main([*search, "capital city of france"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(" 1. ")
    assert "d-paris  Paris" in lines[0]
    assert lines[1].strip().startswith("Paris paris is the capital")

    assert main([*search, "heart attack", "--ranker", str(exported_cross_encoder), "--json"]) == 0
    scores = [r["score"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert len(scores) == 3
    assert scores == sorted(scores, reverse=True)
    assert all(0 < s < 1 for s in scores)  # the cross-encoder's sigmoid
    fused = [*search, "heart attack", "--ranker", str(exported_cross_encoder), "--first-stage-weight", "2", "--json"]
    assert main(fused) == 0
    scores = [r["score"] for r in json.loads(capsys.readouterr().out)["results"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 1  # a sum of two distribution-normalised scores
    with pytest.raises(SystemExit):
        main([*search, "heart", "--ranker", str(exported_cross_encoder), "--first-stage-weight", "-1"])
    assert "argument --first-stage-weight: must be a number >= 0, got '-1'" in capsys.readouterr().err
    assert main([*search, "heart", "--first-stage-weight", "2"]) == 1  # nothing to weigh against: not ignored
    assert "--first-stage-weight weighs the first stage against --ranker: pass --ranker DIR too" in (
        capsys.readouterr().err
    )

    # --pipelines-out: YAML that loads and queries the same store once its file is loaded (shared index name).
    assert sorted(p.name for p in pipes.iterdir()) == ["indexing.yaml", "query.yaml"]
    query = load_pipeline(pipes / "query.yaml")
    assert "ranker" in dict(query.walk())
    assert len(run_query(query, "brain tumour")) > 0


def test_reindexing_overwrites_and_recreate_starts_afresh(
    exported_bi_encoder: Path, beir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = tmp_path / "store.json"
    index = f"t{uuid.uuid4().hex}"
    base = ["index", "--model", str(exported_bi_encoder), "--store-path", str(store), "--index", index, "--quiet"]
    assert main([*base, "--dataset", str(beir), "--split-by", "none", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["documents"], summary["chunks"], summary["total_chunks"]) == (5, 5, 5)
    assert summary["seconds"] > 0
    assert summary["docs_per_second"] > 0
    assert main([*base, "--dataset", str(beir), "--split-by", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total_chunks"] == 5  # same ids: overwritten

    files = tmp_path / "files"
    files.mkdir()
    (files / "a.txt").write_text(" ".join(["iron blood"] * 30), encoding="utf-8")  # 60 words
    (files / "b.md").write_text("paris france capital", encoding="utf-8")
    assert main([*base, "--input", str(files), "--split-length", "25", "--split-overlap", "5", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["documents"], summary["chunks"], summary["total_chunks"]) == (2, 4, 9)
    assert (
        main([*base, "--input", str(files), "--split-length", "25", "--split-overlap", "5", "--recreate", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["total_chunks"] == 4


def test_cli_errors_name_the_fix(
    exported_bi_encoder: Path,
    exported_cross_encoder: Path,
    beir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store = tmp_path / "store.json"
    search = ["search", "q", "--model", str(exported_bi_encoder), "--store-path", str(store)]
    assert main(search) == 1
    assert "does not exist; build it first with `syntriever index" in capsys.readouterr().err

    assert main(_index(exported_bi_encoder, store, "--dataset", str(beir), "--alias")) == 1
    assert "--alias only apply to --store opensearch" in capsys.readouterr().err
    assert main(_index(exported_cross_encoder, store, "--dataset", str(beir))) == 1
    assert "index with an exported bi-encoder" in capsys.readouterr().err

    assert main(_index(exported_bi_encoder, store, "--dataset", str(beir))) == 0
    data = json.loads(store.read_text())
    data["syntriever"]["dimension"] = 16
    store.write_text(json.dumps(data))
    assert main(search) == 1
    err = capsys.readouterr().err
    assert "holds 16-d vectors, the model makes 32-d vectors" in err
    assert "--recreate" in err


@pytest.mark.filterwarnings("ignore:A test tried to use socket:UserWarning")
def test_opensearch_store_unreachable_names_url_and_fix(
    exported_bi_encoder: Path, beir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sockets are blocked in unit tests: the client fails to connect, the message says how to start OpenSearch."""
    url = "http://127.0.0.1:9"
    args = ["index", "--model", str(exported_bi_encoder), "--dataset", str(beir), "--opensearch-url", url, "--quiet"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"cannot connect to OpenSearch at {url}" in err
    assert "OPENSEARCH_URL" in err
    assert "docker" in err
    search = ["search", "q", "--model", str(exported_bi_encoder), "--store", "opensearch", "--opensearch-url", url]
    assert main([*search, "--no-verify-certs"]) == 1
    err = capsys.readouterr().err
    assert "warning: TLS certificate verification is off" in err
    assert f"cannot connect to OpenSearch at {url}" in err


def test_help_works_without_opensearch_installed(subprocess_env: dict[str, str]) -> None:
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        class _Blocker(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "opensearchpy" or name.startswith("haystack_integrations.document_stores"):
                    raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
                return None
        sys.meta_path.insert(0, _Blocker())
        from syntriever_haystack.cli import build_parser
        parser = build_parser()
        for command in ("index", "search"):
            try:
                parser.parse_args([command, "--help"])
            except SystemExit:
                pass
        print("opensearchpy" in sys.modules)
        """
    )
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--opensearch-url" in proc.stdout
    assert "--top-k" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "False"


def test_search_a_run_folder(
    exported_bi_encoder: Path,
    exported_cross_encoder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`syntriever search --run RUN`: the run's saved query pipeline on the run's store file, from anywhere."""
    from tests.unit.test_relocatable_pipelines import build_run

    run = build_run(tmp_path / "runs" / "quickstart", exported_bi_encoder, exported_cross_encoder)
    monkeypatch.chdir(tmp_path)
    assert main(["search", "iron deficiency anaemia", "--run", "runs/quickstart", "--top-k", "2", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["pipeline"] == str(Path("runs/quickstart/pipelines/query.yaml"))
    assert [r["id"] for r in payload["results"]][:1] == ["d-iron"]
    assert len(payload["results"]) == 2
    assert main(["search", "heart attack", "--run", str(run), "--rerank", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["pipeline"].endswith("query-rerank.yaml")
    assert len(payload["results"]) == 5  # --top-k (default 5) replaces the saved top_k (3) of the last component

    assert main(["search", "q", "--run", str(run), "--model", str(exported_bi_encoder)]) == 1
    assert "drop --model" in capsys.readouterr().err
    assert main(["search", "q", "--run", str(tmp_path / "nowhere")]) == 1
    assert "no such run folder" in capsys.readouterr().err
    (run / "pipelines" / "query-rerank.yaml").unlink()
    assert main(["search", "q", "--run", str(run), "--rerank"]) == 1
    assert "no reranker: drop --rerank" in capsys.readouterr().err
    (run / "data" / "document_store.json").unlink()
    assert main(["search", "q", "--run", str(run)]) == 1
    assert "--until index" in capsys.readouterr().err


def test_missing_default_store_points_to_run_and_store_path(
    exported_bi_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYNTRIEVER_CACHE", str(tmp_path / "cache"))
    assert main(["search", "q", "--model", str(exported_bi_encoder)]) == 1
    err = capsys.readouterr().err
    assert "--run runs/quickstart" in err
    assert "--store-path FILE" in err
    assert main(["search", "q"]) == 1
    assert "--run RUN_FOLDER" in capsys.readouterr().err
