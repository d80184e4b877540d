#!/usr/bin/env bash
# Report the lab: each host's container state, systemd state, Docker version, experimental mode and CRIU.
source "$(dirname "$0")/lib.sh"
hosts="$(lab_existing_hosts)"
if [ -z "$hosts" ]; then
  log "no lab hosts (make lab-up starts them)"
  exit 0
fi
printf '%-20s %-9s %-9s %-10s %-8s %-13s %-12s %s\n' HOST CONTAINER SUITE SYSTEMD DOCKER EXPERIMENTAL CRIU SSH
for host in $hosts; do
  running="$(docker inspect "$host" --format '{{.State.Status}}')"
  suite="$(docker inspect "$host" --format '{{ index .Config.Labels "fleet.lab.suite" }}')"
  port="$(docker port "$host" 22/tcp 2>/dev/null | head -n1)"
  systemd=- dockerv=- experimental=- criu=-
  if [ "$running" = running ]; then
    systemd="$(docker exec "$host" systemctl is-system-running 2>/dev/null || true)"
    dockerv="$(docker exec "$host" docker version --format '{{.Server.Version}}' 2>/dev/null || echo down)"
    experimental="$(docker exec "$host" docker version --format '{{.Server.Experimental}}' 2>/dev/null || echo -)"
    criu="$(docker exec "$host" sh -c 'command -v criu >/dev/null && criu --version | sed -n "s/^Version: //p" || echo absent')"
  fi
  printf '%-20s %-9s %-9s %-10s %-8s %-13s %-12s %s\n' "$host" "$running" "$suite" "${systemd:-?}" "$dockerv" "$experimental" "$criu" "${port:--}"
done
