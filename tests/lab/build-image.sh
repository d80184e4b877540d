#!/usr/bin/env bash
# Build the lab host image for one Debian suite (trixie by default), once.
# The image is tagged <repo>:<suite> and labelled with the digest of its definition;
# it is rebuilt only when that definition (this script or image/*) changes.
source "$(dirname "$0")/lib.sh"

suite="${1:-trixie}"
ref="$(lab_image_ref "$suite")"
want="$(lab_definition_hash "$suite")"
have="$(docker image inspect "$ref" --format '{{ index .Config.Labels "fleet.lab.definition" }}' 2>/dev/null || true)"
if [ "$have" = "$want" ]; then
  log "image $ref is up to date ($want)"
  exit 0
fi

base="${LAB_PREFIX}-base:$suite"
if ! docker image inspect "$base" >/dev/null 2>&1; then
  rootfs="$LAB_STATE/rootfs-$suite"
  log "debootstrap $suite (minbase) into $rootfs"
  rm -rf "$rootfs" && mkdir -p "$rootfs"
  debootstrap --variant=minbase "$suite" "$rootfs" http://deb.debian.org/debian >"$LAB_STATE/debootstrap-$suite.log" 2>&1 \
    || { tail -n 20 "$LAB_STATE/debootstrap-$suite.log" >&2; die "debootstrap $suite failed (log: $LAB_STATE/debootstrap-$suite.log)"; }
  log "importing the $suite rootfs as $base"
  tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
  rm -rf "$rootfs"
fi

log "building $ref from $base"
docker build --quiet --network host \
  --build-arg "BASE=$base" --build-arg "SUITE=$suite" \
  --label "fleet.lab.definition=$want" \
  -t "$ref" "$LAB_DIR/image" >/dev/null
log "image $ref built ($want)"
