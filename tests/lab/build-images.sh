#!/usr/bin/env bash
# Build the lab's images, each only when its definition changed: the trixie host image, the bookworm one when
# LAB_BOOKWORM >= 1, the workload image; with --ee also the execution environment (test_awx.py). up.sh calls it;
# make test calls it with --ee in the background while the venvs install (on a fresh machine: two debootstraps and
# the image builds, mostly waiting on the network).
source "$(dirname "$0")/lib.sh"

# The images are independent: built at once.
builds=()
"$LAB_DIR/build-image.sh" trixie & builds+=($!)
if [ "$LAB_BOOKWORM" -ge 1 ]; then "$LAB_DIR/build-image.sh" bookworm & builds+=($!); fi
"$LAB_DIR/build-workload.sh"
for build in "${builds[@]}"; do wait "$build" || die "building a lab image failed (see above)"; done
if [ "${1:-}" = --ee ]; then "$LAB_DIR/build-ee.sh"; fi
