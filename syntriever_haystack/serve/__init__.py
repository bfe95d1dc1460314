"""Serving: torch-free ONNX Runtime inference and the Haystack components built on it.

The components themselves live in the ``haystack_integrations`` namespace (as every Haystack integration's
do), so Haystack 3 loads YAML pipelines that use them with its default module allow-list:

- ``haystack_integrations.components.embedders.syntriever.SyntrieverTextEmbedder``
- ``haystack_integrations.components.embedders.syntriever.SyntrieverDocumentEmbedder``
- ``haystack_integrations.components.rankers.syntriever.SyntrieverRanker``
"""
