# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make bench`: every figure of docs/performance.md in one run on the lab fleet, as ratios to baselines of that run.

    tools/bench/run.py --mode full  --out .build/bench/results.json   (make bench; then report.py writes the doc)
    tools/bench/run.py --mode smoke --out .build/bench-smoke/results.json   (make bench-smoke, part of make test)

Raw engine cases run on the host itself (tools/bench/onhost.py); the collection's cases run through ansible-playbook
with the bench_log callback (tools/bench/callback), which records each task's wall time and the module's own figures.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import controller_cost
import disk_case
import fleet_case
import group_case
import lazy_case

ROOT = Path(__file__).resolve().parents[2]
BENCH = Path(__file__).resolve().parent
INVENTORY = ROOT / "tests" / "lab" / "inventory.yml"
ONHOST = "/usr/local/lib/fleet-bench-onhost.py"
SSH_KEY = "/var/lib/fleet-lab/ssh/id_ed25519"
EVENTS_DIR = None  # set by main(): <out>/../events

MODES = {
    # sizes (MiB) of the one-container cases, repetitions, the 8-container case, fleet and migration sizes
    "full": {"sizes": [64, 256, 1024], "reps": 5, "many": 8, "many_mib": 64, "fleet_reps": 3, "fleet_mib": 64,
             "fleet_hosts": [3, 6, 9],
             "migrate_mib": 256, "migrate_reps": 3, "small_reps": 15, "paired_reps": 9, "volume_mb": 500,
             "lazy_small_mib": 64, "lazy_big_mib": 1024, "lazy_reps": 3, "group_count": 8, "group_mib": 64},
    "smoke": {"sizes": [64], "reps": 1, "many": 2, "many_mib": 16, "fleet_reps": 1, "fleet_mib": 16,
              "fleet_hosts": [1, 3],
              "migrate_mib": 64, "migrate_reps": 1, "small_reps": 1, "paired_reps": 1, "volume_mb": 32,
              "lazy_small_mib": 16, "lazy_big_mib": 128, "lazy_reps": 1, "group_count": 4, "group_mib": 16},
}


def log(message):
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def run(argv, env=None, timeout=1800, check=True):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, argv))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    return proc


def hosts():
    found = []

    def walk(group):
        found.extend((group.get("hosts") or {}).keys())
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(yaml.safe_load(INVENTORY.read_text())["all"])
    return sorted(found)


IMAGE = "fleet-lab-workload:busybox"


def wait_counting(host, name, seconds=180):
    """Until the workload container `name` on `host` has filled its memory (it printed its first number)."""
    deadline = time.monotonic() + seconds
    while not run(["docker", "exec", host, "docker", "logs", name], check=False).stdout.strip():
        if time.monotonic() > deadline:
            raise SystemExit(f"{name} on {host} did not start counting within {seconds}s")
        time.sleep(0.3)


def onhost(host, *args):
    proc = run(["docker", "exec", host, "python3", ONHOST, *map(str, args)], timeout=3600)
    return json.loads(proc.stdout)


def playbook(path, extra_vars, limit=None, cost=None, forks=None):
    """Run a playbook with the bench_log callback; returns its events. With `cost` (a dict), what the run cost the
    controller is put in it: `cpu` seconds and `peak_mib` (controller_cost.py). `forks`: Ansible's (default 5)."""
    with tempfile.NamedTemporaryFile("r", suffix=".jsonl", delete=False) as events:
        env = {"BENCH_LOG": events.name, "ANSIBLE_CALLBACK_PLUGINS": str(BENCH / "callback"),
               "ANSIBLE_CALLBACKS_ENABLED": "bench_log", "ANSIBLE_PIPELINING": "True",
               **({"ANSIBLE_FORKS": str(forks)} if forks else {})}
        argv = ["ansible-playbook", "-i", str(INVENTORY), str(path), "-e", json.dumps(extra_vars)]
        if limit:
            argv += ["--limit", limit]
        if cost is None:
            run(argv, env=env, timeout=3600)
        else:
            proc, cost["cpu"], cost["peak_mib"] = controller_cost.run_measured(argv, {**os.environ, **env}, 3600)
            if proc.returncode != 0:
                raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                                 f"{proc.stderr[-3000:]}")
        lines = [json.loads(line) for line in open(events.name, encoding="utf-8")]
    os.unlink(events.name)
    if EVENTS_DIR:  # kept for analysis: every task's times and the module's figures
        EVENTS_DIR.mkdir(parents=True, exist_ok=True)
        kept = EVENTS_DIR / f"{len(list(EVENTS_DIR.iterdir())):03d}-{Path(path).stem}.jsonl"
        kept.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return lines


