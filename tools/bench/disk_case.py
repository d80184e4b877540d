"""make bench, case `migrate-disk`: what a volume's data costs a migration's downtime.

The same container (memhog, the migrate case's memory size, a named volume mounted at /data) is moved through the
controller three ways, in rotating order, a fresh container each run: with an empty volume; with 500 MB (`make
bench`; 32 MB in the smoke run) of data in the volume that does not change during the move (two passes - the default: the data goes before the freeze); and
the same 500 MB with `fleet_checkpoint_migrate_disk_precopy: false` (everything during the freeze, for contrast).
The downtime is stamped by the modules (freeze on the source to the container running on the target).
"""

from __future__ import annotations

VARIANTS = ("empty", "precopy", "freeze")


def _start(bench, host, name, mib, fill_mb):
    bench.run(["docker", "exec", host, "sh", "-c",
               f"docker rm -f {name} >/dev/null 2>&1; docker volume rm -f {name}-data >/dev/null 2>&1; "
               f"docker volume create {name}-data >/dev/null"])
    if fill_mb:
        bench.run(["docker", "exec", host, "docker", "run", "--rm", "-v", f"{name}-data:/data", bench.IMAGE, "sh",
                   "-c", f"head -c {fill_mb * 1000 * 1000} /dev/urandom > /data/blob"])
    bench.run(["docker", "exec", host, "docker", "run", "-d", "--name", name, "-v", f"{name}-data:/data",
               bench.IMAGE, "memhog", str(mib)])
    bench.wait_counting(host, name)


def _remove(bench, host, name):
    bench.run(["docker", "exec", host, "sh", "-c",
               f"docker rm -f {name} >/dev/null 2>&1; docker volume rm -f {name}-data >/dev/null 2>&1; true"],
              check=False)


def case_migrate_disk(results, hostnames, cfg, bench):
    """Downtime with 500 MB of unchanging volume data, two passes and one, against the same move without it."""
    source, target = hostnames[1], hostnames[0]
    mib, name, volume_mb = cfg["migrate_mib"], "bench-disk", cfg["volume_mb"]
    downtime = {variant: [] for variant in VARIANTS}
    precopy_bytes, final_bytes = [], []
    try:
        for rep in range(cfg["migrate_reps"]):
            order = VARIANTS[rep % 3:] + VARIANTS[:rep % 3]
            for variant in order:
                bench.log(f"migrate.yml {mib} MiB, volume {variant}, run {rep + 1}")
                for host in (source, target):
                    _remove(bench, host, name)
                _start(bench, source, name, mib, 0 if variant == "empty" else volume_mb)
                events = bench.playbook(bench.ROOT / "playbooks" / "migrate.yml", {
                    "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
                    "fleet_checkpoint_migrate_containers": [name], "fleet_checkpoint_migrate_transfer": "controller",
                    "fleet_checkpoint_migrate_disk_precopy": variant != "freeze"})
                sent, received = bench.migrate_rows(bench.tasks_of(events))
                downtime[variant].append(received["resumed_at"] - sent["dump_started_at"])
                disk = sent["sent"].get("disk") or {}
                if variant == "precopy":
                    precopy_bytes.append((disk.get("precopy") or {}).get("bytes", 0) / 1e6)
                    final_bytes.append(disk.get("bytes", 0) / 1e3)
                    if not disk.get("precopy"):
                        raise SystemExit("the two-pass run sent no pre-copy")
    finally:
        for host in (source, target):
            _remove(bench, host, name)
    what = {"empty": "an empty volume", "precopy": f"{volume_mb} MB in the volume, two passes (default)",
            "freeze": f"{volume_mb} MB in the volume, all during the freeze (precopy off)"}
    for variant, values in downtime.items():
        results.add(f"migrate-disk.{variant}", "migrate-disk", f"migrate.yml downtime through the controller, "
                    f"{what[variant]}, s", values, mib)
    results.add("migrate-disk.precopy-mb", "migrate-disk", "bytes sent before the freeze (two passes), MB",
                precopy_bytes, mib, unit="MB", volume_mb=volume_mb)
    results.add("migrate-disk.final-kb", "migrate-disk", "disk-state bytes sent during the freeze (two passes), kB",
                final_bytes, mib, unit="kB")


def ratios(bench, results, cfg):
    volume_mb = cfg["volume_mb"]
    bench.ratio(results, "volume_downtime_vs_without", f"migration downtime with {volume_mb} MB of unchanging volume "
                "data / without it (through the controller)", "migrate-disk.precopy", "migrate-disk.empty", "<= 1.2")
    bench.ratio(results, "volume_downtime_one_pass_vs_without", f"the same with all {volume_mb} MB sent during the "
                "freeze (precopy off) / without it", "migrate-disk.freeze", "migrate-disk.empty")
