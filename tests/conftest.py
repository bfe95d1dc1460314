"""Shared fixtures: offline environment, network blocking for unit tests, tiny locally-built models."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATASETS = (ROOT / ".." / "shared" / "datasets").resolve()

# Nothing in the test-suite may reach a hub or phone home.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["HAYSTACK_TELEMETRY_ENABLED"] = "False"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Words of the tiny WordPiece vocabulary. Anything else becomes [UNK] or sub-word pieces.
WORDS = """
the a an of to in and or is are was were be by for on with as at from that this it its not no
what which who how why when where does do did can should could would may might will
cause causes caused anaemia anemia iron deficiency blood loss diet diabetes insulin glucose heart
attack aspirin risk treatment patients disease cancer brain tumour tumor adults children cell cells
protein gene genes study trial trials randomized effect effects increase decrease reduce reduced
high low level levels vitamin bone fracture fractures elderly kidney liver lung virus infection
paris france capital city berlin germany tower built river dog fox quick brown lazy jumps over
search engine rank ranking document documents query queries score bm25 dense vector index
water energy light plant plants sun earth moon star music art book books wrote novel author
one two three four five six seven eight nine ten 1 2 3 4 5 6 7 8 9 0
""".split()
SUBWORDS = [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + list("abcdefghijklmnopqrstuvwxyz")
PUNCT = list(".,;:!?'\"()-/%&<>")
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests under tests/unit are `unit` tests unless they say otherwise."""
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts and not any(m in item.keywords for m in ("integration", "slow")):
            item.add_marker(pytest.mark.unit)


_TRUE_CONNECT = socket.socket.connect  # before any test patched it


@pytest.fixture(autouse=True)
def _block_network_in_unit_tests(request: pytest.FixtureRequest) -> object:
    """Unit tests run with sockets disabled (loopback Unix sockets stay allowed), like Haystack's own."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    import pytest_socket

    if request.node.get_closest_marker("loopback") is not None:
        # A scripted server the test started itself on 127.0.0.1: allowed; every other host stays blocked.
        pytest_socket.socket_allow_hosts(["127.0.0.1", "localhost"], allow_unix_socket=True)
    else:
        pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        # undo both kinds of restriction: enable_socket() alone leaves socket_allow_hosts' connect guard in place
        pytest_socket.enable_socket()
        socket.socket.connect = _TRUE_CONNECT  # type: ignore[method-assign]


def _write_vocab(path: Path) -> Path:
    vocab = list(dict.fromkeys(SPECIAL + WORDS + PUNCT + SUBWORDS))
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def build_tiny_bert(directory: Path, *, kind: str, seed: int = 0, max_length: int = 64) -> Path:
    """A 2-layer, 32-wide BERT with a real WordPiece tokenizer, saved like a hub model would be.

    ``kind="bi-encoder"`` writes a sentence-transformers folder (mean pooling + Normalize);
    ``kind="cross-encoder"`` writes an ``AutoModelForSequenceClassification`` folder with 1 logit.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = _write_vocab(directory / "vocab.txt")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab_file), do_lower_case=True, model_max_length=max_length)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    if kind == "cross-encoder":
        # Wide initialisation: a default-initialised (std 0.02) cross-encoder gives almost the same logit to
        # every pair, so no ranking survives int8 noise. A trained reranker has real spread; this has too.
        config.num_labels = 1
        config.initializer_range = 0.3
        model = BertForSequenceClassification(config)
    else:
        model = BertModel(config, add_pooling_layer=False)
    model.eval()
    model.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    if kind == "bi-encoder":
        (directory / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                    {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
                ]
            )
        )
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": 32, "pooling_mode_mean_tokens": True})
        )
        (directory / "2_Normalize").mkdir(exist_ok=True)
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_length}))
        (directory / "config_sentence_transformers.json").write_text(
            json.dumps({"prompts": {"query": "query: ", "document": ""}, "similarity_fn_name": "cosine"})
        )
    return directory


@pytest.fixture(scope="session")
def tiny_bi_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("src") / "tiny-bi-encoder", kind="bi-encoder")


@pytest.fixture(scope="session")
def tiny_cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("src") / "tiny-cross-encoder", kind="cross-encoder")


def write_probe_file(path: Path, *, kind: str, seed: int = 1, n: int = 60) -> Path:
    """Probes in the tiny models' own vocabulary (the built-in probes are mostly [UNK] to them)."""
    import random

    rng = random.Random(seed)
    content = [w for w in WORDS if len(w) > 3]
    lines = []
    for _ in range(n):
        query = rng.sample(content, 3)
        overlap = rng.randint(0, 3)
        doc = query[:overlap] + rng.sample(content, rng.randint(4, 30))
        rng.shuffle(doc)
        lines.append(" ".join(query) + "\t" + " ".join(doc) if kind == "cross-encoder" else " ".join(doc))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def exported_bi_encoder(tiny_bi_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from syntriever_haystack.export import export_model

    return export_model(tiny_bi_encoder, tmp_path_factory.mktemp("onnx") / "bi", measure_speed=False).output_dir


@pytest.fixture(scope="session")
def exported_cross_encoder(tiny_cross_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from syntriever_haystack.export import export_model

    probes = write_probe_file(tmp_path_factory.mktemp("probes") / "pairs.tsv", kind="cross-encoder")
    return export_model(
        tiny_cross_encoder, tmp_path_factory.mktemp("onnx") / "ce", probe_file=probes, measure_speed=False
    ).output_dir


@pytest.fixture(scope="session")
def subprocess_env() -> dict[str, str]:
    """Environment for child Python processes: offline, no telemetry, this interpreter's packages."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HAYSTACK_TELEMETRY_ENABLED": "False",
            "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        }
    )
    return env


PYTHON = sys.executable


from tests.integration.opensearch_service import opensearch_url  # noqa: E402,F401  (session fixture)