def tasks_of(events):
    """[{name, action, start, end, results: {host: result}}] in order: a task's wall time is start to last result."""
    tasks, by_uuid = [], {}
    for event in events:
        if event["event"] == "task":
            task = {"name": event["name"], "action": event["action"], "start": event["t"], "end": event["t"],
                    "results": {}}
            tasks.append(task)
            by_uuid[event["uuid"]] = task
        elif event["event"] == "result" and event["uuid"] in by_uuid:
            task = by_uuid[event["uuid"]]
            task["end"] = max(task["end"], event["t"])
            task["results"][event["host"]] = {"status": event["status"], **event["result"]}
    for task in tasks:
        task["wall"] = task["end"] - task["start"]
    return tasks


def rows(task):
    return [row for result in task["results"].values() for row in result.get("results", [])]


def figure(task, key):
    """The largest per-container figure (the containers of one call run in parallel)."""
    values = [row[key] for row in rows(task) if key in row]
    return max(values) if values else None


class Results:
    def __init__(self, mode):
        self.mode = mode
        self.measurements = {}
        self.splits = {}
        self.ratios = []
        self.podman = {}

    def add(self, mid, group, what, samples, size_mib=None, containers=1, **extra):
        samples = [round(s, 4) for s in samples if s is not None]
        if not samples:
            raise SystemExit(f"no samples for {mid}")
        self.measurements[mid] = {"id": mid, "group": group, "what": what, "size_mib": size_mib,
                                  "containers": containers, "samples": samples,
                                  "median": round(statistics.median(samples), 4), "min": min(samples),
                                  "max": max(samples), **extra}

    def median(self, mid):
        return self.measurements[mid]["median"]


# -- cases -------------------------------------------------------------------------------------------------------------
def add_pair(results, out, tool, mib, dump_what, restore_what):
    """The dump and restore samples of one on-host case (tools/bench/onhost.py) as two measurements."""
    size = {"bytes": out["info"]["bytes"]} if "bytes" in out["info"] else {}
    results.add(f"dump.{tool}.{mib}", "dump", dump_what, out["samples"]["dump"], mib, **size)
    results.add(f"restore.{tool}.{mib}", "restore", restore_what, out["samples"]["restore"], mib)


def case_floor(results, host, cfg):
    for mib in cfg["sizes"]:
        log(f"raw CRIU, {mib} MiB")
        add_pair(results, onhost(host, "criu", mib, cfg["reps"]), "criu", mib, "raw criu dump (plain process)",
                 "raw criu restore (plain process)")


def case_baselines(results, host, cfg):
    for mib in cfg["sizes"]:
        log(f"docker CLI, {mib} MiB")
        add_pair(results, onhost(host, "docker", mib, cfg["reps"]), "docker", mib, "docker checkpoint create",
                 "docker start --checkpoint")
        log(f"podman, {mib} MiB")
        out = onhost(host, "podman", mib, cfg["reps"])
        results.podman = out["info"]
        add_pair(results, out, "podman", mib, "podman container checkpoint", "podman container restore")


def module_cycles(host, containers, method, reps):
    """Checkpoint (the containers stop) and restore through docker_checkpoint, reps times; returns the task list."""
    events = playbook(BENCH / "playbooks" / "module.yml", {
        "bench_host": host, "bench_containers": containers, "bench_method": method, "bench_reps": reps}, limit=host)
    return [task for task in tasks_of(events) if task["action"].endswith("docker_checkpoint")]


