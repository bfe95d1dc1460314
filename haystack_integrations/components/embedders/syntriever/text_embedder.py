from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from haystack import component, default_from_dict, default_to_dict

from syntriever_haystack.runtime.encode import embed_queries
from syntriever_haystack.runtime.inputs import check_count, check_text, legacy_quantization
from syntriever_haystack.runtime.locations import resolve_path
from syntriever_haystack.runtime.onnx_model import OnnxModel, load_onnx_model


@component
class SyntrieverTextEmbedder:
    """
    Embeds a query string with an exported (ONNX) bi-encoder, without torch.

    Use it in query pipelines, in front of an embedding retriever. The model directory is the output of
    ``syntriever export`` (a sentence-transformers model, base or trained by syntriever-haystack).
    The query prefix and normalisation default to what the exported model's ``syntriever.json`` says.

    ### Usage example

    ```python
    from syntriever_haystack import SyntrieverTextEmbedder

    embedder = SyntrieverTextEmbedder(model="models/minilm-onnx", quantization="int8")
    embedder.warm_up()
    print(embedder.run(text="What causes anaemia?")["embedding"][:3])
    # [0.0213, -0.0472, 0.0911]
    ```
    """

    def __init__(
        self,
        *,
        model: str | Path,
        quantization: Literal["auto", "fp32", "int8"] = "auto",
        file_name: str | None = None,
        providers: list[str] | None = None,
        num_threads: int | None = None,
        max_length: int | None = None,
        prefix: str | None = None,
        suffix: str = "",
        batch_size: int = 32,
        progress_bar: bool = False,
        normalize_embeddings: bool | None = None,
    ) -> None:
        """
        Create a SyntrieverTextEmbedder. Nothing is loaded until :meth:`warm_up` (or the first :meth:`run`).

        :param model: Directory written by ``syntriever export`` for a bi-encoder.
            A relative path resolves against the pipeline's folder (``load_pipeline``),
            ``$SYNTRIEVER_PIPELINE_DIR`` or the current directory, once, here.
        :param quantization: Which exported ONNX weights run: ``"auto"`` (default: the variant the export measured
            fastest on its machine among those that passed the parity gate, ``serving.default`` in ``syntriever.json``;
            fp32 for exports without that record), ``"fp32"`` (not quantised, exact) or ``"int8"``
            (dynamically quantised, ~2x faster on CPU). This is not sentence-transformers-haystack's ``precision``
            (the precision of the returned embedding), which these components do not change.
        :param file_name: ONNX file to run, relative to ``model``; overrides ``quantization``.
        :param providers: ONNX Runtime execution providers in order of preference (default: CPU).
        :param num_threads: ONNX Runtime intra-op threads (default: one per physical core).
        :param max_length: Truncate inputs at this many tokens (at most the exported maximum, the default).
        :param prefix: Text added before the query. ``None`` uses the model's ``query_prefix`` metadata.
        :param suffix: Text added after the query.
        :param batch_size: Kept for parity with the sentence-transformers embedder (one text per run).
        :param progress_bar: Kept for parity with the sentence-transformers embedder.
        :param normalize_embeddings: L2-normalise the embedding. ``None`` follows the model's metadata.
        :raises ValueError: If ``batch_size`` is not an integer >= 1, or ``num_threads`` / ``max_length`` is
            neither ``None`` nor an integer >= 1 (``max_length`` above the exported maximum fails in ``warm_up``).
        """
        check_count("SyntrieverTextEmbedder", "batch_size", batch_size)
        check_count("SyntrieverTextEmbedder", "num_threads", num_threads, optional=True)
        check_count("SyntrieverTextEmbedder", "max_length", max_length, optional=True)
        self.model = str(model)
        self._model_path = resolve_path(model)  # a relative folder: see syntriever_haystack.runtime.locations
        self.quantization = quantization
        self.file_name = file_name
        self.providers = providers
        self.num_threads = num_threads
        self.max_length = max_length
        self.prefix = prefix
        self.suffix = suffix
        self.batch_size = batch_size
        self.progress_bar = progress_bar
        self.normalize_embeddings = normalize_embeddings
        self._model: OnnxModel | None = None

    @property
    def model_path(self) -> Path:
        """The model folder this component loads (``model`` resolved: see ``syntriever_haystack.runtime.locations``)."""
        return self._model_path

    def warm_up(self) -> None:
        """Load the ONNX session and tokenizer. Idempotent: a second call does nothing."""
        if self._model is None:
            self._model = load_onnx_model(
                self._model_path,
                precision=self.quantization,
                file_name=self.file_name,
                providers=self.providers,
                num_threads=self.num_threads,
                max_length=self.max_length,
                expected_kind="bi-encoder",
            )

    def to_dict(self) -> dict[str, Any]:
        """Serialize this component to a dictionary."""
        return default_to_dict(
            self,
            model=self.model,
            quantization=self.quantization,
            file_name=self.file_name,
            providers=self.providers,
            num_threads=self.num_threads,
            max_length=self.max_length,
            prefix=self.prefix,
            suffix=self.suffix,
            batch_size=self.batch_size,
            progress_bar=self.progress_bar,
            normalize_embeddings=self.normalize_embeddings,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntrieverTextEmbedder:
        """Deserialize this component from a dictionary."""
        return default_from_dict(cls, legacy_quantization(data))

    @component.output_types(embedding=list[float])
    def run(self, text: str) -> dict[str, list[float]]:
        """
        Embed a single string.

        :param text: The text to embed. Over-long text is truncated at the model's max length, and only about the
            first ``16 * max_length`` characters are read (see ``syntriever_haystack.runtime.onnx_model``): a
            100,000-character text costs about as much as a window-long one.
        :returns: A dictionary with ``embedding``: the embedding of the text, a list of floats.
        :raises TypeError: If ``text`` is not a string.
        """
        check_text(
            "SyntrieverTextEmbedder",
            text,
            hint="To embed a list of Documents, use SyntrieverDocumentEmbedder.",
        )
        if self._model is None:
            self.warm_up()
        assert self._model is not None
        embedding = embed_queries(
            self._model,
            [text],
            prefix=self.prefix,
            suffix=self.suffix,
            normalize=self.normalize_embeddings,
            batch_size=1,
        )
        return {"embedding": embedding[0].tolist()}
