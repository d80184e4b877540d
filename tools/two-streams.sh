#!/usr/bin/env bash
# Run two shell command lines at once, each with its output in a log of its own (LOGDIR/stream-1.log, -2.log), then
# print both logs, the first stream's first; fail when either failed. `make test` runs its fast gates this way.
set -uo pipefail
logdir="$1"; first="$2"; second="$3"
mkdir -p "$logdir"
# Each stream times its gates into a file of its own (tools/timed.sh empties its file when a gate fails); both are
# added to the run's table afterwards.
record="${TIMINGS_FILE:-.build/timings.txt}"
rm -f "$logdir/timings-1.txt" "$logdir/timings-2.txt"
TIMINGS_FILE="$logdir/timings-1.txt" bash -c "$first" >"$logdir/stream-1.log" 2>&1 &
one=$!
TIMINGS_FILE="$logdir/timings-2.txt" bash -c "$second" >"$logdir/stream-2.log" 2>&1 &
two=$!
wait "$one"; rc1=$?
wait "$two"; rc2=$?
mkdir -p "$(dirname "$record")"
cat "$logdir/timings-1.txt" "$logdir/timings-2.txt" >>"$record" 2>/dev/null || true
for n in 1 2; do
  echo "---- stream $n ($logdir/stream-$n.log) ----"
  cat "$logdir/stream-$n.log"
done
if [ "$rc1" != 0 ] || [ "$rc2" != 0 ]; then
  echo "two-streams: stream 1 ended with $rc1, stream 2 with $rc2" >&2
  exit 1
fi
