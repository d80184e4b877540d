#!/usr/bin/env bash
# Shared settings for the lab scripts. Sourced, not run.
# The lab is a machine-level resource (like the Docker daemon that runs it):
# its state lives outside the checkout so that every clone on this machine shares one fleet.
set -euo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LAB_STATE="${LAB_STATE:-/var/lib/fleet-lab}"
LAB_HOSTS="${LAB_HOSTS:-3}"
LAB_BOOKWORM="${LAB_BOOKWORM:-0}"
LAB_PREFIX="${LAB_PREFIX:-fleet-lab}"
LAB_SSH_BASE_PORT="${LAB_SSH_BASE_PORT:-2220}"
LAB_IMAGE_REPO="${LAB_PREFIX}-host"
LAB_INVENTORY="${LAB_INVENTORY:-$LAB_DIR/inventory.yml}"
export LAB_SSH_KEY="$LAB_STATE/ssh/id_ed25519"
export WORKLOAD_IMAGE="${LAB_PREFIX}-workload:busybox"

# `docker run` for a lab host, with the flags that run systemd as PID 1 with nested Docker and CRIU on this
# kernel (see shared/LAB-FACTS.md): --privileged fails here because the bounding set lacks CAP_SYS_RESOURCE.
lab_docker_run_host() {
  docker run -d \
    --cap-add ALL --cap-drop SYS_RESOURCE \
    --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
    --security-opt systempaths=unconfined \
    --device-cgroup-rule 'a *:* rwm' \
    --cgroupns=host -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
    --tmpfs /run --tmpfs /run/lock --tmpfs /tmp:exec \
    --stop-signal SIGRTMIN+3 \
    --restart unless-stopped \
    "$@"
}

log() { printf '[lab] %s\n' "$*" >&2; }
die() { printf '[lab] ERROR: %s\n' "$*" >&2; exit 1; }

# Digest of everything an image is built from: when it changes, the image is rebuilt.
lab_definition_hash() {
  local suite="$1"
  (cd "$LAB_DIR" && cat build-image.sh image/* && echo "suite=$suite") | sha256sum | cut -c1-16
}

lab_image_ref() { echo "$LAB_IMAGE_REPO:$1"; }

# Host names: fleet-lab-1..N (trixie) and, with LAB_BOOKWORM=1, fleet-lab-bookworm. LAB_BOOKWORM=2 adds
# fleet-lab-2-bookworm (the integration gates run two sets of hosts at once, each with its bookworm host).
lab_host_names() {
  local i
  for i in $(seq 1 "$LAB_HOSTS"); do echo "${LAB_PREFIX}-${i}"; done
  for i in $(seq 1 "$LAB_BOOKWORM"); do
    if [ "$i" = 1 ]; then echo "${LAB_PREFIX}-bookworm"; else echo "${LAB_PREFIX}-${i}-bookworm"; fi
  done
}

# Every lab host container that exists, whatever LAB_HOSTS says now.
lab_existing_hosts() {
  docker ps -a --filter "label=fleet.lab.role=host" --format '{{.Names}}' | sort
}
