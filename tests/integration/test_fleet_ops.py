"""Fleet operations on the lab: host_reboot across 3 hosts with several workloads, restore idempotency.

Every workload counts in memory and prints each number to its log: after a reboot through fleet.checkpoint the log
must read as one unbroken count (a cold start would begin again at 1).
"""

import glob
import json
import os
import re
import tempfile
import threading
import time

import pytest

from conftest import ROOT, ansible_playbook, counts, lab_exec, run, run_module, sh

IMAGE = "fleet-lab-workload:busybox"
PLAYBOOKS = ROOT / "playbooks"
SERVE = "mkdir -p /www && echo fleet > /www/index.html && httpd -p 8080 -h /www && exec counter"
WORKLOADS = {
    # name: docker run options, command
    "plain": ([], []),
    "always": (["--restart", "always"], []),
    "unless": (["--restart", "unless-stopped", "-v", "fleet-data:/data"], []),
    "published": (["--restart", "on-failure:3", "-p", "18080:8080"], ["sh", "-c", SERVE]),
}


def start_workloads(host):
    for name, (options, command) in WORKLOADS.items():
        lab_exec(host, "docker", "rm", "-f", name, check=False)
        lab_exec(host, "docker", "run", "-d", "--name", name, "-e", "COUNTER_INTERVAL=0.2", *options, IMAGE, *command)
    deadline = time.monotonic() + 30
    while not all(counts(host, name)[-1:] >= [5] for name in WORKLOADS):
        assert time.monotonic() < deadline, f"workloads on {host} do not count"
        time.sleep(0.3)


def policies(host):
    return {name: policies_of(host, name) for name in WORKLOADS}


def boot_time(host):
    return lab_exec(host, "systemctl", "show", "-p", "UserspaceTimestamp", "--value").stdout.strip()


def assert_unbroken(host, name, before):
    """The count went on from where it was: one step at a time, past the number seen before the reboot."""
    deadline = time.monotonic() + 20
    while counts(host, name)[-1] < before + 5:
        assert time.monotonic() < deadline, f"{host}/{name} stopped counting"
        time.sleep(0.3)
    numbers = counts(host, name)
    breaks = [(a, b) for a, b in zip(numbers, numbers[1:]) if b != a + 1]
    assert not breaks, f"{host}/{name}: the count broke at {breaks[:3]} (cold start or lost state)"


def served(host):
    return sh(host, "python3 -c \"import urllib.request; "
                    "print(urllib.request.urlopen('http://127.0.0.1:18080/', timeout=5).read().decode())\"",
              check=False).stdout.strip()


def playbook_output(*args, **kwargs):
    return ansible_playbook(*args, **kwargs)[1]


def playbook_rc(*args, **kwargs):
    return ansible_playbook(*args, **kwargs)[0]


def changed_tasks(output):
    return {host: stats["changed"] for host, stats in output["stats"].items()}


def reboot_fleet(hosts, extra_vars):
    for host in hosts:
        start_workloads(host)
    before = {host: {name: counts(host, name)[-1] for name in WORKLOADS} for host in hosts}
    booted = {host: boot_time(host) for host in hosts}
    wanted = {host: policies(host) for host in hosts}
    output = playbook_output(PLAYBOOKS / "host_reboot.yml", check=True,
                             extra_vars=dict({"fleet_checkpoint_hosts": ",".join(hosts)}, **extra_vars))
    for host in hosts:
        assert boot_time(host) != booted[host], f"{host} was not rebooted"
        for name in WORKLOADS:
            assert_unbroken(host, name, before[host][name])
        assert policies(host) == wanted[host]
        assert served(host) == "fleet"
    return output


def batches(output, play_name):
    """The hosts of each batch of a serial play, in order (ansible runs the play once per batch)."""
    return [sorted({host for task in play["tasks"] for host in task["hosts"]})
            for play in output["plays"] if play["play"]["name"] == play_name]


def task_results(output, task_name):
    """(host, result) of every run of the tasks whose name ends with task_name (a role's are prefixed with it)."""
    return [(host, result) for play in output["plays"] for task in play["tasks"]
            if task["task"]["name"].endswith(task_name) for host, result in task["hosts"].items()]


def test_host_reboot_batch_by_batch_keeps_every_count(fleet):
    """serial as a percentage (67 % of 3 hosts: a batch of 2, then 1), each batch's pre-flight counted old
    (fleet_checkpoint_preflight_max_age=0): every batch claims its hosts again and pre-flights them again."""
    for host in fleet:
        sh(host, "touch /run/reboot-required")
    output = reboot_fleet(fleet, {"fleet_checkpoint_serial": "67%", "fleet_checkpoint_preflight_max_age": 0})
    assert batches(output, "Checkpoint, reboot, restore, batch by batch") == [sorted(fleet[:2]), fleet[2:]]
    claims = task_results(output, "Claim the host for this run (refused if another run holds it)")
    assert sorted(host for host, result in claims if not result.get("skipped")) == sorted(fleet * 2), claims
    # The pre-flight's claim has its short lease; a batch's claim, the whole 4 hours.
    expiry = {}
    for host, result in claims:
        expiry.setdefault(host, []).append(result["lock"]["expires"])
    assert all(later - first > 10000 for first, later in expiry.values()), expiry
    preflight = "Pre-flight - what would be checkpointed, and what cannot be (changes nothing)"
    # (the module's results: the role's include has that name too)
    preflights = [host for host, result in task_results(output, preflight) if "checkpoint" in result]
    assert sorted(preflights) == sorted(fleet * 2), preflights
    assert [each for each in fleet if sh(each, "test -e /var/lib/fleet-checkpoint/run.lock", check=False)
            .returncode == 0] == []
    stats = output["global_custom_stats"]["fleet_checkpoint_host_reboot"]
    for host in fleet:
        rows = {row["container"]: row for row in stats[host]["containers"]}
        assert stats[host]["rebooted"] is True
        assert set(rows) == set(WORKLOADS)
        assert all(row["status"] == "restored" and row["resumed"] is True for row in rows.values()), rows
        assert all(row["size"] > 0 and row["dump_seconds"] is not None for row in rows.values()), rows

    # Nothing left to do: no reboot flag, every manifest settled.
    again = playbook_output(PLAYBOOKS / "host_reboot.yml", options=["--check"],
                            extra_vars={"fleet_checkpoint_hosts": ",".join(fleet)})
    assert set(changed_tasks(again).values()) == {0}, changed_tasks(again)
    restore = playbook_output(PLAYBOOKS / "restore.yml", extra_vars={"fleet_checkpoint_hosts": ",".join(fleet)})
    assert set(changed_tasks(restore).values()) == {0}, changed_tasks(restore)