def case_module(results, host, cfg):
    for mib in cfg["sizes"]:
        names = onhost(host, "workload", "start", 1, mib, f"bench-mod-{mib}")["info"]["containers"]
        try:
            for method, label in (("api", "API path"), ("containerd", "fast path")):
                log(f"docker_checkpoint {label}, {mib} MiB")
                tasks = module_cycles(host, names, method, cfg["reps"])
                dumps = [t for t in tasks if figure(t, "dump_call_seconds") is not None]
                restores = [t for t in tasks if figure(t, "restore_call_seconds") is not None]
                key = "fast" if method == "containerd" else "api"
                results.add(f"dump.module-{key}.{mib}", "dump", f"docker_checkpoint {label}: dump",
                            [figure(t, "dump_call_seconds") for t in dumps], mib)
                results.add(f"dumpop.module-{key}.{mib}", "dump", f"docker_checkpoint {label}: whole operation on "
                            "the host", [figure(t, "duration") for t in dumps], mib)
                results.add(f"dumptask.module-{key}.{mib}", "dump", f"docker_checkpoint {label}: Ansible task",
                            [t["wall"] for t in dumps], mib)
                results.add(f"restore.module-{key}.{mib}", "restore", f"docker_checkpoint after the {label}: restore",
                            [figure(t, "restore_call_seconds") for t in restores], mib)
                results.add(f"restoreop.module-{key}.{mib}", "restore", f"docker_checkpoint after the {label}: whole "
                            "operation on the host", [figure(t, "duration") for t in restores], mib)
        finally:
            onhost(host, "workload", "remove", 1, mib, f"bench-mod-{mib}")


PAIRED = ("criu", "podman", "module")


def target_size(cfg):
    """The size the one-container targets are set at: 256 MiB, or the mode's first size."""
    return 256 if 256 in cfg["sizes"] else cfg["sizes"][0]


def case_paired(results, host, cfg):
    """The fast path against raw CRIU and Podman in interleaved rounds, at the targets' size.

    The floor, the baselines and the module cases run as blocks minutes apart, and this shared machine drifts by more
    than the margins between those blocks. Here every round dumps and restores with all three, in a rotating order,
    so that a ratio is taken between figures measured seconds apart."""
    mib = target_size(cfg)
    log(f"paired rounds, {mib} MiB: raw CRIU, Podman and the fast path in each round")
    names = onhost(host, "workload", "start", 1, mib, f"bench-pair-{mib}")["info"]["containers"]
    samples = {tool: {"dump": [], "restore": []} for tool in PAIRED}
    clients = []  # which client made each fast-path dump: the module's own call ("direct") or ctr
    try:
        for rnd in range(cfg["paired_reps"]):
            for tool in PAIRED[rnd % 3:] + PAIRED[:rnd % 3]:
                if tool == "module":
                    tasks = module_cycles(host, names, "containerd", 1)
                    for step, key in (("dump", "dump_call_seconds"), ("restore", "restore_call_seconds")):
                        found = [figure(t, key) for t in tasks if figure(t, key) is not None]
                        if len(found) != 1:
                            raise SystemExit(f"paired round {rnd}: {len(found)} module {step} figures, not 1")
                        samples[tool][step] += found
                    clients += [row.get("containerd_client") for t in tasks for row in rows(t)
                                if "dump_call_seconds" in row]
                else:
                    out = onhost(host, tool, mib, 1)
                    for step in ("dump", "restore"):
                        samples[tool][step] += out["samples"][step]
                    if tool == "podman":
                        results.podman = out["info"]
    finally:
        onhost(host, "workload", "remove", 1, mib, f"bench-pair-{mib}")
    labels = {("criu", "dump"): "raw criu dump (plain process)", ("criu", "restore"): "raw criu restore (plain process)",
              ("podman", "dump"): "podman container checkpoint", ("podman", "restore"): "podman container restore",
              ("module", "dump"): "docker_checkpoint fast path: dump",
              ("module", "restore"): "docker_checkpoint fast path: restore"}
    for (tool, step), what in labels.items():
        extra = {"containerd_clients": clients} if (tool, step) == ("module", "dump") else {}
        results.add(f"paired.{step}-{tool}.{mib}", "paired", f"{what}, interleaved rounds", samples[tool][step], mib,
                    **extra)
    if set(clients) != {"direct"}:
        log(f"note: the fast-path dumps were not all made by the module's own containerd call: {clients}")


