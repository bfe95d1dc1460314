"""The torch-free runtime at the bottom of the stack: exported-model metadata, ONNX Runtime inference, the text
a model sees (prefixes, meta fields) and the vector-space rule. Imports nothing of the library or the components.
"""
