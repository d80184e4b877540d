#!/usr/bin/env bash
# Print the real path of a Python 3.12 interpreter (not a pyenv shim), or fail saying how to get one.
set -euo pipefail
for candidate in "${PYTHON:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/local/bin/python3.12 /usr/bin/python3.12; do
  [ -n "$candidate" ] || continue
  if real="$("$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12); print(sys.executable)' 2>/dev/null)"; then
    echo "$real"
    exit 0
  fi
done
echo "ERROR: Python 3.12 not found. Install it (e.g. pyenv install 3.12) or set PYTHON=/path/to/python3.12." >&2
exit 1
