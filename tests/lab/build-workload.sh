#!/usr/bin/env bash
# Build the tiny workload image (busybox from Debian's busybox-static, plus an in-memory counter)
# on the outer engine, and save it as a tarball that up.sh loads into every lab host.
source "$(dirname "$0")/lib.sh"

busybox_bin="$(command -v busybox || true)"
[ -n "$busybox_bin" ] || die "busybox is missing: apt-get install busybox-static (make setup does it)"
file "$busybox_bin" 2>/dev/null | grep -q 'statically linked' || die "$busybox_bin is not static: apt-get install busybox-static"

want="$(cat "$busybox_bin" "$LAB_DIR/workload/counter" "$LAB_DIR/workload/memhog.c" "$LAB_DIR/workload/msgpair.c" \
        "$LAB_DIR/build-workload.sh" \
        | sha256sum | cut -c1-16)"
tarball="$LAB_STATE/workload-busybox.tar"
if [ -f "$tarball" ] && [ "$(cat "$tarball.definition" 2>/dev/null)" = "$want" ]; then
  log "workload image $WORKLOAD_IMAGE is up to date ($want)"
  exit 0
fi

rootfs="$(mktemp -d)"
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs"/{bin,etc,tmp,proc,sys,dev,usr/local/bin,root}
chmod 1777 "$rootfs/tmp"
cp "$busybox_bin" "$rootfs/bin/busybox"
for applet in $("$busybox_bin" --list); do
  [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
done
install -m 0755 "$LAB_DIR/workload/counter" "$rootfs/usr/local/bin/counter"
# memhog: touched, incompressible memory of a given size (benchmarks), static so that it runs on busybox.
gcc -O2 -static -o "$rootfs/usr/local/bin/memhog" "$LAB_DIR/workload/memhog.c" \
  || die "building memhog failed: apt-get install gcc libc6-dev (make setup does it)"
# msgpair: numbered messages between two containers over TCP (group checkpoint tests).
gcc -O2 -static -o "$rootfs/usr/local/bin/msgpair" "$LAB_DIR/workload/msgpair.c" \
  || die "building msgpair failed: apt-get install gcc libc6-dev (make setup does it)"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

tar -C "$rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/bin:/bin' --change 'CMD ["/usr/local/bin/counter"]' \
  --change "LABEL fleet.lab.definition=$want" - "$WORKLOAD_IMAGE" >/dev/null
mkdir -p "$LAB_STATE"
docker save "$WORKLOAD_IMAGE" -o "$tarball.tmp" && mv "$tarball.tmp" "$tarball"
echo "$want" >"$tarball.definition"
log "workload image $WORKLOAD_IMAGE built ($want)"
