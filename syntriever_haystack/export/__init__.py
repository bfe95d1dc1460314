"""Export: torch models → verified, self-describing ONNX folders (needs the ``export`` extra)."""

from syntriever_haystack.export.exporter import ExportResult, export_model, format_report

__all__ = ["ExportResult", "export_model", "format_report"]
