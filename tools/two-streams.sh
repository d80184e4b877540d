#!/usr/bin/env bash
# Run two shell command lines at once, each with its output in a log of its own (LOGDIR/stream-1.log, -2.log), then
# print both logs, the first stream's first; fail when either failed. `make test` runs its fast gates this way.
set -uo pipefail
logdir="$1"; first="$2"; second="$3"
mkdir -p "$logdir"
bash -c "$first" >"$logdir/stream-1.log" 2>&1 &
one=$!
bash -c "$second" >"$logdir/stream-2.log" 2>&1 &
two=$!
wait "$one"; rc1=$?
wait "$two"; rc2=$?
for n in 1 2; do
  echo "---- stream $n ($logdir/stream-$n.log) ----"
  cat "$logdir/stream-$n.log"
done
if [ "$rc1" != 0 ] || [ "$rc2" != 0 ]; then
  echo "two-streams: stream 1 ended with $rc1, stream 2 with $rc2" >&2
  exit 1
fi
