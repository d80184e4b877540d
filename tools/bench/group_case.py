"""make bench, case `group`: how long a group of containers is frozen for a consistent checkpoint (consistent=true:
first freeze to last dump done), against each member checkpointed alone (its dump, during which CRIU keeps it frozen).

One host, `group_count` containers of `group_mib` MiB each (memhog: touched, incompressible memory), every checkpoint
leaving them running; rounds of: each member alone, then the group.
"""

from __future__ import annotations


def case_group(results, hostnames, cfg, bench):
    """The group of `group_count`, then (when the host has fewer cores) a group of as many members as it has cores:
    the same consistent checkpoint where every member's dump has a core of its own."""
    host = hostnames[0]
    cores = int(bench.run(["docker", "exec", host, "nproc"]).stdout.strip())
    for count in sorted({cfg["group_count"], min(cores, cfg["group_count"])}, reverse=True):
        _group(results, host, count, cfg, bench, "" if count == cfg["group_count"] else ".cores")


def _group(results, host, count, cfg, bench, suffix):
    mib = cfg["group_mib"]
    bench.log(f"group of {count} x {mib} MiB: each alone, then consistent")
    names = bench.onhost(host, "workload", "start", count, mib, "bench-group")["info"]["containers"]
    try:
        events = bench.playbook(bench.BENCH / "playbooks" / "group.yml", {
            "bench_host": host, "bench_containers": names, "bench_reps": cfg["reps"]}, limit=host)
    finally:
        bench.onhost(host, "workload", "remove", count, mib, "bench-group")
    singles, groups = [], []
    for task in bench.tasks_of(events):
        if task["name"] == "Single checkpoint":
            singles += [row["dump_call_seconds"] for row in bench.rows(task) if "dump_call_seconds" in row]
        elif task["name"] == "Group checkpoint":
            groups += [result["group"]["frozen_seconds"] for result in task["results"].values() if "group" in result]
    per_round = len(names)
    slowest = [max(singles[i:i + per_round]) for i in range(0, len(singles), per_round)]
    results.add(f"group.single-slowest{suffix}", "group",
                f"slowest member checkpointed alone (its dump), of {count} x {mib} MiB", slowest, mib)
    results.add(f"group.single-sum{suffix}", "group",
                f"the {count} members checkpointed one after another (sum of dumps)",
                [sum(singles[i:i + per_round]) for i in range(0, len(singles), per_round)], mib, count)
    results.add(f"group.frozen{suffix}", "group",
                f"consistent checkpoint of the {count}: first freeze to last dump done", groups, mib, count)


def ratios(bench, results, cfg):
    count = cfg["group_count"]
    bench.ratio(results, "group_vs_slowest_single", f"group of {count}: frozen time / slowest member's dump alone",
                "group.frozen", "group.single-slowest", "<= 1.3",
                f"the {count} dumps run at once on the host's cores (2 on the lab machine): a dump is mostly CPU "
                "(runc, CRIU, the shim), so the group's frozen time grows with members / cores")
    bench.ratio(results, "group_vs_one_by_one", f"group of {count}: frozen time / the members' dumps one after "
                "another", "group.frozen", "group.single-sum")
    if "group.frozen.cores" in results.measurements:
        cores = results.measurements["group.frozen.cores"]["containers"]
        bench.ratio(results, "group_cores_vs_slowest_single", f"group of {cores} (one member per core): frozen time / "
                    "slowest member's dump alone", "group.frozen.cores", "group.single-slowest.cores", "<= 1.3",
                    "the issue's 1.3x where every member's dump has a core of its own")
