#!/usr/bin/env bash
# Stop the lab's virtual machines (tests/lab/vm-up.sh); their disk overlays go with them, the base image is kept.
source "$(dirname "$0")/lib.sh"
vm_dir="$LAB_STATE/vm"
for pidfile in "$vm_dir"/*.pid; do
  [ -f "$pidfile" ] || continue
  pid="$(cat "$pidfile")"
  if kill "$pid" 2>/dev/null; then
    log "stopping $(basename "$pidfile" .pid)"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile" "${pidfile%.pid}.qcow2"
done
