#!/usr/bin/env bash
# Make this Debian machine ready for the collection's tooling: apt packages, then a Docker daemon that answers.
# Safe to run again: installs only what is missing and starts dockerd only when no daemon answers.
set -euo pipefail
log() { printf '[setup] %s\n' "$*" >&2; }

[ "$(id -u)" = 0 ] || { echo "[setup] ERROR: run as root (apt-get and dockerd need it)" >&2; exit 1; }

packages=(docker.io debootstrap busybox-static file zstd rsync openssh-client shellcheck git make ca-certificates jq gpg
          gcc libc6-dev qemu-system-x86 qemu-utils)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing apt packages: ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(ps -p 1 -o comm= 2>/dev/null)" = systemd ]; then
  log "starting docker.service"
  systemctl start docker
else
  log "no Docker daemon answers and systemd is not PID 1: starting dockerd in the background (log: /var/log/dockerd.log)"
  setsid nohup dockerd >>/var/log/dockerd.log 2>&1 </dev/null &
fi
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && { log "Docker daemon is up"; exit 0; }
  sleep 1
done
tail -n 20 /var/log/dockerd.log >&2 || true
echo "[setup] ERROR: the Docker daemon did not answer within 60 s" >&2
exit 1
