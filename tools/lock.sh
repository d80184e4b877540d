#!/usr/bin/env bash
# Re-pin one requirements file: install IN into a throw-away Python 3.12 venv and write its `pip freeze` to OUT.
# Usage: tools/lock.sh requirements-dev.in requirements-dev.txt   (run by `make lock` for every pinned venv)
set -euo pipefail
in="$1"; out="$2"
py="$(tools/find-python.sh)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$py" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q --disable-pip-version-check -r "$in" 2>&1 | { grep -v '^WARNING: Location' || true; }
{ echo "# Generated from $in by 'make lock' (pip freeze of a fresh Python 3.12 venv). Do not edit."
  "$tmp/venv/bin/pip" freeze --all | grep -v -E '^(pip|setuptools)=='; } >"$tmp/out"
mv "$tmp/out" "$out"
echo "[lock] $out: $(grep -vc '^#' "$out") pins" >&2
