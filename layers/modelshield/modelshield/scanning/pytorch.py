"""Placeholder: filled in by the pytorch scanner work."""
