"""make bench, case `group`: how long a group of containers is frozen for a consistent checkpoint (consistent=true:
first freeze to last dump done), against each member checkpointed alone (its dump, during which CRIU keeps it frozen).

One host, `group_count` containers of `group_mib` MiB each (memhog: touched, incompressible memory), every checkpoint
leaving them running; rounds of: each member alone, then the group.
"""

from __future__ import annotations


def case_group(results, hostnames, cfg, bench):
    host, count, mib = hostnames[0], cfg["group_count"], cfg["group_mib"]
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
    results.add("group.single-slowest", "group", f"slowest member checkpointed alone (its dump), of {count} x {mib} MiB",
                slowest, mib)
    results.add("group.single-sum", "group", f"the {count} members checkpointed one after another (sum of dumps)",
                [sum(singles[i:i + per_round]) for i in range(0, len(singles), per_round)], mib, count)
    results.add("group.frozen", "group", f"consistent checkpoint of the {count}: first freeze to last dump done",
                groups, mib, count)


def ratios(bench, results, cfg):
    count = cfg["group_count"]
    bench.ratio(results, "group_vs_slowest_single", f"group of {count}: frozen time / slowest member's dump alone",
                "group.frozen", "group.single-slowest", "<= 1.3",
                f"the {count} dumps run at once on the host's cores (2 on the lab machine): a dump is mostly CPU "
                "(runc, CRIU, the shim), so the group's frozen time grows with members / cores")
    bench.ratio(results, "group_vs_one_by_one", f"group of {count}: frozen time / the members' dumps one after "
                "another", "group.frozen", "group.single-sum")