def case_many(results, host, cfg):
    count, mib = cfg["many"], cfg["many_mib"]
    log(f"{count} containers x {mib} MiB: CLI loop")
    out = onhost(host, "docker-loop", count, mib, cfg["reps"])
    results.add("many.cli-dump", "many", f"docker checkpoint create, {count} containers one after another",
                out["samples"]["dump"], mib, count)
    results.add("many.cli-restore", "many", f"docker start --checkpoint, {count} containers one after another",
                out["samples"]["restore"], mib, count)
    log(f"{count} containers x {mib} MiB: one module call")
    names = onhost(host, "workload", "start", count, mib, "bench-many")["info"]["containers"]
    try:
        tasks = module_cycles(host, names, "auto", cfg["reps"])
    finally:
        onhost(host, "workload", "remove", count, mib, "bench-many")
    results.add("many.module-dump", "many", f"docker_checkpoint, {count} containers in one call (Ansible task)",
                [t["wall"] for t in tasks if figure(t, "dump_call_seconds") is not None], mib, count)
    results.add("many.module-restore", "many", f"docker_checkpoint restore, {count} containers in one call (Ansible "
                "task)", [t["wall"] for t in tasks if figure(t, "restore_call_seconds") is not None], mib, count)


def case_small(results, host, cfg):
    """A small container: the module through Ansible vs the CLI, on the host and through Ansible's command."""
    log("small container: module vs CLI")
    out = onhost(host, "docker", 4, cfg["small_reps"])
    results.add("overhead.cli-host", "overhead", "docker checkpoint create on the host (no Ansible)",
                out["samples"]["dump"], 4)
    names = onhost(host, "workload", "start", 1, 4, "bench-small")["info"]["containers"]
    try:
        events = playbook(BENCH / "playbooks" / "small.yml", {
            "bench_host": host, "bench_container": names[0], "bench_reps": cfg["small_reps"]}, limit=host)
    finally:
        onhost(host, "workload", "remove", 1, 4, "bench-small")
    tasks = tasks_of(events)
    for tag, name, what in (("cli-task", "CLI checkpoint", "docker checkpoint create as an Ansible command task"),
                            ("module-api-task", "Module api checkpoint", "docker_checkpoint method=api (Ansible task)"),
                            ("module-auto-task", "Module auto checkpoint", "docker_checkpoint method=auto (Ansible "
                             "task)")):
        results.add(f"overhead.{tag}", "overhead", what, [t["wall"] for t in tasks if t["name"] == name], 4)


