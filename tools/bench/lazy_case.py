"""make bench, case `migrate-lazy`: post-copy's downtime against stop-and-copy, on a link shaped to 50 MB/s.

migrate.yml on the direct path, memory only, the source's link shaped with tc (tbf, 400 Mbit/s: a WAN link), in
rotating order, a fresh container each run: stop-and-copy of a small container (64 MiB; 16 MiB in the smoke run),
stop-and-copy of a big one (1 GiB; 128 MiB) and post-copy of the same big one. The downtime is stamped by the
modules (freeze on the source to running on the target; the lab hosts share one clock); post-copy's run also gives
the time from the freeze to the last page.
"""

from __future__ import annotations

SHAPE = "tc qdisc replace dev eth0 root tbf rate 400mbit burst 256kb latency 100ms"
VARIANTS = (("stop", "small"), ("stop", "big"), ("lazy", "big"))


def case_migrate_lazy(results, hostnames, cfg, bench):
    """Downtime of post-copy against stop-and-copy (small and big) over a shaped link."""
    source, target = hostnames[1], hostnames[0]
    sizes = {"small": cfg["lazy_small_mib"], "big": cfg["lazy_big_mib"]}
    address = bench.run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                         target]).stdout.strip()
    bench.run(["docker", "cp", bench.SSH_KEY, f"{source}:/root/.ssh/id_ed25519"])
    bench.run(["docker", "exec", source, "chmod", "600", "/root/.ssh/id_ed25519"])
    downtime = {variant: [] for variant in VARIANTS}
    last_page = []
    bench.run(["docker", "exec", source, "sh", "-c", SHAPE])
    try:
        for rep in range(cfg["lazy_reps"]):
            for mode, size in VARIANTS[rep % 3:] + VARIANTS[:rep % 3]:
                mib = sizes[size]
                bench.log(f"migrate.yml {mib} MiB, {mode}, link shaped to 50 MB/s, run {rep + 1}")
                for host in (source, target):
                    bench.onhost(host, "workload", "remove", 1, mib, "bench-lazy")
                name = bench.onhost(source, "workload", "start", 1, mib, "bench-lazy")["info"]["containers"][0]
                events = bench.playbook(bench.ROOT / "playbooks" / "migrate.yml", {
                    "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
                    "fleet_checkpoint_migrate_containers": [name], "fleet_checkpoint_migrate_transfer": "direct",
                    "fleet_checkpoint_migrate_target_address": address, "fleet_checkpoint_migrate_mode": mode,
                    "fleet_checkpoint_migrate_volumes": "none", "fleet_checkpoint_migrate_writable_layer": False})
                sent, received = bench.migrate_rows(bench.tasks_of(events))
                downtime[(mode, size)].append(received["resumed_at"] - sent["dump_started_at"])
                if mode == "lazy":
                    last_page.append(sent["sent"]["pages_seconds"])
                for host in (source, target):
                    bench.onhost(host, "workload", "remove", 1, mib, "bench-lazy")
    finally:
        bench.run(["docker", "exec", source, "sh", "-c", "tc qdisc del dev eth0 root 2>/dev/null; true"], check=False)
        for host in (source, target):
            for mib in sizes.values():
                bench.onhost(host, "workload", "remove", 1, mib, "bench-lazy")
        bench.run(["docker", "exec", source, "rm", "-f", "/root/.ssh/id_ed25519"], check=False)
    for (mode, size), values in downtime.items():
        label = "post-copy" if mode == "lazy" else "stop-and-copy"
        results.add(f"migrate-lazy.{mode}-{size}", "migrate-lazy", f"migrate.yml downtime, {label}, "
                    f"{sizes[size]} MiB, link at 50 MB/s, s", values, sizes[size])
    results.add("migrate-lazy.last-page", "migrate-lazy", f"post-copy: freeze to the last page, {sizes['big']} MiB, "
                "link at 50 MB/s, s", last_page, sizes["big"])


def ratios(bench, results, cfg):
    big, small = cfg["lazy_big_mib"], cfg["lazy_small_mib"]
    bench.ratio(results, "lazy_big_vs_stop_small", f"post-copy downtime of {big} MiB / stop-and-copy downtime of "
                f"{small} MiB (50 MB/s link)", "migrate-lazy.lazy-big", "migrate-lazy.stop-small", "<= 2")
    bench.ratio(results, "lazy_vs_stop_same", f"post-copy downtime / stop-and-copy downtime, both {big} MiB "
                "(50 MB/s link)", "migrate-lazy.lazy-big", "migrate-lazy.stop-big", "<= 0.2")
