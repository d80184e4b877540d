# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""make bench, case `fleet`: host_reboot.yml with serial 100% over more and more lab hosts (`fleet_hosts`: 3, 6 and 9
in the full run; Ansible's forks as many as the hosts, at least its default 5), two containers of `fleet_mib` MiB on
each: the run's wall time split into checkpoint, reboot, the
wait for Docker after it, restore and the rest (the controller's own work: pre-flight, locks, bookkeeping, summary),
and what the run cost the controller per host - CPU seconds and peak memory (controller_cost.py).

The figures without a host count (fleet.total, fleet.checkpoint, ...) are those of the largest run.
"""

from __future__ import annotations

import re

PER_HOST = 2
PARTS = ("checkpoint", "reboot", "docker", "restore", "overhead", "total")


def _trixie(hostnames):
    """The lab's trixie hosts (fleet-lab-N), in N's order."""
    found = [name for name in hostnames if re.fullmatch(r"fleet-lab-\d+", name)]
    return sorted(found, key=lambda name: int(name.rsplit("-", 1)[1]))


def split(tasks, total):
    """{part: seconds} of one host_reboot.yml run (its tasks from run.tasks_of), adding up to `total`."""
    parts = dict.fromkeys(PARTS[:-2], 0.0)
    for task in tasks:
        if task["action"].endswith("reboot"):
            parts["reboot"] += task["wall"]
        elif task["name"].startswith("Wait for the Docker daemon"):
            parts["docker"] += task["wall"]
        elif any("dump_call_seconds" in row for row in _rows(task)):
            parts["checkpoint"] += task["wall"]
        elif any("restore_call_seconds" in row for row in _rows(task)):
            parts["restore"] += task["wall"]
    parts["overhead"] = total - sum(parts.values())
    parts["total"] = total
    return parts


def _rows(task):
    return [row for result in task["results"].values() for row in result.get("results", [])]


def case_fleet(results, hostnames, cfg, bench):
    trixie = _trixie(hostnames)
    counts = sorted(cfg["fleet_hosts"])
    if counts[-1] > len(trixie):
        raise SystemExit(f"the fleet case needs {counts[-1]} trixie lab hosts and the lab has {len(trixie)}: bring it "
                         f"up with LAB_HOSTS={counts[-1]} tests/lab/up.sh (make bench does)")
    mib = cfg["fleet_mib"]
    for host in trixie[:counts[-1]]:
        bench.onhost(host, "workload", "start", PER_HOST, mib, "bench-fleet")
    table = []
    try:
        for count in counts:
            table.append(_runs(results, trixie[:count], cfg, bench))
    finally:
        for host in trixie[:counts[-1]]:
            bench.onhost(host, "workload", "remove", PER_HOST, mib, "bench-fleet")
    largest = counts[-1]
    for key in PARTS:
        found = results.measurements[f"fleet.{largest}.{key}"]
        results.add(f"fleet.{key}", "fleet", f"host_reboot.yml: {key} ({largest} hosts)", found["samples"], mib,
                    PER_HOST * largest)
    bench.log("host_reboot.yml, serial 100%, the median run of each size:")
    bench.log("| hosts | wall s | outside % | controller CPU s per host | controller peak MiB per host |")
    for row in table:
        bench.log(f"| {row['hosts']} | {row['total']:.1f} | {100 * row['overhead'] / row['total']:.0f} | "
                  f"{row['cpu']:.2f} | {row['peak']:.0f} |")


def _runs(results, hosts, cfg, bench):
    """host_reboot.yml over `hosts` at once, fleet_reps times; the median run's row."""
    count, mib = len(hosts), cfg["fleet_mib"]
    bench.log(f"host_reboot.yml: {count} hosts x {PER_HOST} containers x {mib} MiB, serial 100%")
    parts = {key: [] for key in PARTS}
    cpu, peak = [], []
    for _rep in range(cfg["fleet_reps"]):
        cost = {}
        events = bench.playbook(bench.ROOT / "playbooks" / "host_reboot.yml", {
            "fleet_checkpoint_hosts": ",".join(hosts), "fleet_checkpoint_reboot": "always",
            "fleet_checkpoint_serial": "100%"}, cost=cost, forks=max(5, count))
        for key, value in split(bench.tasks_of(events), events[-1]["t"] - events[0]["t"]).items():
            parts[key].append(value)
        cpu.append(cost["cpu"] / count)
        peak.append(cost["peak_mib"] / count)
    what = f"host_reboot.yml, {count} hosts x {PER_HOST} containers x {mib} MiB"
    for key, values in parts.items():
        results.add(f"fleet.{count}.{key}", "fleet", f"{what}: {key}", values, mib, PER_HOST * count)
    results.add(f"fleet.{count}.cpu-per-host", "fleet", f"{what}: controller CPU seconds per host", cpu, mib,
                PER_HOST * count)
    results.add(f"fleet.{count}.peak-mib-per-host", "fleet", f"{what}: controller peak memory (Pss) per host, MiB",
                peak, mib, PER_HOST * count)
    results.splits["fleet"] = bench.median_run(parts, "total", what)
    pick = sorted(range(len(parts["total"])), key=parts["total"].__getitem__)[(len(parts["total"]) - 1) // 2]
    return {"hosts": count, "total": parts["total"][pick], "overhead": parts["overhead"][pick], "cpu": cpu[pick],
            "peak": peak[pick]}


def ratios(bench, results, cfg):
    counts = sorted(cfg["fleet_hosts"])
    small, large = counts[0], counts[-1]
    bench.ratio(results, "fleet_cpu_per_host_scaling", f"host_reboot.yml: controller CPU seconds per host, {large} "
                f"hosts / {small}", f"fleet.{large}.cpu-per-host", f"fleet.{small}.cpu-per-host", "<= 1.2")
    bench.ratio(results, "fleet_outside_share", f"host_reboot.yml over {large} hosts: time outside checkpoint, "
                "reboot, the wait for Docker and restore / the run's wall time", "fleet.overhead", "fleet.total",
                "<= 0.2")
