"""Unreadable input files of ``generate`` / ``train`` fail with one line naming the file, creating nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from syntriever_haystack.errors import SyntrieverError
from syntriever_haystack.generate.accounting import PriceTable
from syntriever_haystack.generate.cache import CacheError, ResponseCache, check_cache_file
from syntriever_haystack.generate.local_llm import resolve_model
from syntriever_haystack.generate.prompts import PromptError, load_prompts
from syntriever_haystack.train.data import TrainingDataError, load_reranker_groups, load_stage1_examples

NONUTF8 = "café\n".encode("latin-1") + b"\xff\xfe\n"


def test_cache_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(CacheError, match=rf"{tmp_path.name} is a folder.*--cache"):
        ResponseCache(tmp_path)


def test_cache_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CacheError, match=r"c\.sqlite is not a SQLite database"):
        ResponseCache(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.sqlite"]  # no -wal / -shm left behind


def test_cache_missing_and_empty_files_are_fine(tmp_path: Path) -> None:
    check_cache_file(tmp_path / "new" / "c.sqlite")
    assert not (tmp_path / "new").exists()  # checking creates nothing
    (tmp_path / "empty.sqlite").write_bytes(b"")
    with ResponseCache(tmp_path / "empty.sqlite") as cache:
        assert len(cache) == 0
    with sqlite3.connect(tmp_path / "empty.sqlite") as db:  # a real database is accepted
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone() == (0,)
    check_cache_file(tmp_path / "empty.sqlite")


def test_corrupt_gguf_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"m\.gguf is not a GGUF file"):
        resolve_model(str(path), tmp_path)


@pytest.mark.parametrize("data", [NONUTF8, bytes(range(256)) * 4, b"a: [unclosed\n"])
def test_prompt_file_errors_name_the_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "p.yaml"
    path.write_bytes(data)
    with pytest.raises(PromptError, match=r"p\.yaml"):
        load_prompts(path)


@pytest.mark.parametrize("data", [NONUTF8, b"{oops\n"])
def test_price_file_errors_name_the_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "prices.json"
    path.write_bytes(data)
    with pytest.raises(SyntrieverError, match=r"prices\.json"):
        PriceTable.load(path)


@pytest.mark.parametrize("data", [NONUTF8, bytes(range(256)) * 4, b'{"kind": "retriever"\n'])
def test_training_data_errors_name_the_file(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(data)
    with pytest.raises(TrainingDataError, match=r"d\.jsonl:1: not (UTF-8 text|valid JSON)"):
        load_stage1_examples(path)
    with pytest.raises(TrainingDataError, match=r"d\.jsonl:1"):
        load_reranker_groups(path)
