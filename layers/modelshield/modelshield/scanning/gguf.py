"""Placeholder: filled in by the gguf scanner work."""
