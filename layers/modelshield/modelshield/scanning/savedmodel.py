"""Placeholder: filled in by the savedmodel scanner work."""
