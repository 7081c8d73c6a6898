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
if [ -n "$found" ] && "$found" -c "" 2>/dev/null; then dirname "$found"; exit 0; fi
cat >&2 <<MSG
error: $want not found. The Lambda runtime is Python $1 and \`sam build\` checks for that interpreter on PATH.
Install it, then re-run: \`pyenv install $1\` (looked in $root/versions), \`apt-get install $want\`,
or \`uv python install $1\` (then put its bin directory on PATH).
MSG
exit 1
