#!/usr/bin/env bash
# Bring up the lab fleet: LAB_HOSTS trixie hosts (default 3) and LAB_BOOKWORM bookworm hosts (0, 1 or more).
# Safe to run again: hosts that already run the current image are kept; LAB_FRESH=1 recreates them all.
source "$(dirname "$0")/lib.sh"

mkdir -p "$LAB_STATE/hosts" "$LAB_STATE/ssh"
chmod 0700 "$LAB_STATE" "$LAB_STATE/ssh"

# The lab hosts share this machine's kernel, whose root lacks CAP_SYS_RESOURCE: CRIU's lazy page server (post-copy)
# then needs fs.pipe-max-size of at least 819 pages for its pipes. A real host's root has the capability.
if [ "$(cat /proc/sys/fs/pipe-max-size)" -lt 4194304 ]; then
  log "raising fs.pipe-max-size to 4194304 (CRIU's lazy page server; no CAP_SYS_RESOURCE here)"
  echo 4194304 > /proc/sys/fs/pipe-max-size
fi

# The images (on a fresh machine, two debootstraps and two image builds), each only when its definition changed.
"$LAB_DIR/build-images.sh"

if [ ! -f "$LAB_SSH_KEY" ]; then
  log "generating the lab SSH key $LAB_SSH_KEY"
  ssh-keygen -q -t ed25519 -N '' -C fleet-lab -f "$LAB_SSH_KEY"
fi
install -m 0600 "$LAB_SSH_KEY.pub" "$LAB_STATE/ssh/authorized_keys"

mapfile -t wanted < <(lab_host_names)
for host in $(lab_existing_hosts); do
  if [ "${LAB_FRESH:-0}" = 1 ] || ! printf '%s\n' "${wanted[@]}" | grep -qx "$host"; then
    "$LAB_DIR/down.sh" "$host"
  fi
done

host_suite() { case "$1" in *-bookworm) echo bookworm ;; *) echo trixie ;; esac; }
host_port() {
  case "$1" in
    "$LAB_PREFIX-bookworm") echo "$LAB_SSH_BASE_PORT" ;;
    *-bookworm) local n="${1%-bookworm}"; echo $((LAB_SSH_BASE_PORT + 30 + ${n##*-})) ;;
    *) echo $((LAB_SSH_BASE_PORT + ${1##*-})) ;;
  esac
}

start_host() {
  local host="$1" suite image_id port current
  suite="$(host_suite "$host")"
  image_id="$(docker image inspect "$(lab_image_ref "$suite")" --format '{{.Id}}')"
  port="$(host_port "$host")"
  current="$(docker inspect "$host" --format '{{.Image}}' 2>/dev/null || true)"
  if [ -n "$current" ] && [ "$current" != "$image_id" ]; then
    log "$host runs an outdated image: recreating it"
    "$LAB_DIR/down.sh" "$host"
    current=""
  fi
  if [ -z "$current" ]; then
    log "starting $host ($suite, ssh 127.0.0.1:$port)"
    rm -rf "$LAB_STATE/hosts/$host"
    mkdir -p "$LAB_STATE/hosts/$host/docker"
    lab_docker_run_host --name "$host" --hostname "$host" \
      --label fleet.lab.role=host --label "fleet.lab.suite=$suite" \
      -v "$LAB_STATE/hosts/$host/docker:/var/lib/docker" \
      -v "$LAB_STATE/ssh/authorized_keys:/root/.ssh/authorized_keys:ro" \
      -p "127.0.0.1:$port:22" \
      "$(lab_image_ref "$suite")" >/dev/null
  elif [ "$(docker inspect "$host" --format '{{.State.Running}}')" != true ]; then
    log "starting stopped host $host"
    docker start "$host" >/dev/null
  else
    log "$host is running"
  fi
}

for host in "${wanted[@]}"; do start_host "$host"; done

# Each host, once up, gets the workload image; hosts are waited for and loaded at once.
# The workload image carries its definition's hash as a label: a host with an older one gets the new one.
workload_definition="$(cat "$LAB_STATE/workload-busybox.tar.definition")"
ready_host() {
  local host="$1"
  "$LAB_DIR/wait-host.sh" "$host" || return 1
  if [ "$(docker exec "$host" docker image inspect -f '{{ index .Config.Labels "fleet.lab.definition" }}' \
          "$WORKLOAD_IMAGE" 2>/dev/null)" != "$workload_definition" ]; then
    log "loading $WORKLOAD_IMAGE into $host"
    docker exec -i "$host" docker load <"$LAB_STATE/workload-busybox.tar" >/dev/null
  fi
}
waits=()
for host in "${wanted[@]}"; do ready_host "$host" & waits+=($!); done
for wait_pid in "${waits[@]}"; do wait "$wait_pid" || die "a lab host did not come up (see above)"; done

"$LAB_DIR/write-inventory.sh" "${wanted[@]}"
log "lab is up: ${#wanted[@]} hosts; inventory: $LAB_INVENTORY"
