from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from haystack import Document, component, default_from_dict, default_to_dict

from syntriever_haystack.runtime.encode import embed_documents
from syntriever_haystack.runtime.inputs import (
    check_count,
    check_documents,
    documents_texts,
    legacy_quantization,
    split_textless,
)
from syntriever_haystack.runtime.locations import resolve_path
from syntriever_haystack.runtime.onnx_model import OnnxModel, load_onnx_model


@component
class SyntrieverDocumentEmbedder:
    """
    Embeds Documents with an exported (ONNX) bi-encoder, without torch.

    Stores each embedding in the ``embedding`` field of a *new* Document (the inputs are not modified).
    Texts are sorted by length and each batch is padded only to its longest text, so mixed-length corpora
    embed fast. Use it in indexing pipelines before a ``DocumentWriter``.

    ### Usage example

    ```python
    from haystack import Document
    from syntriever_haystack import SyntrieverDocumentEmbedder

    embedder = SyntrieverDocumentEmbedder(
        model="models/minilm-onnx", quantization="int8", meta_fields_to_embed=["title"]
    )
    embedder.warm_up()
    docs = embedder.run(documents=[Document(content="Iron deficiency causes anaemia.", meta={"title": "Anaemia"})])
    print(len(docs["documents"][0].embedding))
    # 384
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
        progress_bar: bool = True,
        normalize_embeddings: bool | None = None,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
    ) -> None:
        """
        Create a SyntrieverDocumentEmbedder. Nothing is loaded until :meth:`warm_up` (or the first :meth:`run`).

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
        :param prefix: Text added before each document. ``None`` uses the model's ``document_prefix`` metadata.
        :param suffix: Text added after each document.
        :param batch_size: Number of documents per ONNX Runtime call.
        :param progress_bar: Show a progress bar while embedding.
        :param normalize_embeddings: L2-normalise embeddings. ``None`` follows the model's metadata.
        :param meta_fields_to_embed: Meta fields whose values are embedded along with the content.
        :param embedding_separator: Separator between the meta values and the content.
        :raises ValueError: If ``batch_size`` is not an integer >= 1, or ``num_threads`` / ``max_length`` is
            neither ``None`` nor an integer >= 1 (``max_length`` above the exported maximum fails in ``warm_up``).
        """
        check_count("SyntrieverDocumentEmbedder", "batch_size", batch_size)
        check_count("SyntrieverDocumentEmbedder", "num_threads", num_threads, optional=True)
        check_count("SyntrieverDocumentEmbedder", "max_length", max_length, optional=True)
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
        self.meta_fields_to_embed = meta_fields_to_embed or []
        self.embedding_separator = embedding_separator
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
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SyntrieverDocumentEmbedder:
        """Deserialize this component from a dictionary."""
        return default_from_dict(cls, legacy_quantization(data))

    @component.output_types(documents=list[Document])
    def run(self, documents: list[Document]) -> dict[str, list[Document]]:
        """
        Embed a list of Documents.

        :param documents: Documents to embed. Over-long texts are truncated at the model's max length; only about
            the first ``16 * max_length`` characters of a text are read (``syntriever_haystack.runtime.onnx_model``),
            so a huge Document costs little more than a window-long one. Documents without text (``content=None``,
            e.g. images) are not embedded: they are returned unchanged, in place, and a warning is logged.
        :returns: A dictionary with ``documents``: new Documents carrying their ``embedding``, in input order.
        :raises TypeError: If ``documents`` is not a list of Documents with string content.
        """
        check_documents(
            "SyntrieverDocumentEmbedder",
            documents,
            hint="To embed a single string, use SyntrieverTextEmbedder.",
        )
        if self._model is None:
            self.warm_up()
        assert self._model is not None
        with_text, _ = split_textless("SyntrieverDocumentEmbedder", documents)
        texts = documents_texts(
            [documents[i] for i in with_text], meta_fields=self.meta_fields_to_embed, separator=self.embedding_separator
        )
        embeddings = embed_documents(
            self._model,
            texts,
            prefix=self.prefix,
            suffix=self.suffix,
            normalize=self.normalize_embeddings,
            batch_size=self.batch_size,
            progress_bar=self.progress_bar,
        )
        new_documents = list(documents)
        for i, emb in zip(with_text, embeddings, strict=True):
            new_documents[i] = replace(documents[i], embedding=emb.tolist())
        return {"documents": new_documents}
