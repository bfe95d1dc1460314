"""ML Commons bundles (zip, register body, graph, tokenizer) and the request sequence of the ML Commons client.

The bundled graphs are run the way ML Commons runs them (its tokenizer settings from ``tokenizer.json``, the
inputs its translators feed, its pooling and normalisation) and compared with our Haystack components.
The client is tested against a scripted transport: no cluster here (see tests/integration for the real one).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from haystack import Document

from syntriever_haystack import SyntrieverRanker, SyntrieverTextEmbedder
from syntriever_haystack.cli import main
from syntriever_haystack.errors import ExportedModelError, SyntrieverError
from syntriever_haystack.export.ml_commons_bundle import (
    CHUNK_SIZE,
    MlCommonsBundle,
    build_bundle,
    graph_inputs_outputs,
    prepare_graph,
    read_bundle_zip,
    total_chunks,
)
from syntriever_haystack.opensearch.ml_commons import (
    DEV_CLUSTER_SETTINGS,
    MLCommonsClient,
    MLCommonsError,
    ingest_pipeline_body,
    neural_index_body,
    neural_query,
    search_body,
    search_pipeline_body,
)

QUERIES = ["what causes anaemia", "heart attack risk with aspirin", "brain tumour in children"]
DOCS = [
    "iron deficiency and blood loss cause anaemia",
    "aspirin may reduce the risk of heart attack in adults",
    "the capital city of france is paris",
    " ".join(["the quick brown fox jumps over the lazy dog"] * 20),  # longer than max_length: truncated
]


# ---------------------------------------------------------------------------------------------- ML Commons, simulated
def _session_and_tokenizer(bundle: MlCommonsBundle) -> tuple[Any, Any, list[str]]:
    import onnxruntime as ort
    from tokenizers import Tokenizer

    files = read_bundle_zip(bundle.zip_path)
    session = ort.InferenceSession(files["model.onnx"], providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))  # as DJL builds it: same Rust library
    return session, tokenizer, [i.name for i in session.get_inputs()]


def _feed(encodings: list[Any], names: list[str]) -> dict[str, np.ndarray]:
    arrays = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    return {n: arrays[n] for n in names}


def ml_commons_embed(bundle: MlCommonsBundle, texts: list[str]) -> np.ndarray:
    """ONNXSentenceTransformerTextEmbeddingTranslator: one text at a time, pool the first output, normalise."""
    session, tokenizer, graph_inputs = _session_and_tokenizer(bundle)
    config = bundle.register_body["model_config"]
    fed = ["input_ids", "attention_mask"] + (["token_type_ids"] if config["model_type"] in ("bert", "albert") else [])
    assert sorted(fed) == sorted(graph_inputs), "DJL's OrtSymbolBlock rejects a feed that differs from the inputs"
    out = []
    for text in texts:
        encoding = tokenizer.encode(text)
        embeddings = session.run(None, _feed([encoding], fed))[0]
        if embeddings.ndim == 3:
            embeddings = embeddings[0]
        mask = np.array(encoding.attention_mask, dtype=np.float32)[:, None]
        mode = config["pooling_mode"]
        if mode == "mean":
            vector = (embeddings * mask).sum(0) / np.clip(mask.sum(0), 1e-9, 1e12)
        elif mode == "max":
            vector = np.where(mask > 0, embeddings, -1e9).max(0)
        else:  # cls
            vector = embeddings[0]
        if config.get("normalize_result"):
            vector = vector / np.linalg.norm(vector)
        out.append(vector)
    return np.stack(out)


def ml_commons_similarity(bundle: MlCommonsBundle, query: str, documents: list[str]) -> np.ndarray:
    """TextSimilarityTranslator.batchProcessInput: padded (query, document) pairs, 3 inputs, first value."""
    session, tokenizer, graph_inputs = _session_and_tokenizer(bundle)
    fed = ["input_ids", "attention_mask", "token_type_ids"]
    assert sorted(fed) == sorted(graph_inputs)
    encodings = tokenizer.encode_batch([(query, d) for d in documents])
    assert len({len(e.ids) for e in encodings}) == 1, "tokenizer.json padding must make a rectangular batch"
    logits = session.run(None, _feed(encodings, fed))[0]
    return logits.reshape(len(documents), -1)[:, 0]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ---------------------------------------------------------------------------------------------- bundle
@pytest.fixture(scope="module")
def bi_bundle(exported_bi_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> MlCommonsBundle:
    return build_bundle(exported_bi_encoder, tmp_path_factory.mktemp("mlc") / "retriever.zip")


@pytest.fixture(scope="module")
def ce_bundle(exported_cross_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> MlCommonsBundle:
    return build_bundle(exported_cross_encoder, tmp_path_factory.mktemp("mlc") / "reranker.zip")


def test_embedding_bundle_zip_and_register_body(bi_bundle: MlCommonsBundle) -> None:
    files = read_bundle_zip(bi_bundle.zip_path)
    assert sorted(files) == ["model.onnx", "syntriever.json", "tokenizer.json"]  # flat: ML Commons lists the top
    assert sum(name.endswith(".onnx") for name in files) == 1
    tokenizer = json.loads(files["tokenizer.json"])
    assert tokenizer["truncation"] == {"direction": "Right", "max_length": 64, "strategy": "LongestFirst", "stride": 0}
    assert tokenizer["padding"]["pad_token"] == "[PAD]"
    assert tokenizer["padding"]["pad_id"] == 0
    assert "/" not in json.loads(files["syntriever.json"])["source_model"]  # no local path in the cluster

    zip_bytes = bi_bundle.zip_path.read_bytes()
    body = bi_bundle.register_body
    assert body["model_content_hash_value"] == hashlib.sha256(zip_bytes).hexdigest()
    assert body["model_content_size_in_bytes"] == len(zip_bytes)
    assert body["total_chunks"] == 1
    assert body["function_name"] == "TEXT_EMBEDDING"
    assert body["model_format"] == "ONNX"
    assert body["name"] == "bi"
    assert body["version"] == "1"
    config = body["model_config"]
    assert {k: v for k, v in config.items() if k != "all_config"} == {
        "model_type": "bert",
        "embedding_dimension": 32,
        "framework_type": "sentence_transformers",
        "pooling_mode": "mean",
        "normalize_result": True,
        "model_max_length": 64,
    }
    assert json.loads(config["all_config"])["hidden_size"] == 32
    assert json.loads(bi_bundle.config_path.read_text()) == body
    assert bi_bundle.config_path.name == "retriever.ml-commons.json"
    assert bi_bundle.model_inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert not bi_bundle.graph_edits
    assert bi_bundle.query_prefix == "query: "
    assert not bi_bundle.asymmetric


def test_similarity_bundle_register_body(ce_bundle: MlCommonsBundle) -> None:
    config = ce_bundle.register_body["model_config"]
    assert ce_bundle.function_name == "TEXT_SIMILARITY"
    assert {k: v for k, v in config.items() if k != "all_config"} == {
        "model_type": "bert",
        "embedding_dimension": 1,
        "framework_type": "huggingface_transformers",
    }
    assert ce_bundle.model_inputs == ["input_ids", "attention_mask", "token_type_ids"]
    assert json.loads(read_bundle_zip(ce_bundle.zip_path)["tokenizer.json"])["truncation"]["max_length"] == 64


def test_bundle_is_reproducible(exported_bi_encoder: Path, bi_bundle: MlCommonsBundle, tmp_path: Path) -> None:
    again = build_bundle(exported_bi_encoder, tmp_path / "again.zip")
    assert again.sha256 == bi_bundle.sha256  # fixed zip timestamps: same model, same hash


def test_chunk_math_and_chunks(exported_bi_encoder: Path, tmp_path: Path) -> None:
    assert CHUNK_SIZE == 10_000_000
    assert total_chunks(1) == 1
    assert total_chunks(10_000_000) == 1
    assert total_chunks(10_000_001) == 2
    assert total_chunks(25_000_000) == 3
    bundle = build_bundle(exported_bi_encoder, tmp_path / "small-chunks.zip", chunk_size=40_000)
    chunks = list(bundle.chunks())
    assert len(chunks) == bundle.total_chunks == math.ceil(bundle.size / 40_000) >= 3
    assert all(len(c) == 40_000 for c in chunks[:-1])
    assert 0 < len(chunks[-1]) <= 40_000
    assert b"".join(chunks) == bundle.zip_path.read_bytes()
    with pytest.raises(ExportedModelError, match="10000000"):
        build_bundle(exported_bi_encoder, tmp_path / "x.zip", chunk_size=CHUNK_SIZE + 1)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_embedding_bundle_matches_text_embedder(exported_bi_encoder: Path, tmp_path: Path, precision: str) -> None:
    bundle = build_bundle(exported_bi_encoder, tmp_path / f"{precision}.zip", precision=precision)
    texts = QUERIES + DOCS
    ours = SyntrieverTextEmbedder(model=str(exported_bi_encoder), quantization=precision)
    ours.warm_up()
    expected = np.array([ours.run(text=t)["embedding"] for t in texts])
    # The neural query sends query_prefix + text (the bundle is not asymmetric): same input as our embedder.
    got = ml_commons_embed(bundle, [bundle.query_prefix + t for t in texts])
    assert _cosines(got, expected).min() > 0.999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_similarity_bundle_matches_ranker(exported_cross_encoder: Path, tmp_path: Path, precision: str) -> None:
    bundle = build_bundle(exported_cross_encoder, tmp_path / f"{precision}.zip", precision=precision)
    ranker = SyntrieverRanker(  # one call for all pairs, as ML Commons scores them: dynamic int8 quantises each
        # call's activations with one scale, so int8 scores depend on which pairs share a call
        model=str(exported_cross_encoder),
        quantization=precision,
        top_k=len(DOCS),
        scale_score=False,
        batch_size=len(DOCS),
    )
    ranker.warm_up()
    for query in QUERIES:
        ranked = ranker.run(query=query, documents=[Document(content=d) for d in DOCS])["documents"]
        expected = {d.content: d.score for d in ranked}
        got = ml_commons_similarity(bundle, query, DOCS)
        np.testing.assert_allclose(got, [expected[d] for d in DOCS], atol=1e-4)
        assert [DOCS[i] for i in np.argsort(-got, kind="stable")] == [d.content for d in ranked]


def test_graph_inputs_are_fitted_to_what_ml_commons_feeds(exported_bi_encoder: Path) -> None:
    import onnxruntime as ort

    original = (exported_bi_encoder / "onnx" / "model.onnx").read_bytes()
    two, inputs, edits = prepare_graph(original, wanted_inputs=["input_ids", "attention_mask"])
    assert inputs == ["input_ids", "attention_mask"]
    assert "token_type_ids removed" in edits[0]
    three, inputs3, edits3 = prepare_graph(two, wanted_inputs=["input_ids", "attention_mask", "token_type_ids"])
    assert sorted(inputs3) == ["attention_mask", "input_ids", "token_type_ids"]
    assert "added" in edits3[0]

    rng = np.random.default_rng(0)
    ids = rng.integers(5, 200, size=(2, 9)).astype(np.int64)
    mask = np.ones_like(ids)
    run = {
        name: ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        for name, graph in (("orig", original), ("two", two), ("three", three))
    }
    reference = run["orig"].run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": 0 * ids})[0]
    np.testing.assert_allclose(
        run["two"].run(None, {"input_ids": ids, "attention_mask": mask})[0], reference, atol=1e-5
    )
    ignored = run["three"].run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": 1 + 0 * ids})[0]
    np.testing.assert_allclose(ignored, reference, atol=1e-5)  # the added input does not change the result
    assert prepare_graph(original, wanted_inputs=["input_ids", "attention_mask", "token_type_ids"])[0] is original


def _copy_export(
    src: Path, dst: Path, *, metadata: dict[str, Any] | None = None, config: dict[str, Any] | None = None
) -> Path:
    shutil.copytree(src, dst)
    for name, changes in (("syntriever.json", metadata), ("config.json", config)):
        if changes:
            data = json.loads((dst / name).read_text())
            data.update(changes)
            (dst / name).write_text(json.dumps(data))
    return dst


def test_non_bert_model_type_gets_a_two_input_graph(exported_bi_encoder: Path, tmp_path: Path) -> None:
    export = _copy_export(exported_bi_encoder, tmp_path / "electra-like", config={"model_type": "electra"})
    bundle = build_bundle(export, tmp_path / "e.zip")
    assert bundle.register_body["model_config"]["model_type"] == "electra"
    assert bundle.model_inputs == ["input_ids", "attention_mask"]  # the translator feeds 2 inputs for it
    ours = SyntrieverTextEmbedder(model=str(exported_bi_encoder), prefix="")
    ours.warm_up()
    expected = np.array([ours.run(text=t)["embedding"] for t in DOCS])
    assert _cosines(ml_commons_embed(bundle, DOCS), expected).min() > 0.999


def test_last_token_pooling_is_baked_into_the_graph(exported_bi_encoder: Path, tmp_path: Path) -> None:
    export = _copy_export(exported_bi_encoder, tmp_path / "lasttoken", metadata={"pooling": "lasttoken"})
    bundle = build_bundle(export, tmp_path / "lt.zip")
    assert bundle.register_body["model_config"]["pooling_mode"] == "cls"
    assert any("last-token" in e for e in bundle.graph_edits)
    _, outputs = graph_inputs_outputs(read_bundle_zip(bundle.zip_path)["model.onnx"])
    assert outputs == ["sentence_embedding"]
    ours = SyntrieverTextEmbedder(model=str(export), prefix="")
    ours.warm_up()
    expected = np.array([ours.run(text=t)["embedding"] for t in DOCS])
    assert _cosines(ml_commons_embed(bundle, DOCS), expected).min() > 0.999


def test_asymmetric_bundle_registers_prefixes(exported_bi_encoder: Path, tmp_path: Path) -> None:
    bundle = build_bundle(exported_bi_encoder, tmp_path / "a.zip", asymmetric=True)
    assert bundle.asymmetric
    assert bundle.register_body["model_config"]["query_prefix"] == "query: "
    assert bundle.register_body["model_config"]["passage_prefix"] == ""


def test_bundle_errors_name_the_fix(exported_bi_encoder: Path, exported_cross_encoder: Path, tmp_path: Path) -> None:
    with pytest.raises(ExportedModelError, match="syntriever export"):
        build_bundle(tmp_path / "missing", tmp_path / "x.zip")
    no_int8 = _copy_export(exported_bi_encoder, tmp_path / "fp32-only", metadata={"files": {"fp32": "onnx/model.onnx"}})
    with pytest.raises(ExportedModelError, match="--precision fp32"):
        build_bundle(no_int8, tmp_path / "x.zip", precision="int8")
    prefixed = _copy_export(exported_cross_encoder, tmp_path / "ce-prefix", metadata={"query_prefix": "q: "})
    assert "rerank processor does not add" in build_bundle(prefixed, tmp_path / "p.zip").warnings[0]

    import onnx

    newer = _copy_export(exported_bi_encoder, tmp_path / "ir10")
    model = onnx.load(str(newer / "onnx" / "model.onnx"))
    model.ir_version = 10
    onnx.save(model, str(newer / "onnx" / "model.onnx"))
    with pytest.raises(ExportedModelError, match="IR version 10"):
        build_bundle(newer, tmp_path / "ir.zip", chunk_size=CHUNK_SIZE)


# ---------------------------------------------------------------------------------------------- client
class ScriptedTransport:
    """Records (method, path, body) and answers from per-route queues (the last answer repeats)."""

    def __init__(self, routes: dict[str, list[Any]]) -> None:
        self.routes = {re.compile(pattern): list(answers) for pattern, answers in routes.items()}
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, method: str, url: str, body: Any = None, **_: Any) -> Any:
        self.calls.append((method, url, body))
        for pattern, answers in self.routes.items():
            if pattern.fullmatch(f"{method} {url}"):
                answer = answers.pop(0) if len(answers) > 1 else answers[0]
                if isinstance(answer, Exception):
                    raise answer
                return answer(body) if callable(answer) else answer
        raise AssertionError(f"unexpected request {method} {url}")

    def paths(self) -> list[str]:
        return [f"{m} {u}" for m, u, _ in self.calls]


def _client(monkeypatch: pytest.MonkeyPatch, transport: ScriptedTransport) -> Any:
    from opensearchpy import OpenSearch

    client = OpenSearch(hosts=["http://localhost:9200"])  # no connection is opened until a request
    monkeypatch.setattr(client.transport, "perform_request", transport)
    return client


def _request_error(status: int, reason: str) -> Exception:
    from opensearchpy.exceptions import RequestError, TransportError

    cls = RequestError if status == 400 else TransportError
    return cls(
        status, "illegal_argument_exception", {"error": {"type": "illegal_argument_exception", "reason": reason}}
    )


def _lifecycle_routes(model_id: str = "m1", task_id: str = "t1") -> dict[str, list[Any]]:
    return {
        r"POST /_plugins/_ml/model_groups/_register": [{"model_group_id": "g1", "status": "CREATED"}],
        r"POST /_plugins/_ml/models/_register_meta": [{"model_id": model_id, "status": "CREATED"}],
        rf"POST /_plugins/_ml/models/{model_id}/upload_chunk/\d+": [{"status": "Uploaded"}],
        rf"GET /_plugins/_ml/models/{model_id}": [{"model_state": "REGISTERING"}, {"model_state": "REGISTERED"}],
        rf"POST /_plugins/_ml/models/{model_id}/_deploy": [{"task_id": task_id, "status": "CREATED"}],
        rf"GET /_plugins/_ml/tasks/{task_id}": [
            {"state": "CREATED"},
            {"state": "RUNNING"},
            {"model_id": model_id, "task_type": "DEPLOY_MODEL", "state": "COMPLETED"},
        ],
    }


def test_register_and_deploy_request_sequence(
    monkeypatch: pytest.MonkeyPatch, exported_bi_encoder: Path, tmp_path: Path
) -> None:
    bundle = build_bundle(exported_bi_encoder, tmp_path / "r.zip", chunk_size=40_000)
    transport = ScriptedTransport(_lifecycle_routes())
    sleeps: list[float] = []
    ml = MLCommonsClient(_client(monkeypatch, transport), poll_interval=0.5, sleep=sleeps.append)
    model = ml.register_and_deploy(bundle, model_group="syntriever")
    assert (model.model_id, model.model_group_id, model.function_name) == ("m1", "g1", "TEXT_EMBEDDING")

    n = bundle.total_chunks
    assert transport.paths() == [
        "POST /_plugins/_ml/model_groups/_register",
        "POST /_plugins/_ml/models/_register_meta",
        *[f"POST /_plugins/_ml/models/m1/upload_chunk/{i}" for i in range(n)],
        "GET /_plugins/_ml/models/m1",
        "GET /_plugins/_ml/models/m1",
        "POST /_plugins/_ml/models/m1/_deploy",
        "GET /_plugins/_ml/tasks/t1",
        "GET /_plugins/_ml/tasks/t1",
        "GET /_plugins/_ml/tasks/t1",
    ]
    bodies = [body for _, _, body in transport.calls]
    assert bodies[0] == {"name": "syntriever", "description": "syntriever-haystack models"}
    assert bodies[1] == {**bundle.register_body, "model_group_id": "g1"}
    chunks = bodies[2 : 2 + n]
    assert all(isinstance(c, bytes) and len(c) <= 40_000 for c in chunks)
    assert b"".join(chunks) == bundle.zip_path.read_bytes()
    assert bodies[2 + n + 2] is None  # _deploy has no body
    assert sleeps == [0.5, 0.5, 0.5]  # one REGISTERING poll, CREATED and RUNNING task polls


def test_failed_task_surfaces_the_cluster_error(monkeypatch: pytest.MonkeyPatch) -> None:
    error = json.dumps({"node-1": "Failed to deploy model m1: Input mismatch, looking for: [input_ids]"})
    transport = ScriptedTransport({r"GET /_plugins/_ml/tasks/t9": [{"state": "FAILED", "error": error}]})
    ml = MLCommonsClient(_client(monkeypatch, transport), sleep=lambda _: None)
    with pytest.raises(MLCommonsError) as info:
        ml.wait_for_task("t9", what="Deploying model m1")
    message = str(info.value)
    assert "task t9 ended FAILED: node-1: Failed to deploy model m1: Input mismatch" in message
    assert "syntriever mlcommons bundle" in message


def test_task_timeout_names_the_task(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    transport = ScriptedTransport({r"GET /_plugins/_ml/tasks/t2": [{"state": "RUNNING"}]})
    ml = MLCommonsClient(_client(monkeypatch, transport), poll_interval=10, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(MLCommonsError, match=r"task t2 still RUNNING after 30 s"):
        ml.wait_for_task("t2", timeout=30)
    assert len(transport.calls) == 4


def test_memory_error_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    task = {"state": "FAILED", "error": "Memory Circuit Breaker is open, please check your resources!"}
    transport = ScriptedTransport({r"GET /_plugins/_ml/tasks/t3": [task]})
    ml = MLCommonsClient(_client(monkeypatch, transport), sleep=lambda _: None)
    with pytest.raises(MLCommonsError, match="native_memory_threshold"):
        ml.wait_for_task("t3")


def test_existing_model_group_is_reused(monkeypatch: pytest.MonkeyPatch) -> None:
    reason = "The name you provided is already being used by a model group with ID: Ab_c-12."
    transport = ScriptedTransport({r"POST /_plugins/_ml/model_groups/_register": [_request_error(400, reason)]})
    assert MLCommonsClient(_client(monkeypatch, transport)).register_model_group("syntriever") == "Ab_c-12"


def test_disabled_local_file_registration_names_the_fix(
    monkeypatch: pytest.MonkeyPatch, bi_bundle: MlCommonsBundle
) -> None:
    reason = (
        "To upload custom model from local file, user needs to enable allow_registering_model_via_local_file "
        "settings. Otherwise please use opensearch pre-trained models"
    )
    transport = ScriptedTransport({r"POST /_plugins/_ml/models/_register_meta": [_request_error(400, reason)]})
    ml = MLCommonsClient(_client(monkeypatch, transport))
    with pytest.raises(MLCommonsError) as info:
        ml.register_bundle(bi_bundle, model_group_id="g1")
    assert "400 To upload custom model" in str(info.value)
    assert "--dev-cluster-settings" in str(info.value)


def test_connection_errors_pass_through(monkeypatch: pytest.MonkeyPatch) -> None:
    from opensearchpy.exceptions import ConnectionError

    transport = ScriptedTransport({r"PUT /_cluster/settings": [ConnectionError("N/A", "refused", None)]})
    with pytest.raises(ConnectionError):  # the CLI turns these into "cannot connect ... --opensearch-url"
        MLCommonsClient(_client(monkeypatch, transport)).apply_dev_cluster_settings()


def test_dev_settings_predict_and_pipelines_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    embedding = {"inference_results": [{"output": [{"name": "sentence_embedding", "shape": [2], "data": [0.6, 0.8]}]}]}
    scores = {"inference_results": [{"output": [{"name": "similarity", "data": [s]}]} for s in (2.5, -1.0)]}
    transport = ScriptedTransport(
        {
            r"PUT /_cluster/settings": [{"acknowledged": True}],
            r"POST /_plugins/_ml/_predict/text_embedding/m1": [embedding],
            r"POST /_plugins/_ml/models/m2/_predict": [scores],
            r"PUT /_ingest/pipeline/embed": [{"acknowledged": True}],
            r"PUT /_search/pipeline/rerank": [{"acknowledged": True}],
        }
    )
    ml = MLCommonsClient(_client(monkeypatch, transport))
    ml.apply_dev_cluster_settings()
    assert ml.embed("m1", ["hello"]) == [[0.6, 0.8]]
    assert ml.similarity("m2", "q", ["a", "b"]) == [2.5, -1.0]
    ml.put_ingest_pipeline("embed", ingest_pipeline_body("m1", {"content": "embedding"}))
    ml.put_search_pipeline("rerank", search_pipeline_body("m2", ["content"]))
    assert transport.calls == [
        ("PUT", "/_cluster/settings", {"persistent": DEV_CLUSTER_SETTINGS}),
        (
            "POST",
            "/_plugins/_ml/_predict/text_embedding/m1",
            {"text_docs": ["hello"], "return_number": True, "target_response": ["sentence_embedding"]},
        ),
        ("POST", "/_plugins/_ml/models/m2/_predict", {"query_text": "q", "text_docs": ["a", "b"]}),
        (
            "PUT",
            "/_ingest/pipeline/embed",
            {
                "description": "syntriever: embed documents in OpenSearch (ML Commons text_embedding)",
                "processors": [{"text_embedding": {"model_id": "m1", "field_map": {"content": "embedding"}}}],
            },
        ),
        (
            "PUT",
            "/_search/pipeline/rerank",
            {
                "description": "syntriever: rerank in OpenSearch (ML Commons cross-encoder)",
                "response_processors": [
                    {"rerank": {"ml_opensearch": {"model_id": "m2"}, "context": {"document_fields": ["content"]}}}
                ],
            },
        ),
    ]
    assert DEV_CLUSTER_SETTINGS == {
        "plugins.ml_commons.only_run_on_ml_node": "false",
        "plugins.ml_commons.allow_registering_model_via_local_file": "true",
        "plugins.ml_commons.native_memory_threshold": "99",
        "plugins.ml_commons.jvm_heap_memory_threshold": "95",
    }


def test_requests_go_through_opensearch_py_methods(monkeypatch: pytest.MonkeyPatch) -> None:
    """client.plugins.ml / ingest / search_pipeline make the requests; one missing from opensearch-py goes raw."""
    task = {"state": "COMPLETED"}
    transport = ScriptedTransport(
        {
            r"GET /_plugins/_ml/tasks/t1": [task],
            r"POST /_plugins/_ml/models/m2/_predict": [{"inference_results": []}],
            r"PUT /_search/pipeline/rerank": [{"acknowledged": True}],
        }
    )
    client = _client(monkeypatch, transport)
    used: list[str] = []
    for namespace, name in ((client.plugins.ml, "get_task"), (client.search_pipeline, "put")):
        original = getattr(namespace, name)

        def spy(*args: Any, _original: Any = original, _name: str = name, **kwargs: Any) -> Any:
            used.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(namespace, name, spy)
    monkeypatch.setattr(client.plugins.ml, "predict_model", None)  # as if this opensearch-py did not wrap it
    ml = MLCommonsClient(client, sleep=lambda _: None)
    assert ml.wait_for_task("t1") == task
    assert ml.similarity("m2", "q", []) == []
    ml.put_search_pipeline("rerank", search_pipeline_body("m2", ["content"]))
    assert used == ["get_task", "put"]
    assert transport.paths() == [
        "GET /_plugins/_ml/tasks/t1",
        "POST /_plugins/_ml/models/m2/_predict",
        "PUT /_search/pipeline/rerank",
    ]


def test_query_and_index_bodies() -> None:
    assert neural_query("embedding", "heart", "m1", k=5, query_prefix="query: ") == {
        "neural": {"embedding": {"query_text": "query: heart", "model_id": "m1", "k": 5}}
    }
    body = search_body("embedding", "heart", "m1", k=20, size=5, query_prefix="query: ", rerank=True)
    assert body["size"] == 5
    assert body["query"]["neural"]["embedding"]["k"] == 20
    assert body["ext"] == {"rerank": {"query_context": {"query_text": "heart"}}}  # the reranker gets the raw query
    index = neural_index_body("embedding", 32, ingest_pipeline="embed", search_pipeline="rerank")
    assert index["settings"] == {
        "index.knn": True,
        "index.default_pipeline": "embed",
        "index.search.default_pipeline": "rerank",
    }
    assert index["mappings"]["properties"]["embedding"] == {
        "type": "knn_vector",
        "dimension": 32,
        "method": {"name": "hnsw", "engine": "lucene", "space_type": "cosinesimil"},
    }
    with pytest.raises(SyntrieverError, match="field-map"):
        ingest_pipeline_body("m1", {})


def test_ingest_pipeline_with_document_prefix_keeps_the_stored_text() -> None:
    body = ingest_pipeline_body("m1", {"content": "embedding", "meta.title": "title_vec"}, document_prefix="passage: ")
    assert body["processors"] == [
        {
            "set": {
                "field": "_syntriever_prefixed_content",
                "value": "passage: {{{content}}}",
                "if": "ctx.content != null",
            }
        },
        {
            "set": {
                "field": "_syntriever_prefixed_meta_title",
                "value": "passage: {{{meta.title}}}",
                "if": "ctx.meta?.title != null",
            }
        },
        {
            "text_embedding": {
                "model_id": "m1",
                "field_map": {
                    "_syntriever_prefixed_content": "embedding",
                    "_syntriever_prefixed_meta_title": "title_vec",
                },
            }
        },
        {
            "remove": {
                "field": ["_syntriever_prefixed_content", "_syntriever_prefixed_meta_title"],
                "ignore_missing": True,
            }
        },
    ]


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_bundle(exported_cross_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bundles" / "reranker.zip"
    assert main(["mlcommons", "bundle", str(exported_cross_encoder), str(out), "--precision", "int8"]) == 0
    printed = capsys.readouterr().out
    assert "TEXT_SIMILARITY bundle" in printed
    assert "sha256" in printed
    assert out.is_file()
    assert (tmp_path / "bundles" / "reranker.ml-commons.json").is_file()


def test_cli_bundle_into_an_existing_folder_is_one_line_and_leaves_nothing(
    exported_bi_encoder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "bundles"
    folder.mkdir()
    assert main(["mlcommons", "bundle", str(exported_bi_encoder), str(folder)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {folder} is a folder")
    assert "model.zip" in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err
    assert list(tmp_path.rglob("*partial*")) == []
    assert list(folder.iterdir()) == []
    # a write that fails midway (disk full, ...) removes its .partial file too
    import syntriever_haystack.export.ml_commons_bundle as bundle_module

    def full_disk(self: Any, *args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bundle_module.zipfile.ZipFile, "writestr", full_disk)
    out = folder / "bi.zip"
    assert main(["mlcommons", "bundle", str(exported_bi_encoder), str(out)]) == 1
    err = capsys.readouterr().err
    assert "could not write" in err
    assert "No space left on device" in err
    assert list(tmp_path.rglob("*partial*")) == []
    assert not out.exists()


def _patch_connection(monkeypatch: pytest.MonkeyPatch, factory: Callable[[], Any]) -> None:
    from syntriever_haystack.opensearch.connection import OpenSearchConnection

    monkeypatch.setattr(OpenSearchConnection, "client", lambda self: factory())


def test_cli_deploy_both_models(
    monkeypatch: pytest.MonkeyPatch,
    exported_bi_encoder: Path,
    exported_cross_encoder: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    routes = {**_lifecycle_routes("m2", "t2"), **_lifecycle_routes("m1", "t1")}
    routes[r"POST /_plugins/_ml/models/_register_meta"] = [
        {"model_id": "m1", "status": "CREATED"},
        {"model_id": "m2", "status": "CREATED"},
    ]
    routes[r"PUT /_cluster/settings"] = [{"acknowledged": True}]
    routes[r"PUT /_ingest/pipeline/embed"] = [{"acknowledged": True}]
    routes[r"PUT /_search/pipeline/rerank"] = [{"acknowledged": True}]
    transport = ScriptedTransport(routes)
    _patch_connection(monkeypatch, lambda: _client(monkeypatch, transport))
    argv = ["mlcommons", "deploy", str(exported_cross_encoder), str(exported_bi_encoder)]
    argv += ["--opensearch-url", "http://localhost:9200", "--dev-cluster-settings", "--poll-interval", "0"]
    argv += ["--ingest-pipeline", "embed", "--field-map", "content:embedding", "--search-pipeline", "rerank"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "retriever model_id: m1" in printed
    assert "reranker model_id: m2" in printed
    example = json.loads(printed[printed.index("POST /INDEX/_search?search_pipeline=rerank") :].split("\n", 1)[1])
    assert example["query"] == {
        "neural": {"embedding": {"query_text": "query: your question", "model_id": "m1", "k": 10}}
    }
    assert example["ext"]["rerank"]["query_context"]["query_text"] == "your question"
    paths = transport.paths()
    assert paths[0] == "PUT /_cluster/settings"
    assert paths[1] == "POST /_plugins/_ml/model_groups/_register"
    assert paths.index("POST /_plugins/_ml/models/m1/_deploy") < paths.index("POST /_plugins/_ml/models/m2/_deploy")
    assert paths[-2:] == ["PUT /_ingest/pipeline/embed", "PUT /_search/pipeline/rerank"]
    metas = [
        body
        for method_url, body in zip(paths, [c[2] for c in transport.calls], strict=True)
        if "_register_meta" in method_url
    ]
    assert [m["function_name"] for m in metas] == ["TEXT_EMBEDDING", "TEXT_SIMILARITY"]


def test_cli_deploy_errors(
    monkeypatch: pytest.MonkeyPatch, exported_cross_encoder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _patch_connection(monkeypatch, lambda: pytest.fail("no request may be sent"))
    assert main(["mlcommons", "deploy", str(exported_cross_encoder), "--ingest-pipeline", "embed"]) == 1
    assert "--ingest-pipeline needs a bi-encoder" in capsys.readouterr().err
    assert main(["mlcommons", "deploy", str(exported_cross_encoder), "--field-map", "content"]) == 1
    assert "SOURCE:TARGET" in capsys.readouterr().err


def test_bundle_builds_without_torch_or_onnx(
    exported_bi_encoder: Path, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    import textwrap

    from tests.unit.test_torch_free_and_pipelines import BLOCK_TORCH, _run

    code = BLOCK_TORCH + textwrap.dedent(
        f"""
        import json
        from syntriever_haystack.export.ml_commons_bundle import build_bundle
        b = build_bundle({str(exported_bi_encoder)!r}, {str(tmp_path / "nt.zip")!r})
        print(json.dumps({{"sha": b.sha256, "inputs": b.model_inputs}}))
        """
    )
    result = _run(code, subprocess_env)
    assert result["inputs"] == ["input_ids", "attention_mask", "token_type_ids"]
    assert result["sha"] == build_bundle(exported_bi_encoder, tmp_path / "with-onnx.zip").sha256


def test_chunks_go_over_the_wire_as_raw_bytes(exported_bi_encoder: Path, tmp_path: Path) -> None:
    """Through the real transport and serializer: chunk bodies are the zip's bytes, sent as opensearch-py-ml does."""
    from opensearchpy import Connection, OpenSearch

    bundle = build_bundle(exported_bi_encoder, tmp_path / "wire.zip", chunk_size=40_000)
    script = ScriptedTransport(_lifecycle_routes())
    wire: list[tuple[str, str, Any, str]] = []

    class _Recording(Connection):
        def perform_request(
            self,
            method: str,
            url: str,
            params: Any = None,
            body: Any = None,
            timeout: Any = None,
            ignore: Any = (),
            headers: Any = None,
        ) -> tuple[int, dict[str, str], str]:
            wire.append((method, url, body, self.headers.get("content-type", "")))
            decoded = json.loads(body) if body and "upload_chunk" not in url else body
            return 200, {"content-type": "application/json"}, json.dumps(script(method, url, decoded))

    client = OpenSearch(hosts=["http://localhost:9200"], connection_class=_Recording, max_retries=0)
    model_id = MLCommonsClient(client, sleep=lambda _: None).register_bundle(bundle, model_group_id="g1")
    assert model_id == "m1"
    chunk_calls = [(body, ctype) for _, url, body, ctype in wire if "/upload_chunk/" in url]
    assert len(chunk_calls) == bundle.total_chunks
    assert all(isinstance(body, bytes) for body, _ in chunk_calls)
    assert b"".join(body for body, _ in chunk_calls) == bundle.zip_path.read_bytes()
    assert {ctype for _, ctype in chunk_calls} == {"application/json"}  # OpenSearch's REST layer needs a known type
    meta = json.loads(next(body for _, url, body, _ in wire if url.endswith("/_register_meta")))
    assert meta == {**bundle.register_body, "model_group_id": "g1"}
