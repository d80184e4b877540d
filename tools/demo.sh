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
without stopping containers, a readiness report, and checkpoint/restore of containers with
fleet.checkpoint.docker_checkpoint. The reboot and migrate playbooks are not built yet.

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

echo
echo "== 4. fleet.checkpoint.docker_checkpoint: checkpoint every counter (it stops), then restore it =="
echo "The counters were kept alive across Docker's restart (live-restore): Docker's own checkpoint would leave them"
echo "running; the module dumps them through containerd's task API, which stops them."
ansible fleet_lab_trixie -i "$inventory" -m fleet.checkpoint.docker_checkpoint -a 'container=demo-counter name=demo force=true' -o
declare -A last
for host in $(ansible fleet_lab_trixie -i "$inventory" --list-hosts | tail -n +2); do
  last[$host]="$(docker exec "$host" docker logs --tail 1 demo-counter)"
  printf '  %-20s running=%s, last count %s\n' "$host" "$(docker exec "$host" docker inspect -f '{{.State.Running}}' demo-counter)" "${last[$host]}"
done
sleep 3
ansible fleet_lab_trixie -i "$inventory" -m fleet.checkpoint.docker_checkpoint -a 'container=demo-counter name=demo state=restored' -o
sleep 2
echo "Counters after the restore: the next number follows the last one (a cold start would begin again at 1)."
for host in "${!last[@]}"; do
  next="$(docker exec "$host" docker logs demo-counter | awk -v n="${last[$host]}" 'found {print; exit} $0 == n {found=1}')"
  verdict="continued"; [ "$next" = "$((last[$host] + 1))" ] || verdict="DID NOT CONTINUE"
  printf '  %-20s last count before %s, next after restore %s: %s\n' "$host" "${last[$host]}" "$next" "$verdict"
done
