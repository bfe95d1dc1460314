"""`syntriever serve` blocks torch in the serving process when the pipeline needs none of it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from syntriever_haystack.serve.torch_free import is_torch_free

ROOT = Path(__file__).resolve().parents[2]


def _run_python(code: str) -> None:
    """Run ``code`` in a fresh interpreter (imports start from nothing); it must exit 0."""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


TORCH_FREE_YAML = """
components:
  bm25_retriever:
    type: haystack_integrations.components.retrievers.syntriever.bm25_retriever.SyntrieverBM25Retriever
    init_parameters:
      document_store:
        type: haystack_integrations.document_stores.syntriever.document_store.SyntrieverInMemoryDocumentStore
        init_parameters: {path: ../data/document_store.json}
  joiner:
    type: haystack_integrations.components.joiners.syntriever.score_fusion_joiner.SyntrieverScoreFusionJoiner
    init_parameters: {}
  ranker:
    type: haystack_integrations.components.rankers.syntriever.ranker.SyntrieverRanker
    init_parameters: {model: ../models/reranker}
connections: []
"""


def test_only_pipelines_of_known_torch_free_classes_are_torch_free() -> None:
    assert is_torch_free(TORCH_FREE_YAML)
    needs_torch = TORCH_FREE_YAML.replace(
        "haystack_integrations.components.rankers.syntriever.ranker.SyntrieverRanker",
        "haystack.components.rankers.sentence_transformers_similarity.SentenceTransformersSimilarityRanker",
    )
    assert not is_torch_free(needs_torch)
    store = "haystack_integrations.document_stores.syntriever.document_store.SyntrieverInMemoryDocumentStore"
    assert not is_torch_free(TORCH_FREE_YAML.replace(store, "my_package.TorchStore"))  # nested types count too
    assert not is_torch_free("components: {}\n")  # nothing to judge by
    assert not is_torch_free("components: [\n")  # unreadable


def test_blocked_process_imports_haystack_and_the_serving_components_without_torch() -> None:
    code = (
        "import sys\n"
        "from syntriever_haystack.serve.torch_free import block_torch\n"
        "assert block_torch()\n"
        "import haystack\n"
        "from haystack_integrations.components.rankers.syntriever import SyntrieverRanker\n"
        "from haystack_integrations.document_stores.syntriever import SyntrieverInMemoryDocumentStore\n"
        "assert not any(m.split('.')[0] in ('torch', 'transformers') for m in sys.modules), 'torch was imported'\n"
        "try:\n"
        "    import torch\n"
        "except ModuleNotFoundError as exc:\n"
        "    assert 'torch-free' in str(exc)\n"
        "else:\n"
        "    raise AssertionError('torch imported')\n"
    )
    _run_python(code)


def test_the_serve_command_line_imports_no_training_module_before_it_serves() -> None:
    code = (
        "import sys\n"
        "from syntriever_haystack import cli\n"
        "parser = cli._serve_parser()\n"
        "assert parser is not None\n"
        "assert parser.parse_args(['serve', 'RUN']).run == 'RUN'\n"
        "assert 'torch' not in sys.modules and 'syntriever_haystack.train' not in sys.modules\n"
    )
    _run_python(code)
