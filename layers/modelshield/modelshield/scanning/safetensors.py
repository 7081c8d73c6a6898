"""Placeholder: filled in by the safetensors scanner work."""