PAIR_NET, PAIR_SUBNET = "fleet-pair-net", "172.31.243.0/24"


def pair_numbers(host, word):
    """What the pair printed (msgpair: `got:N` from the consumer, `sent:N` from the producer; `GAP:` lines)."""
    name = "pair-consumer" if word in ("got", "GAP") else "pair-producer"
    text = lab_exec(host, "docker", "logs", name, check=False).stdout
    return re.findall(rf"^{word}:(\S+)", text, re.M)


def start_pair(host):
    """A producer sending numbered messages over TCP to a consumer (fixed addresses, so that the connection comes
    back after a restore)."""
    sh(host, f"docker rm -f pair-consumer pair-producer >/dev/null 2>&1; docker network inspect {PAIR_NET} >/dev/null "
             f"2>&1 || docker network create --subnet {PAIR_SUBNET} {PAIR_NET} >/dev/null; true")
    lab_exec(host, "docker", "run", "-d", "--name", "pair-consumer", "--network", PAIR_NET, "--ip", "172.31.243.10",
             IMAGE, "msgpair", "consume", "9000")
    lab_exec(host, "docker", "run", "-d", "--name", "pair-producer", "--network", PAIR_NET, "--ip", "172.31.243.11",
             IMAGE, "msgpair", "produce", "172.31.243.10", "9000")
    wait_pair(host, 2000)


def wait_pair(host, beyond, seconds=20):
    deadline = time.monotonic() + seconds
    while not [n for n in pair_numbers(host, "got") if int(n) > beyond]:
        assert time.monotonic() < deadline, f"the pair on {host} does not get beyond {beyond}"
        time.sleep(0.3)


def test_host_reboot_all_hosts_at_once_each_host_one_group(fleet):
    """All hosts at once, each host's containers checkpointed as one group (checkpoint_consistent) and restored
    together after its reboot; on the first host a TCP pair among them loses no message."""
    start_pair(fleet[0])
    try:
        reboot_fleet(fleet, {"fleet_checkpoint_serial": "100%", "fleet_checkpoint_reboot": "always",
                             "checkpoint_consistent": True})
        for host in fleet:
            manifest = json.loads(lab_exec(host, "cat", "/var/lib/fleet-checkpoint/manifest.json").stdout)
            assert manifest["consistent"] is True and manifest["state"] == "restored", manifest
            assert all(item["status"] == "restored" and item.get("resumed") is True
                       for item in manifest["containers"]), manifest["containers"]
        wait_pair(fleet[0], max(int(n) for n in pair_numbers(fleet[0], "got")) + 20000)
        assert pair_numbers(fleet[0], "GAP") == []
    finally:
        sh(fleet[0], f"docker rm -f pair-consumer pair-producer >/dev/null 2>&1; docker network rm {PAIR_NET} "
                     ">/dev/null 2>&1; true")


def test_restore_falls_back_to_a_cold_start_and_says_so(fleet):
    host = fleet[0]
    start_workloads(host)
    ansible_playbook(PLAYBOOKS / "checkpoint.yml", extra_vars={"fleet_checkpoint_hosts": host,
                                                               "checkpoint_containers": ["plain", "always"]})
    manifest = run_module(host, "ansible.builtin.slurp", src="/var/lib/fleet-checkpoint/manifest.json")
    assert manifest.get("content"), manifest
    assert sh(host, "stat -c %a /var/lib/fleet-checkpoint/manifest.json").stdout.strip() == "600"
    # The checkpoint of "plain" disappears (a disk cleanup, say): its restore must fail, and it must still run after.
    lab_exec(host, "docker", "checkpoint", "rm", "plain",
             sh(host, "ls /var/lib/docker/containers/$(docker inspect -f {{.Id}} plain)/checkpoints").stdout.split()[0])
    rc, output = ansible_playbook(PLAYBOOKS / "restore.yml", check=False, extra_vars={"fleet_checkpoint_hosts": host})
    assert rc == 0
    assert lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}}", "plain").stdout.strip() == "true"
    assert lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}}", "always").stdout.strip() == "true"
    again = playbook_output(PLAYBOOKS / "restore.yml", extra_vars={"fleet_checkpoint_hosts": host})
    assert changed_tasks(again)[host] == 0
    summary = run_module(host, "fleet.checkpoint.docker_checkpoint", state="restored",
                         manifest_path="/var/lib/fleet-checkpoint/manifest.json")["summary"]
    status = {row["container"]: row["status"] for row in summary}
    assert status == {"plain": "cold_started", "always": "restored"}, summary
    assert policies(host)["always"] == "always:0"


