"""The version of svlib (one place; written into saved models and result records)."""

__version__ = "0.2.0"
