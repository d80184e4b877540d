#!/usr/bin/env bash
# Wait until a lab host is fully up: systemd `running`, Docker answering, sshd accepting our key.
source "$(dirname "$0")/lib.sh"
host="$1"
timeout="${LAB_WAIT_TIMEOUT:-120}"
deadline=$((SECONDS + timeout))

state=""
until [ $SECONDS -ge $deadline ]; do
  state="$(docker exec "$host" systemctl is-system-running 2>/dev/null || true)"
  case "$state" in running|degraded) break ;; esac
  sleep 1
done
if [ "$state" != running ]; then
  docker exec "$host" systemctl --failed --no-pager >&2 || true
  die "$host: systemd says '${state:-nothing}' after ${timeout}s (want 'running')"
fi
until docker exec "$host" docker info >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || die "$host: Docker did not answer within ${timeout}s"
  sleep 1
done
port="$(docker port "$host" 22/tcp | head -n1 | sed 's/.*://')"
until ssh -q -i "$LAB_SSH_KEY" -p "$port" -o BatchMode=yes -o StrictHostKeyChecking=no \
        -o UserKnownHostsFile=/dev/null -o ConnectTimeout=3 root@127.0.0.1 true; do
  [ $SECONDS -lt $deadline ] || die "$host: sshd on 127.0.0.1:$port did not accept the lab key within ${timeout}s"
  sleep 1
done
log "$host is up (systemd running, docker answering, ssh on 127.0.0.1:$port)"