def median_run(parts, total_key, what):
    """The split of the run whose total is the median one (its parts add up to its total)."""
    totals = parts[total_key]
    pick = sorted(range(len(totals)), key=totals.__getitem__)[(len(totals) - 1) // 2]
    return {"what": f"{what} (the median of {len(totals)} runs)", "total": round(totals[pick], 4),
            "parts": {key: round(values[pick], 4) for key, values in parts.items() if key != total_key}}


def migrate_rows(tasks):
    """The source's row (dump and send) and the target's (receive and restore) of one container's migrate.yml run."""
    sent = next(row for task in tasks for row in rows(task) if "sent" in row)
    received = next(row for task in tasks for row in rows(task) if "received" in row)
    return sent, received


def lab_ssh(host):
    """The controller's ssh command line for a lab host (as the inventory logs in)."""
    port = None

    def walk(group):
        nonlocal port
        for name, hostvars in (group.get("hosts") or {}).items():
            if name == host:
                port = (hostvars or {}).get("ansible_port")
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(yaml.safe_load(INVENTORY.read_text())["all"])
    return ["ssh", "-p", str(port), "-i", SSH_KEY, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "root@127.0.0.1"]


def plain_relay(source, target, size):
    """The controller-path baseline: `ssh source cat FILE | ssh target 'cat > FILE'` of SIZE random bytes, seconds."""
    path = "/var/tmp/fleet-bench-relay"
    run(["docker", "exec", source, "sh", "-c", f"head -c {size} /dev/urandom > {path}"])
    begin = time.monotonic()
    sender = subprocess.Popen(lab_ssh(source) + [f"cat {path}"], stdout=subprocess.PIPE)
    receiver = subprocess.run(lab_ssh(target) + [f"cat > {path}"], stdin=sender.stdout, check=False, timeout=1800)
    sender.stdout.close()
    sender.wait()
    seconds = time.monotonic() - begin
    for host in (source, target):
        run(["docker", "exec", host, "rm", "-f", path], check=False)
    if sender.returncode or receiver.returncode:
        raise SystemExit(f"the plain relay failed ({sender.returncode}, {receiver.returncode})")
    return seconds


def case_migrate(results, hostnames, cfg):
    """migrate.yml source -> target over the direct path and through the controller (streamed both ways), in
    alternating order; a fresh workload each run. Baselines of the same run: scp from host to host, and
    ssh | ssh through the controller."""
    source, target = hostnames[1], hostnames[0]
    mib = cfg["migrate_mib"]
    address = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", target]
                  ).stdout.strip()
    run(["docker", "cp", SSH_KEY, f"{source}:/root/.ssh/id_ed25519"])
    run(["docker", "exec", source, "chmod", "600", "/root/.ssh/id_ed25519"])
    parts = {path: {"dump": [], "transfer": [], "restore": [], "overhead": [], "downtime": []}
             for path in ("direct", "controller")}
    copy, moved, copied, relayed, plain, peak = [], [], [], [], [], []
    try:
        for rep in range(cfg["migrate_reps"]):
            for path in (("direct", "controller") if rep % 2 == 0 else ("controller", "direct")):
                log(f"migrate.yml {mib} MiB, {path} path, run {rep + 1}")
                for host in (source, target):
                    onhost(host, "workload", "remove", 1, mib, "bench-move")
                name = onhost(source, "workload", "start", 1, mib, "bench-move")["info"]["containers"][0]
                extra = {"fleet_checkpoint_migrate_transfer": "direct",
                         "fleet_checkpoint_migrate_target_address": address} if path == "direct" else {
                    "fleet_checkpoint_migrate_transfer": "controller"}
                events = playbook(ROOT / "playbooks" / "migrate.yml", {
                    "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
                    "fleet_checkpoint_migrate_containers": [name], **extra})
                tasks = tasks_of(events)
                sent, received = migrate_rows(tasks)
                # Downtime: from the freeze (the dump begins on the source) to the container running on the target,
                # both stamped by the modules themselves (the lab hosts share one clock).
                downtime = received["resumed_at"] - sent["dump_started_at"]
                transfer = received["received"]["finished_at"] - sent["sent"]["started_at"]
                split = {"dump": sent["duration"], "transfer": transfer, "restore": received["restore_call_seconds"]}
                split["overhead"] = downtime - sum(split.values())
                split["downtime"] = downtime
                for key, value in split.items():
                    parts[path][key].append(value)
                size = sent["sent"]["bytes"]
                if path == "direct":
                    moved.append(size / transfer)
                    copied.append(size / sent["sent"]["seconds"])
                    out = onhost(source, "copy-random", size, address, 1)
                    copy.extend(size / s for s in out["samples"]["copy"])
                else:
                    relayed.append(size / transfer)
                    peak.extend(max(row["peak_rss"].values()) / 1e6 for task in tasks for row in rows(task)
                                if "peak_rss" in row)
                    plain.append(size / plain_relay(source, target, size))
    finally:
        for host in (source, target):
            onhost(host, "workload", "remove", 1, mib, "bench-move")
        run(["docker", "exec", source, "rm", "-f", "/root/.ssh/id_ed25519"], check=False)
    for path, prefix in (("direct", "migrate"), ("controller", "migrate-controller")):
        for key, values in parts[path].items():
            results.add(f"{prefix}.{key}", prefix, f"migrate.yml ({path} path): {key}", values, mib)
    results.add("transfer.ours", "transfer", "migration transfer (send to checked and in place on the target), MB/s",
                [m / 1e6 for m in moved], mib, unit="MB/s")
    results.add("transfer.copy", "transfer", "migration's sending side alone (ssh stream until the last byte is in), MB/s",
                [c / 1e6 for c in copied], mib, unit="MB/s")
    results.add("transfer.plain", "transfer", "plain scp of as many random bytes, same hosts, MB/s",
                [c / 1e6 for c in copy], mib, unit="MB/s")
    results.add("transfer.controller", "transfer", "migration transfer through the controller's relay (sent, checked, "
                "in place), MB/s", [r / 1e6 for r in relayed], mib, unit="MB/s")
    results.add("transfer.plain-relay", "transfer", "plain `ssh source cat | ssh target 'cat >'` through the controller, "
                "as many random bytes, MB/s", [p / 1e6 for p in plain], mib, unit="MB/s")
    results.add("relay.peak-rss", "transfer", "controller relay's peak RSS (its process or an ssh client, the larger), "
                "MB", peak, mib, unit="MB")
    results.splits["migrate"] = median_run(parts["direct"], "downtime",
                                           f"migrate.yml downtime, direct path, 1 container x {mib} MiB")
    results.splits["migrate-controller"] = median_run(parts["controller"], "downtime",
                                                      f"migrate.yml downtime, through the controller, 1 container x "
                                                      f"{mib} MiB")


