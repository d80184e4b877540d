# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Two builds of the collection against each other on the fast path, in alternating rounds on one lab host.

    python tools/bench/ab_builds.py A_COLLECTIONS_PATH B_COLLECTIONS_PATH [ROUNDS] [MIB]

Each path holds ansible_collections/fleet/checkpoint (for example `git worktree add` of the commit before a change,
copied with the Makefile's rsync line). Every round checkpoints and restores the same container once with each build,
and dumps a plain process with raw CRIU as the floor, in a rotating order. Prints the medians, the median per-round
difference and ratios to CRIU, and which containerd client made each dump. The lab must be up (`make lab-up`) and
prepared (playbooks/install.yml, as `make bench` does); nothing else may run on it meanwhile.
"""
import json
import os
import statistics
import sys

import run as bench


def main(paths, rounds, mib):
    host = bench.hosts()[0]
    bench.run(["docker", "cp", str(bench.BENCH / "onhost.py"), f"{host}:{bench.ONHOST}"])
    names = bench.onhost(host, "workload", "start", 1, mib, "bench-ab")["info"]["containers"]
    out = {key: {"dump": [], "restore": [], "client": []} for key in ("A", "B")}
    floor = []
    try:
        for rnd in range(rounds):
            order = ["A", "B", "criu"]
            for way in order[rnd % 3:] + order[:rnd % 3]:
                if way == "criu":
                    floor += bench.onhost(host, "criu", mib, 1)["samples"]["dump"]
                    continue
                os.environ["ANSIBLE_COLLECTIONS_PATH"] = paths[way]
                rows = [row for task in bench.module_cycles(host, names, "containerd", 1) for row in bench.rows(task)]
                dumps = [row for row in rows if "dump_call_seconds" in row]
                restores = [row["restore_call_seconds"] for row in rows if "restore_call_seconds" in row]
                if len(dumps) != 1 or len(restores) != 1:
                    raise SystemExit(f"round {rnd}, build {way}: {len(dumps)} dump and {len(restores)} restore "
                                     "figures, not 1 each")
                out[way]["dump"].append(dumps[0]["dump_call_seconds"])
                out[way]["client"].append(dumps[0].get("containerd_client", "(not reported)"))
                out[way]["restore"] += restores
            bench.log(f"round {rnd}: A {out['A']['dump'][-1]} s, B {out['B']['dump'][-1]} s, criu {floor[-1]} s")
    finally:
        bench.onhost(host, "workload", "remove", 1, mib, "bench-ab")
    summary = {"mib": mib, "rounds": rounds, "paths": paths, "criu_dump": floor, **out}
    for key in ("A", "B"):
        dumps = out[key]["dump"]
        summary[f"{key}_median_dump"] = round(statistics.median(dumps), 4)
        summary[f"{key}_median_restore"] = round(statistics.median(out[key]["restore"]), 4)
        summary[f"{key}_vs_criu_per_round"] = round(statistics.median(d / f for d, f in zip(dumps, floor)), 3)
    summary["median_per_round_A_minus_B"] = round(statistics.median(
        a - b for a, b in zip(out["A"]["dump"], out["B"]["dump"])), 3)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    main({"A": sys.argv[1], "B": sys.argv[2]}, int(sys.argv[3]) if len(sys.argv) > 3 else 12,
         int(sys.argv[4]) if len(sys.argv) > 4 else 256)
