#!/usr/bin/env bash
# Run one gate and record how long it took; `timed.sh --summary` prints the table for this `make test` run.
set -euo pipefail
record="${TIMINGS_FILE:-.build/timings.txt}"
mkdir -p "$(dirname "$record")"
if [ "${1:-}" = --summary ]; then
  echo "== gate timings (seconds) =="
  cat "$record"
  rm -f "$record"
  exit 0
fi
gate="$1"; shift
echo "== $gate =="
start=$(date +%s)
status=0
"$@" || status=$?
elapsed=$(( $(date +%s) - start ))
printf '%-14s %6d  %s\n' "$gate" "$elapsed" "$([ $status = 0 ] && echo passed || echo FAILED)" >>"$record"
if [ $status != 0 ]; then
  echo "== $gate FAILED after ${elapsed}s ==" >&2
  cat "$record" >&2; rm -f "$record"
  exit $status
fi
echo "== $gate passed in ${elapsed}s =="
