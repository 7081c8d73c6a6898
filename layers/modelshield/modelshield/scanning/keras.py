"""Placeholder: filled in by the keras scanner work."""
