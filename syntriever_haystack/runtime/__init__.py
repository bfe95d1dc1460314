"""The torch-free runtime at the bottom of the stack: exported-model metadata, ONNX Runtime inference, the encoding
rules every consumer shares (prefixes, meta fields, normalisation, score scaling: :mod:`.encode`) and the
vector-space rule. Imports nothing of the library or the components.
"""
