#!/usr/bin/env bash
# Run galaxy-importer on a built collection tarball, offline, and fail on any error or warning it logs.
set -euo pipefail
tarball="$(realpath "$1")"
[ -f "$tarball" ] || { echo "ERROR: $tarball not found (make galaxy builds it)" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
out="$work/output.txt"
status=0
# galaxy-importer writes importer_result.json into the working directory: keep it out of the checkout.
(cd "$work" && GALAXY_IMPORTER_CONFIG=/dev/null python -m galaxy_importer.main "$tarball") >"$out" 2>&1 || status=$?
cat "$out"
if [ $status != 0 ]; then
  echo "galaxy-importer failed (exit $status)" >&2
  exit $status
fi
if grep -E '^(ERROR|WARNING)|: (ERROR|WARNING)|\b(ERROR|WARNING):' "$out" >/dev/null; then
  echo "galaxy-importer reported errors or warnings (above): fix them" >&2
  exit 1
fi
echo "galaxy-importer: clean"
