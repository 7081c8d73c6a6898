"""`python -m modelshield.cli` — the same as the `modelshield` console script."""

from __future__ import annotations

import sys

from modelshield.cli import main

sys.exit(main())
