"""The package version, importable by every layer without loading the package's lazy exports."""

__version__ = "0.1.0"