# -- ratios and targets ------------------------------------------------------------------------------------------------
def ratio(results, rid, what, num, den, target=None, note=""):
    if num not in results.measurements or den not in results.measurements:
        return None
    value = results.median(num) / results.median(den)
    entry = {"id": rid, "what": what, "numerator": num, "denominator": den, "value": round(value, 3),
             "target": target or "", "note": note}
    if target:
        entry["met"] = meets(value, target)
    results.ratios.append(entry)
    return entry


def meets(value, target):
    """Whether value meets a target written as '<= 0.1' or '>= 0.7'."""
    op, bound = target.split()
    return value <= float(bound) if op == "<=" else value >= float(bound)


def paired_ratio(results, rid, what, num, den, target=None, note=""):
    """The median of per-round ratios between two measurements taken in the same rounds (case_paired)."""
    if num not in results.measurements or den not in results.measurements:
        return None
    nums, dens = results.measurements[num]["samples"], results.measurements[den]["samples"]
    if len(nums) != len(dens):
        raise SystemExit(f"{num} and {den} do not have one sample per round each")
    per_round = sorted(n / d for n, d in zip(nums, dens))
    note = (f"{note + '; ' if note else ''}median of {len(per_round)} per-round ratios (spread "
            f"{per_round[0]:.2f}{chr(8211)}{per_round[-1]:.2f}); ratio of the medians "
            f"{results.median(num) / results.median(den):.2f}")
    entry = ratio(results, rid, what, num, den, target, note)
    entry["value"] = round(statistics.median(per_round), 3)
    entry["per_round"] = [round(r, 3) for r in per_round]
    if target:
        entry["met"] = meets(entry["value"], target)
    return entry


