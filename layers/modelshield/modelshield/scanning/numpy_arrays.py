"""Placeholder: filled in by the numpy_arrays scanner work."""
