"""Placeholder: filled in by the text scanner work."""