def ratios(results, cfg):
    s = target_size(cfg)
    blocks = "blocks minutes apart, so the machine's drift lands in the ratio: the target is on the paired figure"
    ratio(results, f"fast_vs_docker_dump_{s}", f"fast-path dump vs docker checkpoint create ({s} MiB)",
          f"dump.module-fast.{s}", f"dump.docker.{s}", "<= 0.1")
    paired_ratio(results, "fast_vs_criu_dump_paired", f"fast-path dump vs raw criu dump, interleaved rounds ({s} MiB)",
                 f"paired.dump-module.{s}", f"paired.dump-criu.{s}", "<= 2")
    paired_ratio(results, "fast_vs_podman_dump_paired", f"fast-path dump vs podman checkpoint, interleaved rounds "
                 f"({s} MiB)", f"paired.dump-module.{s}", f"paired.dump-podman.{s}", "<= 1")
    paired_ratio(results, "restore_vs_podman_paired", f"module restore vs podman restore, interleaved rounds ({s} MiB)",
                 f"paired.restore-module.{s}", f"paired.restore-podman.{s}", "<= 2", "stretch target")
    for mib in cfg["sizes"]:  # a container's dump has a fixed cost (~0.2 s here) a plain process has not
        ratio(results, f"fast_vs_criu_dump_{mib}", f"fast-path dump vs raw criu dump ({mib} MiB), separate blocks",
              f"dump.module-fast.{mib}", f"dump.criu.{mib}", note=blocks if mib == s else "")
        ratio(results, f"fast_vs_podman_dump_{mib}", f"fast-path dump vs podman checkpoint ({mib} MiB), separate "
              "blocks", f"dump.module-fast.{mib}", f"dump.podman.{mib}", note=blocks if mib == s else "")
    ratio(results, f"fastop_vs_docker_dump_{s}", f"fast-path whole operation (dump, sha256, metadata) vs docker "
          f"checkpoint create ({s} MiB)", f"dumpop.module-fast.{s}", f"dump.docker.{s}")
    ratio(results, "many_vs_cli_loop", f"{cfg['many']} containers in one module call vs the CLI loop (checkpoint)",
          "many.module-dump", "many.cli-dump", "<= 0.6")
    ratio(results, "many_vs_cli_loop_restore", f"{cfg['many']} containers in one module call vs the CLI loop "
          "(restore)", "many.module-restore", "many.cli-restore")
    ratio(results, "small_module_vs_command_task", "small container: module task vs the CLI as an Ansible command "
          "task (same transport)", "overhead.module-auto-task", "overhead.cli-task", "<= 1.15")
    ratio(results, "small_module_api_vs_command_task", "small container: module (method=api) task vs the CLI as an "
          "Ansible command task", "overhead.module-api-task", "overhead.cli-task")
    ratio(results, "small_module_vs_cli_host", "small container: module task vs the CLI typed on the host (no "
          "Ansible)", "overhead.module-auto-task", "overhead.cli-host")
    for mib in cfg["sizes"]:
        ratio(results, f"restore_vs_docker_{mib}", f"module restore vs docker start --checkpoint ({mib} MiB)",
              f"restore.module-fast.{mib}", f"restore.docker.{mib}")
        ratio(results, f"restore_vs_podman_{mib}", f"module restore vs podman restore ({mib} MiB)",
              f"restore.module-fast.{mib}", f"restore.podman.{mib}")
    ratio(results, "migrate_overhead_share", "migration overhead / downtime", "migrate.overhead", "migrate.downtime",
          "<= 0.1")
    ratio(results, "transfer_vs_plain_copy", "migration transfer throughput (stream sent, checked, in place) / "
          "plain copy throughput", "transfer.ours", "transfer.plain", ">= 0.7")
    ratio(results, "copy_step_vs_plain_copy", "migration's sending side alone / plain copy throughput",
          "transfer.copy", "transfer.plain")
    ratio(results, "controller_vs_direct_downtime", "migration downtime through the controller / direct path",
          "migrate-controller.downtime", "migrate.downtime", "<= 1.3")
    disk_case.ratios(sys.modules[__name__], results, cfg)
    lazy_case.ratios(sys.modules[__name__], results, cfg)
    group_case.ratios(sys.modules[__name__], results, cfg)
    fleet_case.ratios(sys.modules[__name__], results, cfg)
    ratio(results, "controller_transfer_vs_plain_relay", "migration transfer through the controller / plain ssh | ssh "
          "relay throughput", "transfer.controller", "transfer.plain-relay", ">= 0.7")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="full")
    parser.add_argument("--out", required=True)
    parser.add_argument("--only", help="comma-separated cases (floor,baselines,module,paired,many,small,fleet,migrate,"
                        "migrate-disk,migrate-lazy); default all")
    parser.add_argument("--sizes", help="comma-separated MiB sizes of the one-container cases (default: the mode's)")
    parser.add_argument("--reps", type=int, help="repetitions (default: the mode's)")
    parser.add_argument("--merge", action="store_true", help="keep the other cases' figures already in --out")
    args = parser.parse_args()
    global EVENTS_DIR  # pylint: disable=global-statement
    EVENTS_DIR = Path(args.out).resolve().parent / "events"
    if EVENTS_DIR.is_dir():
        for old in EVENTS_DIR.iterdir():
            old.unlink()
    cfg = dict(MODES[args.mode])
    if args.sizes:
        cfg["sizes"] = [int(size) for size in args.sizes.split(",")]
    if args.reps:
        cfg["reps"] = args.reps
    hostnames = hosts()
    host = hostnames[0]
    log(f"mode {args.mode}: {cfg}")
    log("preparing the lab hosts (playbooks/install.yml: CRIU, experimental mode)")
    began = time.monotonic()
    run(["ansible-playbook", "-i", str(INVENTORY), str(ROOT / "playbooks" / "install.yml")], timeout=3600)
    log(f"prepared in {time.monotonic() - began:.1f} s")
    for name in hostnames:
        run(["docker", "cp", str(BENCH / "onhost.py"), f"{name}:{ONHOST}"])
    results = Results(args.mode)
    earlier = None
    if args.merge and Path(args.out).exists():  # re-run some cases, keep the others
        earlier = json.loads(Path(args.out).read_text())
        results.measurements = {m["id"]: m for m in earlier["measurements"]}
        results.splits = earlier.get("splits") or {}
        results.podman = {"podman": earlier["meta"].get("podman", ""), "runtime": earlier["meta"].get("podman_runtime")}
    started = time.time()
    cases = {"floor": lambda: case_floor(results, host, cfg), "baselines": lambda: case_baselines(results, host, cfg),
             "module": lambda: case_module(results, host, cfg), "paired": lambda: case_paired(results, host, cfg),
             "many": lambda: case_many(results, host, cfg), "small": lambda: case_small(results, host, cfg),
             "fleet": lambda: fleet_case.case_fleet(results, hostnames, cfg, sys.modules[__name__]),
             "migrate": lambda: case_migrate(results, hostnames, cfg),
             "migrate-disk": lambda: disk_case.case_migrate_disk(results, hostnames, cfg, sys.modules[__name__]),
             "migrate-lazy": lambda: lazy_case.case_migrate_lazy(results, hostnames, cfg, sys.modules[__name__]),
             "group": lambda: group_case.case_group(results, hostnames, cfg, sys.modules[__name__])}
    for name in (args.only.split(",") if args.only else cases):
        began = time.monotonic()
        cases[name]()
        log(f"case {name}: {time.monotonic() - began:.1f} s")
        partial = Path(args.out).with_suffix(".partial.json")  # what is done so far, should a later case fail
        partial.parent.mkdir(parents=True, exist_ok=True)
        partial.write_text(json.dumps({"measurements": list(results.measurements.values())}, indent=1))
    ratios(results, cfg)
    versions = onhost(host, "versions")["info"]
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), "mode": args.mode,
            "repetitions": cfg["reps"], "host": host, "hosts": len(hostnames), **versions,
            "podman": results.podman.get("podman", ""), "podman_runtime": results.podman.get("runtime", ""),
            "command": "make bench" if args.mode == "full" else "make bench-smoke",
            "seconds": round(time.time() - started, 1), "ansible_pipelining": True}
    if earlier and args.only:  # say which figures are from this run and which from the earlier one
        before = earlier["meta"].get("merged") or {}
        meta["merged"] = {"cases": args.only.split(","),
                          "earlier_date": before.get("earlier_date") or earlier["meta"].get("date"),
                          # the cases an earlier merged run re-ran, and when (not the run the rest is from)
                          "between": [*(before.get("between") or []),
                                      *([{"cases": [c for c in before.get("cases", []) if c not in args.only.split(",")],
                                          "date": earlier["meta"].get("date")}] if before else [])]}
        meta["merged"]["between"] = [run for run in meta["merged"]["between"] if run["cases"]]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "measurements": list(results.measurements.values()),
                               "ratios": results.ratios, "splits": results.splits}, indent=2) + "\n")
    log(f"wrote {out} ({len(results.measurements)} measurements, {len(results.ratios)} ratios) in {meta['seconds']} s")
    for entry in results.ratios:
        mark = "" if "met" not in entry else (" met" if entry["met"] else " NOT MET")
        log(f"  {entry['what']}: {entry['value']}x {entry['target']}{mark}")


if __name__ == "__main__":
    main()
