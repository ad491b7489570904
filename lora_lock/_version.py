"""The single source of lora-lock's version."""

__version__ = "0.1.0"
