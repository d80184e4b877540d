#!/usr/bin/env bash
# Remove lab hosts (all, or those named) with their Docker data. The images are kept.
source "$(dirname "$0")/lib.sh"
hosts=("$@")
[ ${#hosts[@]} -gt 0 ] || mapfile -t hosts < <(lab_existing_hosts)
for host in "${hosts[@]}"; do
  [ -n "$host" ] || continue
  log "removing $host"
  docker rm -f "$host" >/dev/null 2>&1 || true
  rm -rf "${LAB_STATE:?}/hosts/$host"
done
if [ $# -eq 0 ]; then rm -f "$LAB_INVENTORY" "${LAB_INVENTORY%.yml}-docker.yml"; fi
