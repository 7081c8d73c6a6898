"""ModelShield: scan, gate and envelope-encrypt ML model artifacts without executing them."""

from __future__ import annotations

__version__ = "0.1.0"
