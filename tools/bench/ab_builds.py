"""Two builds of the collection against each other on the fast path, in alternating rounds on one lab host.

    python tools/bench/ab_builds.py A_COLLECTIONS_PATH B_COLLECTIONS_PATH [ROUNDS] [MIB]

Each path holds ansible_collections/fleet/checkpoint (for example `git worktree add` of the commit before a change,
copied with the Makefile's rsync line). Every round checkpoints and restores the same container once with each build,
and dumps a plain process with raw CRIU as the floor, in a rotating order. Prints the medians, the median per-round
difference and ratios to CRIU, and which containerd client made each dump. Run `make lab-up` and install.yml first
(tools/bench/run.py does both), and nothing else on the lab meanwhile.
"""
import json
import os
import statistics
import sys

import run as bench


def main(paths, rounds, mib):
    host = bench.hosts()[0]
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
                for task in bench.module_cycles(host, names, "containerd", 1):
                    for row in bench.rows(task):
                        if "dump_call_seconds" in row:
                            out[way]["dump"].append(row["dump_call_seconds"])
                            out[way]["client"].append(row.get("containerd_client", "(not reported)"))
                        if "restore_call_seconds" in row:
                            out[way]["restore"].append(row["restore_call_seconds"])
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
