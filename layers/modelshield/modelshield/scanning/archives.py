"""Placeholder: filled in by the archives scanner work."""
