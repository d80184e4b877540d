# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Check a benchmark results file (make bench-smoke): every case ran and gave sane figures.

Not a speed test (the smoke run has one repetition of small sizes on a shared machine): it fails when a case is
missing, a figure is not a positive number, a split does not add up, or a ratio could not be computed.
"""

import json
import sys

import run

ONE_CONTAINER = ("dump.criu", "restore.criu", "dump.docker", "restore.docker", "dump.podman", "restore.podman",
                 "dump.module-api", "dumpop.module-api", "dumptask.module-api", "restore.module-api",
                 "dump.module-fast", "dumpop.module-fast", "dumptask.module-fast", "restore.module-fast")
OTHERS = ("many.cli-dump", "many.cli-restore", "many.module-dump", "many.module-restore", "overhead.cli-host",
          "overhead.cli-task", "overhead.module-api-task", "overhead.module-auto-task", "fleet.checkpoint",
          "fleet.reboot", "fleet.docker", "fleet.restore", "fleet.total", "migrate.dump", "migrate.transfer",
          "migrate.restore",
          "migrate.downtime", "transfer.ours", "transfer.copy", "transfer.plain", "migrate-controller.dump",
          "migrate-controller.transfer", "migrate-controller.restore", "migrate-controller.downtime",
          "transfer.controller", "transfer.plain-relay", "relay.peak-rss", "migrate-disk.empty",
          "migrate-disk.precopy", "migrate-disk.freeze", "migrate-disk.precopy-mb", "migrate-disk.final-kb",
          "migrate-lazy.stop-small", "migrate-lazy.stop-big", "migrate-lazy.lazy-big", "migrate-lazy.last-page",
          "group.single-slowest", "group.single-sum", "group.frozen")
PAIRED = tuple(f"paired.{step}-{tool}" for step in ("dump", "restore") for tool in ("criu", "podman", "module"))
TARGETED = ("many_vs_cli_loop", "small_module_vs_command_task", "migrate_overhead_share", "transfer_vs_plain_copy",
            "controller_vs_direct_downtime", "controller_transfer_vs_plain_relay", "volume_downtime_vs_without",
            "fast_vs_criu_dump_paired", "fast_vs_podman_dump_paired", "restore_vs_podman_paired",
            "lazy_big_vs_stop_small", "lazy_vs_stop_same", "group_vs_slowest_single", "fleet_cpu_per_host_scaling",
            "fleet_outside_share")


def problems(results):
    found = []
    measurements = {m["id"]: m for m in results.get("measurements", [])}
    sizes = sorted({m["size_mib"] for m in measurements.values() if m["id"].startswith("dump.criu.")})
    if not sizes:
        found.append("no one-container case ran (dump.criu.*)")
    wanted = [f"{prefix}.{size}" for prefix in ONE_CONTAINER for size in sizes] + list(OTHERS)
    if sizes:  # the interleaved rounds run at the targets' size
        wanted += [f"{prefix}.{run.target_size({'sizes': sizes})}" for prefix in PAIRED]
    found += [f"missing measurement {mid}" for mid in wanted if mid not in measurements]
    for mid, m in measurements.items():
        samples = m.get("samples") or []
        if not samples or not all(isinstance(s, (int, float)) for s in samples):
            found.append(f"{mid}: no samples")
        elif not mid.endswith(".overhead") and min(samples) <= 0:
            found.append(f"{mid}: a sample is not positive: {samples}")
    for name, split in (results.get("splits") or {}).items():
        total = sum(split["parts"].values())
        if abs(total - split["total"]) > 0.01 * split["total"] + 0.01:
            found.append(f"split {name}: parts add up to {total:.3f}, not {split['total']:.3f}")
    ratios = {r["id"]: r for r in results.get("ratios", [])}
    found += [f"ratio {rid} missing" for rid in TARGETED if rid not in ratios]
    if "group.frozen.cores" in measurements and "group_cores_vs_slowest_single" not in ratios:
        found.append("ratio group_cores_vs_slowest_single missing (the group of one member per core ran)")
    found += [f"ratio {rid}: {r['value']} is not positive" for rid, r in ratios.items() if not r["value"] > 0]
    return found


def main(path):
    with open(path, encoding="utf-8") as handle:
        results = json.load(handle)
    found = problems(results)
    for line in found:
        print(f"bench check: {line}", file=sys.stderr)
    print(f"bench check: {len(results.get('measurements', []))} measurements, {len(results.get('ratios', []))} "
          f"ratios, {'OK' if not found else f'{len(found)} problems'}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
