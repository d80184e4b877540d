"""Soak: SOAK_CYCLES consecutive host_reboot.yml runs (all lab hosts rebooted each time) with 4 counter workloads per
host. After every cycle each workload must be running and its count unbroken (a reset would start again at 1), and
the checkpoint area must not grow without bound (the restore role's retention keeps 3 checkpoints per container).

`make soak` runs 20 cycles; `make test-faults` runs 2 so that the soak itself cannot rot. The figures are printed in
the reliability table and written to .build/soak.json.
"""

import json
import os
import time

import pytest

from conftest import RELIABILITY, ROOT, ansible_playbook, counts, lab_exec, sh
from test_fleet_ops import WORKLOADS, boot_time, start_workloads

PLAYBOOKS = ROOT / "playbooks"
AREA = "/var/lib/docker/containers/*/checkpoints /var/lib/fleet-checkpoint"


def area(host):
    """(bytes, checkpoint directories) of the host's checkpoint area."""
    out = sh(host, f"du -sbc {AREA} 2>/dev/null | tail -1 | cut -f1; "
                   "ls -d /var/lib/docker/containers/*/checkpoints/* 2>/dev/null | wc -l").stdout.split()
    return int(out[0]), int(out[1])


def broken(numbers):
    return [(a, b) for a, b in zip(numbers, numbers[1:]) if b != a + 1]


@pytest.mark.soak
def test_host_reboot_soak(fleet):
    cycles = int(os.environ.get("SOAK_CYCLES", "2"))
    for host in fleet:
        start_workloads(host)
    figures = []
    lost_total = reset_total = 0
    for cycle in range(1, cycles + 1):
        before = {host: {name: counts(host, name)[-1] for name in WORKLOADS} for host in fleet}
        booted = {host: boot_time(host) for host in fleet}
        started = time.monotonic()
        rc, output = ansible_playbook(PLAYBOOKS / "host_reboot.yml", check=False, extra_vars={
            "fleet_checkpoint_hosts": ",".join(fleet), "fleet_checkpoint_reboot": "always",
            "fleet_checkpoint_serial": len(fleet)})
        seconds = round(time.monotonic() - started, 1)
        time.sleep(2)  # a few ticks after the restore
        lost, reset = [], []
        for host in fleet:
            assert boot_time(host) != booted[host], f"cycle {cycle}: {host} was not rebooted"
            for name in WORKLOADS:
                running = lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}}", name,
                                   check=False).stdout.strip() == "true"
                numbers = counts(host, name)
                if not running:
                    lost.append(f"{host}/{name}")
                if broken(numbers) or not numbers or numbers[-1] <= before[host][name]:
                    reset.append(f"{host}/{name}")
        sizes = {host: area(host) for host in fleet}
        figures.append({"cycle": cycle, "rc": rc, "seconds": seconds, "lost": lost, "reset": reset,
                        "area_bytes": sum(size for size, _count in sizes.values()),
                        "checkpoints": sum(count for _size, count in sizes.values())})
        lost_total += len(lost)
        reset_total += len(reset)
        print(f"soak cycle {cycle}/{cycles}: rc {rc}, {seconds}s, lost {lost}, reset {reset}, "
              f"area {figures[-1]['area_bytes']} bytes in {figures[-1]['checkpoints']} checkpoints", flush=True)
        assert rc == 0, f"cycle {cycle} failed: {json.dumps(output)[-3000:]}"
        assert not lost and not reset, figures[-1]
    containers = len(fleet) * len(WORKLOADS)
    RELIABILITY["soak"] = {"cycles": cycles, "hosts": len(fleet), "containers": containers,
                           "containers_lost": lost_total, "counters_reset": reset_total,
                           "seconds_per_cycle": sorted(f["seconds"] for f in figures)[len(figures) // 2],
                           "area_bytes_first": figures[0]["area_bytes"], "area_bytes_last": figures[-1]["area_bytes"],
                           "checkpoints_last": figures[-1]["checkpoints"]}
    (ROOT / ".build").mkdir(exist_ok=True)
    (ROOT / ".build" / "soak.json").write_text(json.dumps({"summary": RELIABILITY["soak"], "cycles": figures},
                                                          indent=2))
    # Retention: at most 3 checkpoints per container (restore_keep_last), so the area stops growing.
    assert figures[-1]["checkpoints"] <= 3 * containers, figures[-1]
    if cycles > 3:
        assert figures[-1]["area_bytes"] <= 1.5 * figures[2]["area_bytes"], [f["area_bytes"] for f in figures]
