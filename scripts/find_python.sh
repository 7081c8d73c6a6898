#!/usr/bin/env bash
# Print a directory holding a real `python$1` interpreter (for `sam build`, which validates the runtime's
# interpreter on PATH): pyenv's versions first (its shims would refuse an inactive version), then PATH.
set -euo pipefail
want="python$1"
root="${PYENV_ROOT:-$HOME/.pyenv}"
for dir in "$root"/versions/"$1".*/bin; do
  if [ -x "$dir/$want" ]; then echo "$dir"; exit 0; fi
done
found="$(command -v "$want" 2>/dev/null || true)"
if [ -n "$found" ] && "$found" -c "" 2>/dev/null; then dirname "$found"; fi
