#!/usr/bin/env bash
# Build the lab's execution environment image (tests/lab/ee) once, from the lab's Debian base image, with the
# ansible-core and ansible-runner pinned in requirements-dev.txt; rebuilt only when its definition changes.
source "$(dirname "$0")/lib.sh"

suite="${1:-trixie}"
ref="${LAB_PREFIX}-ee:$suite"
base="${LAB_PREFIX}-base:$suite"
pin() { sed -n "s/^$1==\([^ ;]*\).*/\1/p" "$LAB_DIR/../../requirements-dev.txt" | head -n 1; }
core="$(pin ansible-core)"
runner="$(pin ansible-runner)"
if [ -z "$core" ] || [ -z "$runner" ]; then
  die "ansible-core or ansible-runner is not pinned in requirements-dev.txt"
fi
want="$( (cat "$LAB_DIR/build-ee.sh" "$LAB_DIR/ee/Dockerfile"; echo "$suite $core $runner") | sha256sum | cut -c1-16)"
have="$(docker image inspect "$ref" --format '{{ index .Config.Labels "fleet.lab.definition" }}' 2>/dev/null || true)"
if [ "$have" = "$want" ]; then
  log "image $ref is up to date ($want)"
  exit 0
fi
docker image inspect "$base" >/dev/null 2>&1 || "$LAB_DIR/build-image.sh" "$suite"
log "building $ref from $base (ansible-core $core, ansible-runner $runner)"
# pip in the build trusts what this machine trusts (a site's TLS-inspecting proxy's CA among them): the context is
# the Dockerfile and this machine's CA bundle.
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$LAB_DIR/ee/Dockerfile" "$context/"
cp "${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" "$context/ca-certificates.crt"
docker build --quiet --network host \
  --build-arg "BASE=$base" --build-arg "ANSIBLE_CORE=$core" --build-arg "ANSIBLE_RUNNER=$runner" \
  --label "fleet.lab.definition=$want" \
  -t "$ref" "$context" >/dev/null
log "image $ref built ($want)"
