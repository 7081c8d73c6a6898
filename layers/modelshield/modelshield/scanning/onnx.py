"""Placeholder: filled in by the onnx scanner work."""
