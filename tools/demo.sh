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
fleet.checkpoint.docker_checkpoint, and fleet.checkpoint.host_reboot: every host rebooted in turn while its
containers are checkpointed and restored where they left off.

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
echo "== 4. fleet.checkpoint.host_reboot: checkpoint every container, reboot the host, restore, one host at a time =="
trixie=$(ansible fleet_lab_trixie -i "$inventory" --list-hosts | tail -n +2 | xargs)
for host in $trixie; do
  docker exec "$host" sh -c '[ "$(docker inspect -f "{{.State.Running}}" demo-always 2>/dev/null)" = true ] ||
    { docker rm -f demo-always >/dev/null 2>&1; docker run -d --name demo-always --restart always fleet-lab-workload:busybox >/dev/null; sleep 2; }'
done
declare -A count_before boot_before
for host in $trixie; do
  boot_before[$host]="$(docker exec "$host" systemctl show -p UserspaceTimestamp --value)"
  for c in demo-counter demo-always; do
    count_before[$host/$c]="$(docker exec "$host" docker logs --tail 1 "$c")"
  done
done
ansible-playbook -i "$inventory" fleet.checkpoint.host_reboot \
  -e fleet_checkpoint_hosts=fleet_lab_trixie -e fleet_checkpoint_reboot=always
sleep 3
echo
echo "Before and after. A restored container's log is one unbroken count; a cold start would begin again at 1."
printf '  %-14s %-13s %-9s %-14s %-12s %-10s %s\n' HOST CONTAINER REBOOTED "COUNT BEFORE" "COUNT NOW" POLICY VERDICT
for host in $trixie; do
  rebooted=no; [ "$(docker exec "$host" systemctl show -p UserspaceTimestamp --value)" != "${boot_before[$host]}" ] && rebooted=yes
  for c in demo-counter demo-always; do
    numbers="$(docker exec "$host" docker logs "$c" 2>/dev/null)"
    now="$(printf '%s\n' "$numbers" | tail -1)"
    breaks="$(printf '%s\n' "$numbers" | awk 'NR > 1 && $1 != prev + 1 {n++} {prev = $1} END {print n + 0}')"
    policy="$(docker exec "$host" docker inspect -f '{{.HostConfig.RestartPolicy.Name}}' "$c")"
    verdict="continued"; [ "$breaks" = 0 ] && [ "$now" -gt "${count_before[$host/$c]}" ] || verdict="DID NOT CONTINUE"
    printf '  %-14s %-13s %-9s %-14s %-12s %-10s %s\n' "$host" "$c" "$rebooted" "${count_before[$host/$c]}" "$now" "$policy" "$verdict"
  done
done