BROKEN_CRIU = '#!/bin/sh\n[ "$1" = swrk ] && { echo "fleet-lab: restore broken on purpose" >&2; exit 1; }\nexec "$0.real" "$@"\n'


def restores_fail(host):
    """CRIU that passes every pre-flight (version, check, cpuinfo) but fails what runc asks of it (swrk: the
    restore): a target whose restore breaks after the container was created from the stream."""
    sh(host, f'criu=$(command -v criu) && mv "$criu" "$criu.real" && cat > "$criu" <<\'EOF\'\n{BROKEN_CRIU}EOF\n'
             'chmod 755 "$criu"')


def restores_work(host):
    sh(host, 'criu=$(command -v criu) && [ -e "$criu.real" ] && mv "$criu.real" "$criu"; true')


OLD_CRIU = ('#!/bin/sh\ncase "$1" in\n  --version) echo "Version: 4.0"; exit 0 ;;\n'
            '  cpuinfo) [ "$2" = check ] && { echo "Error (criu/cpu.c): cpu feature avx512f missing" >&2; exit 1; } ;;\n'
            'esac\nexec "$0.real" "$@"\n')


def test_migrate_preflight_names_every_problem_of_both_hosts_and_touches_nothing(fleet):
    """Eleven kinds of refusal, before anything stops: each named in one message, the containers untouched on the
    source, nothing made on the target, both run locks given back."""
    source, target = fleet[0], fleet[1]
    for host in (source, target):
        lab_exec(host, "docker", "rm", "-f", "pf-web", "pf-rm", "pf-port", check=False)
        lab_exec(host, "docker", "network", "rm", "pfnet", check=False)
        sh(host, "rm -rf /srv/pf-data")
    lab_exec(source, "docker", "network", "create", "--subnet", "172.31.244.0/24", "pfnet")
    sh(source, "mkdir -p /srv/pf-data")
    lab_exec(source, "docker", "run", "-d", "--name", "pf-web", "--network", "pfnet", "--ip", "172.31.244.10",
             "-p", "18093:8080", "-v", "/srv/pf-data:/data", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    lab_exec(source, "docker", "run", "-d", "--rm", "--name", "pf-rm", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    lab_exec(target, "docker", "create", "--name", "pf-web", IMAGE)  # the name is taken there
    lab_exec(target, "docker", "run", "-d", "--name", "pf-port", "-p", "18093:8080", IMAGE)  # and the port
    pids = {name: lab_exec(source, "docker", "inspect", "-f", "{{.State.Pid}}", name).stdout for name in
            ("pf-web", "pf-rm")}
    target_before = lab_exec(target, "docker", "ps", "-a", "--format", "{{.ID}} {{.Names}} {{.State}}").stdout
    criu = sh(target, "command -v criu").stdout.strip()

    def migrate(containers):
        rc, output = ansible_playbook(PLAYBOOKS / "migrate.yml", check=False, extra_vars={
            "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
            "fleet_checkpoint_migrate_containers": containers})
        assert rc != 0
        text = json.dumps(output)
        assert "cannot move from" in text and "nothing was changed" in text, text[-3000:]
        return text

    try:
        sh(target, f"chmod -x {criu}")  # no usable CRIU on the target
        first = migrate(["pf-web", "pf-rm"])
        sh(target, f"chmod +x {criu}")
        # A CRIU older than the source's (and than this kernel needs), on a CPU that lacks what the source's has.
        sh(target, f'mv {criu} {criu}.real && cat > {criu} <<\'EOF\'\n{OLD_CRIU}EOF\nchmod 755 {criu}')
        # The network there now, with pf-web's fixed address held by a running container.
        lab_exec(target, "docker", "network", "create", "--subnet", "172.31.244.0/24", "pfnet")
        lab_exec(target, "docker", "network", "connect", "--ip", "172.31.244.10", "pfnet", "pf-port")
        second = migrate(["pf-web", "ghost"])
    finally:
        restores_work(target)
        sh(target, f"chmod +x {criu}")
    for fragment in ("--rm", "a container named pf-web already exists on the target",
                     "18093/tcp, which is taken on the target", "network pfnet does not exist",
                     "bind mount source /srv/pf-data does not exist", "CRIU is not installed on the target"):
        assert fragment in first, (fragment, first[-3000:])
    for fragment in ("ghost", "older than the source's", "is too old", "cpu feature avx512f missing",
                     "address 172.31.244.10 on network pfnet is held by container pf-port"):
        assert fragment in second, (fragment, second[-3000:])
    assert {name: lab_exec(source, "docker", "inspect", "-f", "{{.State.Pid}}", name).stdout for name in
            ("pf-web", "pf-rm")} == pids, "a container on the source was touched"
    assert lab_exec(target, "docker", "ps", "-a", "--format", "{{.ID}} {{.Names}} {{.State}}").stdout == target_before
    for host in (source, target):
        assert sh(host, "test -e /var/lib/fleet-checkpoint/run.lock", check=False).returncode != 0, host
        lab_exec(host, "docker", "rm", "-f", "pf-web", "pf-rm", "pf-port", check=False)
        lab_exec(host, "docker", "network", "rm", "pfnet", check=False)
        sh(host, "rm -rf /srv/pf-data")


def test_migrate_preflight_refuses_a_target_kernel_older_than_the_sources(fleet):
    """The lab's hosts share one kernel: the source's plan is given a newer one, as a source host with a newer kernel
    would report it. The target's pre-flight names the difference, and lets it through when allowed."""
    source, target = fleet[0], fleet[1]
    lab_exec(source, "docker", "rm", "-f", "pf-kernel", check=False)
    lab_exec(source, "docker", "run", "-d", "--name", "pf-kernel", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    try:
        described = run_module(source, "fleet.checkpoint.docker_migration_preflight", side="source",
                               containers=["pf-kernel"])
        assert not described.get("failed"), described
        plan = dict(described["plan"], kernel="99.1.0-newer")
        refused = run_module(target, "fleet.checkpoint.docker_migration_preflight", side="target", plan=plan)
        release = sh(target, "uname -r").stdout.strip()
        assert refused.get("failed") and refused["problems"] == [next(
            problem for problem in refused["problems"] if problem.startswith(
                f"the target's kernel {release} is older than the source's 99.1.0-newer"))], refused
        allowed = run_module(target, "fleet.checkpoint.docker_migration_preflight", side="target", plan=plan,
                             allow_older_kernel=True)
        assert not allowed.get("failed") and allowed["problems"] == [], allowed
    finally:
        lab_exec(source, "docker", "rm", "-f", "pf-kernel", check=False)


def test_migrate_moves_a_running_container_with_its_count(fleet):
    source, target = fleet[0], fleet[1]
    lab_exec(target, "docker", "rm", "-f", "mover", check=False)
    lab_exec(source, "docker", "rm", "-f", "mover", check=False)
    lab_exec(source, "docker", "run", "-d", "--name", "mover", "--restart", "unless-stopped", "--label", "app=mover",
             "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    time.sleep(2)
    # With a Limit (as an AWX job's) naming the two hosts: the move's plays, its checks too, run within it.
    ansible_playbook(PLAYBOOKS / "migrate.yml", limit=f"{source},{target}", extra_vars={
        "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
        "fleet_checkpoint_migrate_containers": ["mover"]})
    last = counts(source, "mover")[-1]
    assert lab_exec(source, "docker", "inspect", "-f", "{{.State.Running}}", "mover").stdout.strip() == "false"
    deadline = time.monotonic() + 20
    while len(counts(target, "mover")) < 3:
        assert time.monotonic() < deadline, "the moved container does not count on the target"
        time.sleep(0.3)
    moved = counts(target, "mover")
    assert moved[0] == last + 1, f"the count on the target starts at {moved[0]}, it stopped at {last} on the source"
    assert policies_of(target, "mover") == "unless-stopped:0"
    assert lab_exec(target, "docker", "inspect", "-f", "{{index .Config.Labels \"app\"}}", "mover").stdout.strip() == "mover"
    assert sh(target, "test -e /var/lib/fleet-checkpoint/migrate", check=False).returncode != 0


def test_migrate_through_the_controller_streams_the_image_and_the_checkpoint(fleet):
    """Hosts that cannot reach each other: the controller relays the image the target lacks (docker save into docker
    load) and the checkpoint (from the dump into the restore waiting on the target), holding neither in memory nor on
    its disk."""
    source, target = fleet[1], fleet[2]
    for host in (source, target):
        lab_exec(host, "docker", "rm", "-f", "relayed", "relayed-base", check=False)
        lab_exec(host, "docker", "rmi", "-f", "fleet-lab-relayed:1", check=False)
    # An image only the source has (its own id): built from the workload image with a label.
    lab_exec(source, "docker", "create", "--name", "relayed-base", IMAGE)
    lab_exec(source, "docker", "commit", "--change", f"LABEL relayed={time.time()}", "relayed-base",
             "fleet-lab-relayed:1")
    lab_exec(source, "docker", "rm", "relayed-base")
    image_id = lab_exec(source, "docker", "image", "inspect", "-f", "{{.Id}}", "fleet-lab-relayed:1").stdout.strip()
    lab_exec(source, "docker", "run", "-d", "--name", "relayed", "-e", "COUNTER_INTERVAL=0.2", "fleet-lab-relayed:1",
             "memhog", "96")
    time.sleep(2)
    controller_dirs = set(glob.glob(os.path.join(tempfile.gettempdir(), "fleet-checkpoint-migrate-*")))
    output = playbook_output(PLAYBOOKS / "migrate.yml", extra_vars={
        "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
        "fleet_checkpoint_migrate_containers": ["relayed"]})
    tasks = {task["task"]["name"]: task["hosts"] for play in output["plays"] for task in play["tasks"]}
    image = tasks["Relay the images the target does not have through the controller (docker save into docker load)"][
        source]["results"]
    assert [row["item"] for row in image] == [image_id] and image[0]["bytes"] > 1024 * 1024, image
    assert image_id in image[0]["loaded"], image
    relayed = tasks["Relay each checkpoint from the source into the restore waiting on the target"][source]["results"]
    sent = tasks["Collect the checkpoints' result from the source"][source]["results"][0]
    received = tasks["Wait for the restore that received the stream"][target]["results"][0]
    assert sent["sent"]["bytes"] == received["received"]["bytes"] > 96 * 1024 * 1024
    # The relay moved the stream and the length said before it.
    assert relayed[0]["bytes"] == len(b"fleet-stream %d\n" % sent["sent"]["bytes"]) + sent["sent"]["bytes"]
    assert received["created"] is True and received["resumed"] is True
    # Flat memory on the controller: far below the 96 MiB that went through.
    assert all(value < 200 * 1024 * 1024 for value in relayed[0]["peak_rss"].values()), relayed[0]["peak_rss"]
    print(f"relay: {relayed[0]['bytes']} bytes in {relayed[0]['seconds']} s, peak RSS {relayed[0]['peak_rss']}")
    assert set(glob.glob(os.path.join(tempfile.gettempdir(), "fleet-checkpoint-migrate-*"))) == controller_dirs
    # The report (set_stats): the path, the image sent, the freeze of the container phase by phase.
    report = output["global_custom_stats"]["fleet_checkpoint_migrate"]
    assert report["path"] == "controller" and report["images_sent"] == [image_id]
    assert int(report["image_bytes_relayed"]) == image[0]["bytes"], report
    row = report["containers"][0]
    assert row["container"] == "relayed" and row["moved"] is True and row["stream_bytes"] == sent["sent"]["bytes"]
    assert 0 < row["dump_seconds"] < row["downtime_seconds"] and row["restore_seconds"] < row["downtime_seconds"]
    last = counts(source, "relayed")[-1]
    deadline = time.monotonic() + 20
    while len(counts(target, "relayed")) < 2:
        assert time.monotonic() < deadline, "the moved container does not count on the target"
        time.sleep(0.3)
    assert counts(target, "relayed")[0] == last + 1
    for host in (source, target):
        lab_exec(host, "docker", "rm", "-f", "relayed", check=False)
        lab_exec(host, "docker", "rmi", "-f", "fleet-lab-relayed:1", check=False)


class PeakRss:
    """The largest resident set of each command on the given lab hosts, sampled every 0.3 s while it runs. Read from
    this machine's /proc (a lab host's processes, those of its own containers included, descend from its init):
    `docker exec ... ps` six times a second cost the suite a good part of a core."""

    def __init__(self, hosts):
        self.hosts, self.peak, self.stop = hosts, {}, threading.Event()
        self.inits = {int(run(["docker", "inspect", "-f", "{{.State.Pid}}", host]).stdout): host for host in hosts}
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while not self.stop.is_set():
            parents = {}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
                        parents[int(pid)] = int(handle.read().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    continue  # gone meanwhile
            for pid in parents:
                ancestor, steps = pid, 0
                while ancestor not in self.inits and ancestor > 1 and steps < 64:
                    ancestor, steps = parents.get(ancestor, 0), steps + 1
                if ancestor not in self.inits:
                    continue
                try:
                    with open(f"/proc/{pid}/status", encoding="utf-8", errors="replace") as handle:
                        status = dict(line.split(":", 1) for line in handle if ":" in line)
                except OSError:
                    continue
                key = (self.inits[ancestor], status.get("Name", "").strip())
                rss = int((status.get("VmRSS") or "0 kB").split()[0]) * 1024
                self.peak[key] = max(self.peak.get(key, 0), rss)
            time.sleep(0.3)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(30)


BIG = 512 << 20  # (1 GiB each was shown too - issue 16's figures in docs/awx.md; half keeps the suite's time)


def test_half_a_gib_image_and_of_memory_through_the_controller_keep_memory_flat(fleet):
    """512 MiB of image, 512 MiB of volume data and a 512 MiB checkpoint relayed by the controller: no process of
    ours, on the controller or on either host, grows with them (each stays under 200 MB, well under any one of
    them)."""
    source, target = fleet[0], fleet[2]
    for host in (source, target):
        lab_exec(host, "docker", "rm", "-f", "big", "big-base", check=False)
        lab_exec(host, "docker", "rmi", "-f", "fleet-lab-big:1", check=False)
        lab_exec(host, "docker", "volume", "rm", "-f", "big-data", check=False)
    lab_exec(source, "docker", "run", "--name", "big-base", IMAGE, "sh", "-c",
             f"head -c {BIG} /dev/urandom > /big.bin")
    lab_exec(source, "docker", "commit", "big-base", "fleet-lab-big:1")
    lab_exec(source, "docker", "rm", "big-base")
    lab_exec(source, "docker", "run", "--rm", "-v", "big-data:/data", IMAGE, "sh", "-c",
             f"head -c {BIG} /dev/urandom > /data/blob")
    lab_exec(source, "docker", "run", "-d", "--name", "big", "-e", "COUNTER_INTERVAL=0.2", "-v", "big-data:/data",
             "fleet-lab-big:1", "memhog", str(BIG >> 20))
    time.sleep(5)  # memhog fills its memory first
    try:
        with PeakRss([source, target]) as hosts:
            output = playbook_output(PLAYBOOKS / "migrate.yml", extra_vars={
                "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
                "fleet_checkpoint_migrate_containers": ["big"]})
        tasks = {task["task"]["name"]: task["hosts"] for play in output["plays"] for task in play["tasks"]}
        image = tasks["Relay the images the target does not have through the controller (docker save into docker "
                      "load)"][source]["results"][0]
        stream = tasks["Relay each checkpoint from the source into the restore waiting on the target"][source][
            "results"][0]
        sent = tasks["Collect the checkpoints' result from the source"][source]["results"][0]["sent"]
        # The volume's data went ahead of the freeze, the checkpoint during it: both through the same relay.
        assert sent["disk"]["precopy"]["bytes"] > BIG and sent["bytes"] > BIG, sent
        assert image["bytes"] > BIG and stream["bytes"] > 2 * BIG, (image["bytes"], stream["bytes"])
        ours = {key: rss for key, rss in hosts.peak.items()
                if key[1] in ("python3", "ssh", "sshd", "sshd-session", "docker", "dockerd", "containerd",
                              "containerd-shim", "runc", "criu", "zstd", "sudo", "sh")}
        table = [("controller", "relay (Ansible worker)", image["peak_rss"]["relay"]),
                 ("controller", "ssh clients (largest)", max(image["peak_rss"]["ssh"], stream["peak_rss"]["ssh"]))]
        table += [(host, comm, rss) for (host, comm), rss in sorted(ours.items())]
        print(f"\npeak RSS, {BIG >> 20} MiB each of image, volume data and checkpoint through the controller")
        for where, what, rss in table:
            print(f"  {where:22} {what:24} {rss / 1e6:8.1f} MB")
        # On the target, the process named criu while it restores is the workload taking shape (CRIU's restorer
        # becomes it, with its memory): it is the container's own memory, not a copy of ours. criu dump on the source
        # is CRIU's own.
        too_big = [(where, what, rss) for where, what, rss in table
                   if rss >= 200e6 and (where, what) != (target, "criu")]
        assert not too_big, too_big
        assert [name for (host, name) in hosts.peak if host == target and name == "memhog"], "never ran on target"
    finally:
        for host in (source, target):
            lab_exec(host, "docker", "rm", "-f", "big", check=False)
            lab_exec(host, "docker", "rmi", "-f", "fleet-lab-big:1", check=False)
            lab_exec(host, "docker", "volume", "rm", "-f", "big-data", check=False)


@pytest.mark.fault(8, "migration target unreachable or out of disk mid-transfer")
def test_migrate_to_a_host_that_cannot_restore_leaves_it_running_on_the_source(fleet):
    source, target = fleet[2], fleet[1]
    lab_exec(target, "docker", "rm", "-f", "stayer", check=False)
    lab_exec(source, "docker", "rm", "-f", "stayer", check=False)
    lab_exec(source, "docker", "run", "-d", "--name", "stayer", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    time.sleep(2)
    restores_fail(target)  # CRIU answers the pre-flight on the target, then fails the restore
    try:
        rc = playbook_rc(PLAYBOOKS / "migrate.yml", check=False, extra_vars={
            "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
            "fleet_checkpoint_migrate_containers": ["stayer"]})
    finally:
        restores_work(target)
    assert rc != 0, "a migration that did not happen must fail the run"
    assert lab_exec(source, "docker", "inspect", "-f", "{{.State.Running}}", "stayer").stdout.strip() == "true"
    numbers = counts(source, "stayer")
    assert all(b == a + 1 for a, b in zip(numbers, numbers[1:])), "the count on the source broke"
    assert lab_exec(target, "docker", "inspect", "stayer", check=False).returncode != 0, "left a container on the target"


def policies_of(host, name):
    return lab_exec(host, "docker", "inspect", "-f",
                    "{{.HostConfig.RestartPolicy.Name}}:{{.HostConfig.RestartPolicy.MaximumRetryCount}}",
                    name).stdout.strip()


def test_migrate_straight_from_host_to_host_over_ssh(fleet):
    """When the source can SSH to the target by itself, the checkpoint goes there directly (scp), not via the
    controller; the far side must present the target's SSH host key."""
    source, target = fleet[1], fleet[0]
    address = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", target]
                  ).stdout.strip()
    key = "/var/lib/fleet-lab/ssh/id_ed25519"
    run(["docker", "cp", key, f"{source}:/root/.ssh/id_ed25519"])
    sh(source, "chmod 600 /root/.ssh/id_ed25519")
    lab_exec(target, "docker", "rm", "-f", "direct", check=False)
    lab_exec(source, "docker", "rm", "-f", "direct", check=False)
    lab_exec(source, "docker", "run", "-d", "--name", "direct", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    time.sleep(2)
    try:
        output = playbook_output(PLAYBOOKS / "migrate.yml", extra_vars={
            "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
            "fleet_checkpoint_migrate_containers": ["direct"], "fleet_checkpoint_migrate_transfer": "direct",
            "fleet_checkpoint_migrate_target_address": address})
    finally:
        sh(source, "rm -f /root/.ssh/id_ed25519 /root/.ssh/known_hosts")
    tasks = {task["task"]["name"]: task["hosts"] for play in output["plays"] for task in play["tasks"]}
    # The target has the image already (same id): it is not sent again.
    assert [r["rc"] for r in tasks["See which images the target has already (by id; those are not sent)"][source][
        "results"]] == [0]
    assert tasks["Copy the images straight to the target (scp over SSH)"][source].get("skipped") is True
    assert tasks["Relay each checkpoint from the source into the restore waiting on the target"][source].get(
        "skipped") is True
    # Streamed: the checkpoint went from the dump straight into the restore waiting on the target.
    sent = tasks["Checkpoint the containers (they stop) and stream them into the waiting restore (direct path)"][
        source]["results"][0]
    received = tasks["Wait for the restore that received the stream"][target]["results"][0]
    assert sent["sent"]["bytes"] == received["received"]["bytes"] > 0, (sent, received)
    assert received["created"] is True and received["resumed"] is True
    assert sent["dump_started_at"] < received["received"]["finished_at"] < received["resumed_at"]
    assert sh(target, "ls /var/lib/docker/containers/*/checkpoints/*/pages-*.img | xargs stat -c %a | sort -u"
              ).stdout.split() == ["600"]
    last = counts(source, "direct")[-1]
    deadline = time.monotonic() + 20
    while len(counts(target, "direct")) < 2:
        assert time.monotonic() < deadline, "the moved container does not count on the target"
        time.sleep(0.3)
    assert counts(target, "direct")[0] == last + 1


def test_a_host_that_fails_preflight_stops_the_reboot_before_anything_is_touched(fleet):
    host = fleet[2]
    start_workloads(host)
    lab_exec(host, "docker", "run", "-d", "--rm", "--name", "ephemeral", IMAGE)
    pids = {name: lab_exec(host, "docker", "inspect", "-f", "{{.State.Pid}}", name).stdout for name in WORKLOADS}
    booted = {each: boot_time(each) for each in fleet}
    try:
        rc, output = ansible_playbook(PLAYBOOKS / "host_reboot.yml", check=False, extra_vars={
            "fleet_checkpoint_hosts": ",".join(fleet), "fleet_checkpoint_reboot": "always"})
    finally:
        lab_exec(host, "docker", "rm", "-f", "ephemeral", check=False)
    assert rc != 0
    assert "--rm" in json.dumps(output)
    # No host rebooted, and every host's run lock (taken by the pre-flight) given back.
    assert {each: boot_time(each) for each in fleet} == booted
    assert [each for each in fleet if sh(each, "test -e /var/lib/fleet-checkpoint/run.lock", check=False)
            .returncode == 0] == []
    assert {name: lab_exec(host, "docker", "inspect", "-f", "{{.State.Pid}}", name).stdout
            for name in WORKLOADS} == pids


@pytest.mark.fault(1, "CRIU cannot dump one of the containers")
def test_a_dump_failing_midway_brings_the_stopped_containers_back(fleet):
    """CRIU refuses one container (established TCP connection without tcp-established): the others, already
    stopped by their dump, are restored at once, and the run fails saying so."""
    host = fleet[1]
    sh(host, "docker rm -f $(docker ps -aq) >/dev/null 2>&1; rm -f /var/lib/fleet-checkpoint/manifest.json; true")
    lab_exec(host, "docker", "run", "-d", "--name", "tcp-server", IMAGE, "sh", "-c", "mkdir -p /www && exec httpd -f -p 8080 -h /www")
    server = lab_exec(host, "docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", "tcp-server").stdout.strip()
    lab_exec(host, "docker", "run", "-d", "--name", "tcp-client", "-e", "COUNTER_INTERVAL=0.2", IMAGE,
             "sh", "-c", f"sleep 100000 | nc {server} 8080 & exec counter")
    lab_exec(host, "docker", "run", "-d", "--name", "plain", "-e", "COUNTER_INTERVAL=0.2", "--restart", "always", IMAGE)
    time.sleep(2)
    sh(host, "cp /etc/criu/runc.conf /etc/criu/runc.conf.keep && sed -i '/^tcp-established/d' /etc/criu/runc.conf")
    try:
        rc, output = ansible_playbook(PLAYBOOKS / "checkpoint.yml", check=False, extra_vars={
            "fleet_checkpoint_hosts": host, "checkpoint_containers": ["plain", "tcp-client"]})
    finally:
        sh(host, "mv /etc/criu/runc.conf.keep /etc/criu/runc.conf")
    assert rc != 0
    text = json.dumps(output)
    assert "the checkpoint failed" in text and "plain restored" in text, text[-3000:]
    for name in ("plain", "tcp-client", "tcp-server"):
        assert lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}}", name).stdout.strip() == "true", name
    numbers = counts(host, "plain")
    assert all(b == a + 1 for a, b in zip(numbers, numbers[1:])), "plain was not restored where it stopped"
    assert policies_of(host, "plain") == "always:0"
    summary = run_module(host, "fleet.checkpoint.docker_checkpoint", state="restored",
                         manifest_path="/var/lib/fleet-checkpoint/manifest.json")
    assert not summary.get("changed") and {row["container"]: row["status"] for row in summary["summary"]} == {
        "plain": "restored", "tcp-client": "kept_running"}, summary
    sh(host, "docker rm -f tcp-server tcp-client plain >/dev/null 2>&1; rm -f /var/lib/fleet-checkpoint/manifest.json")


def test_a_stream_to_a_host_where_no_restore_waits_touches_nothing(fleet):
    """send_to connects first and needs the target's restore waiting: when none waits, the container is not even
    checkpointed; a restore that waits in vain ends after receive_timeout with nothing created."""
    source, target = fleet[1], fleet[0]
    address = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", target]
                  ).stdout.strip()
    run(["docker", "cp", "/var/lib/fleet-lab/ssh/id_ed25519", f"{source}:/root/.ssh/id_ed25519"])
    sh(source, f"chmod 600 /root/.ssh/id_ed25519 && ssh-keyscan -t ed25519 {address} > /root/lab-known-hosts")
    lab_exec(source, "docker", "rm", "-f", "lonely", check=False)
    lab_exec(target, "docker", "rm", "-f", "lonely", check=False)
    lab_exec(source, "docker", "run", "-d", "--name", "lonely", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    time.sleep(1)
    try:
        sent = run_module(source, "fleet.checkpoint.docker_checkpoint", container="lonely", name="nobody",
                          send_to={"host": address, "directory": "/var/lib/fleet-checkpoint/nowhere",
                                   "known_hosts_file": "/root/lab-known-hosts"})
    finally:
        sh(source, "rm -f /root/.ssh/id_ed25519 /root/lab-known-hosts")
    assert sent.get("failed") is True
    assert "is not ready to receive" in sent["msg"] and "nothing was checkpointed" in sent["msg"], sent["msg"]
    assert "nothing is receiving" in sent["msg"], sent["msg"]
    assert lab_exec(source, "docker", "inspect", "-f", "{{.State.Running}}", "lonely").stdout.strip() == "true"
    assert lab_exec(source, "docker", "checkpoint", "ls", "lonely").stdout.strip().splitlines()[1:] == []
    waited = run_module(target, "fleet.checkpoint.docker_checkpoint", container="lonely", name="nobody",
                        state="restored", archive_dir="/var/lib/fleet-checkpoint/nowhere", receive_timeout=2,
                        create=True)
    assert waited.get("failed") is True and "nothing arrived" in waited["msg"], waited["msg"]
    assert lab_exec(target, "docker", "inspect", "lonely", check=False).returncode != 0, "created a container"
    # The directory the wait made for its FIFO goes with it: nothing is left on the target.
    assert sh(target, "test -e /var/lib/fleet-checkpoint/nowhere", check=False).returncode != 0
    lab_exec(source, "docker", "rm", "-f", "lonely", check=False)


def test_a_stream_reaches_a_target_whose_login_prints_a_banner_with_ready(fleet):
    """Issue 20, finding 6: the target's login prints a banner that reaches the sender in the same read as the
    waiting restore's "ready" (root's .bashrc on the target echoes it into a pipe that is read a second later). The
    sender used to read "ready" into a buffer that select() does not see, and gave up after its timeout."""
    source, target = fleet[1], fleet[0]
    address = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", target]
                  ).stdout.strip()
    run(["docker", "cp", "/var/lib/fleet-lab/ssh/id_ed25519", f"{source}:/root/.ssh/id_ed25519"])
    sh(source, f"chmod 600 /root/.ssh/id_ed25519 && ssh-keyscan -t ed25519 {address} > /root/lab-known-hosts")
    # Only for logins from the source (Ansible's own, from the controller, must still read its modules' answers).
    origin = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", source]
                 ).stdout.strip()
    sh(target, "cp -p /root/.bashrc /root/.bashrc.keep && printf '%s\\n' "
               f"'case $SSH_CLIENT in \"{origin} \"*) exec > >(sleep 1; exec cat); echo Welcome to the lab;; esac' "
               ">> /root/.bashrc")
    for host in (source, target):
        lab_exec(host, "docker", "rm", "-f", "bannered", check=False)
    lab_exec(source, "docker", "run", "-d", "--name", "bannered", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    time.sleep(2)
    received = {}
    waiting = threading.Thread(target=lambda: received.update(run_module(
        target, "fleet.checkpoint.docker_checkpoint", container="bannered", name="banner", state="restored",
        archive_dir="/var/lib/fleet-checkpoint/banner", receive_timeout=60, create=True)))
    waiting.start()
    try:
        # The login really does print the banner with "ready" in one piece (what the sender must cope with).
        assert sh(source, f"ssh -o UserKnownHostsFile=/root/lab-known-hosts {address} 'echo ready'"
                  ).stdout == "Welcome to the lab\nready\n", "the banner is not there"
        sent = run_module(source, "fleet.checkpoint.docker_checkpoint", container="bannered", name="banner",
                          timeout=60, send_to={"host": address, "directory": "/var/lib/fleet-checkpoint/banner",
                                               "known_hosts_file": "/root/lab-known-hosts"})
    finally:
        waiting.join(90)
        sh(target, "mv /root/.bashrc.keep /root/.bashrc")
        sh(source, "rm -f /root/.ssh/id_ed25519 /root/lab-known-hosts")
    assert not sent.get("failed"), sent.get("msg")
    assert not received.get("failed"), received.get("msg")
    last = counts(source, "bannered")[-1]
    deadline = time.monotonic() + 20
    while len(counts(target, "bannered")) < 2:
        assert time.monotonic() < deadline, "the streamed container does not count on the target"
        time.sleep(0.3)
    assert counts(target, "bannered")[0] == last + 1
    for host in (source, target):
        lab_exec(host, "docker", "rm", "-f", "bannered", check=False)


@pytest.mark.fault(8, "migration target unreachable or out of disk mid-transfer")
def test_a_streamed_migration_whose_target_cannot_restore_leaves_it_running_on_the_source(fleet):
    """The direct path: the target's waiting restore receives the stream, creates the container and fails to restore
    it (CRIU unusable there); the container runs on the source again and nothing is left on the target."""
    source, target = fleet[1], fleet[0]
    address = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", target]
                  ).stdout.strip()
    run(["docker", "cp", "/var/lib/fleet-lab/ssh/id_ed25519", f"{source}:/root/.ssh/id_ed25519"])
    sh(source, "chmod 600 /root/.ssh/id_ed25519")
    lab_exec(target, "docker", "rm", "-f", "streamer", check=False)
    lab_exec(source, "docker", "rm", "-f", "streamer", check=False)
    lab_exec(source, "docker", "run", "-d", "--name", "streamer", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    time.sleep(2)
    restores_fail(target)
    try:
        rc = playbook_rc(PLAYBOOKS / "migrate.yml", check=False, extra_vars={
            "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
            "fleet_checkpoint_migrate_containers": ["streamer"], "fleet_checkpoint_migrate_transfer": "direct",
            "fleet_checkpoint_migrate_target_address": address})
    finally:
        restores_work(target)
        sh(source, "rm -f /root/.ssh/id_ed25519")
    assert rc != 0, "a migration that did not happen must fail the run"
    assert lab_exec(source, "docker", "inspect", "-f", "{{.State.Running}}", "streamer").stdout.strip() == "true"
    time.sleep(1)
    numbers = counts(source, "streamer")
    assert all(b == a + 1 for a, b in zip(numbers, numbers[1:])), "the count on the source broke"
    assert lab_exec(target, "docker", "inspect", "streamer", check=False).returncode != 0, "left a container on the target"
    assert sh(target, "test -e /var/lib/fleet-checkpoint/migrate", check=False).returncode != 0
    lab_exec(source, "docker", "rm", "-f", "streamer", check=False)
