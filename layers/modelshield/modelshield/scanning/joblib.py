"""Placeholder: filled in by the joblib scanner work."""
