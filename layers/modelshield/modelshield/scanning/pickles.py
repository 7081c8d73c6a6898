"""Placeholder: filled in by the pickles scanner work."""
