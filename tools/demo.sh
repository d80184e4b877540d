#!/usr/bin/env bash
# `make demo`: the main job on the built-in lab fleet. Run by make (PATH and ANSIBLE_COLLECTIONS_PATH set there).
set -euo pipefail
cd "$(dirname "$0")/.."
inventory=tests/lab/inventory.yml
mapfile -t hosts < <(docker ps --filter label=fleet.lab.role=host --format '{{.Names}}' | sort)
export ANSIBLE_STDOUT_CALLBACK=ansible.builtin.default ANSIBLE_CALLBACK_RESULT_FORMAT=yaml ANSIBLE_DISPLAY_SKIPPED_HOSTS=false

cat <<'TEXT'

== fleet.checkpoint demo ==
The lab fleet is up: real Debian hosts (containers running systemd, sshd and Docker) reached over SSH.
What exists today: installing a CRIU proven to work on the kernel, turning on Docker's experimental mode
without stopping containers, and a readiness report. The checkpoint/restore modules and the reboot playbook
are not built yet, so this demo does not checkpoint anything itself.

TEXT
tests/lab/status.sh

counter_state() {
  docker exec "$1" docker inspect -f 'pid={{.State.Pid}} started={{.State.StartedAt}}' demo-counter 2>/dev/null || echo 'not running'
}
declare -A before
echo
echo "== 1. a counter container on every host =="
for host in "${hosts[@]}"; do
  docker exec "$host" sh -c '[ "$(docker inspect -f "{{.State.Running}}" demo-counter 2>/dev/null)" = true ] ||
    { docker rm -f demo-counter >/dev/null 2>&1; docker run -d --name demo-counter fleet-lab-workload:busybox >/dev/null; sleep 2; }'
  before[$host]="$(counter_state "$host")"
  printf '  %-20s %s, last count %s\n' "$host" "${before[$host]}" "$(docker exec "$host" docker logs --tail 1 demo-counter)"
done

echo
echo "== 2. fleet.checkpoint.install: CRIU (self-tested), then experimental mode on without stopping the counters =="
ansible-playbook -i "$inventory" fleet.checkpoint.install
echo "Counters after: same pid and start time means the container never stopped."
for host in "${hosts[@]}"; do
  after="$(counter_state "$host")"
  verdict="kept running"; [ "$after" = "${before[$host]}" ] || verdict="RESTARTED OR STOPPED"
  printf '  %-20s %s, last count %s: %s\n' "$host" "$after" "$(docker exec "$host" docker logs --tail 1 demo-counter)" "$verdict"
done

echo
echo "== 3. fleet.checkpoint.readiness =="
ansible-playbook -i "$inventory" fleet.checkpoint.readiness
