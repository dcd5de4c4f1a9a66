"""The fastns version: one place, read by the package, the model files and pyproject.toml."""

__version__ = "0.1.0"
