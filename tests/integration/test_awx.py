"""What AWX needs: an execution environment definition that ansible-builder accepts, host_reboot run through
ansible-runner (the engine AWX uses) as the jobs of a sliced job template, and migrate inside an EE."""

import json
import shutil
import subprocess
import time

import yaml

from conftest import INVENTORY, ROOT, counts, lab_exec, run

IMAGE = "fleet-lab-workload:busybox"


def test_execution_environment_builds_a_valid_context(tmp_path):
    context = tmp_path / "context"
    builder = str(ROOT / ".venv" / "bin" / "ansible-builder")
    run([builder, "create", "-f", str(ROOT / "execution-environment.yml"), "-c", str(context)])
    containerfile = (context / "Dockerfile").read_text()
    assert 'ARG EE_BASE_IMAGE="quay.io/centos/centos:stream9"' in containerfile and "FROM $EE_BASE_IMAGE" in containerfile
    requirements = yaml.safe_load((context / "_build" / "requirements.yml").read_text())
    assert {"name": "fleet.checkpoint", "version": ">=0.1.0"} in requirements["collections"]
    assert "zstd" in (context / "_build" / "bindep.txt").read_text().split()
    # The collection's own declaration, as ansible-builder reads it when the collection is installed in an EE.
    collections = tmp_path / "collections" / "ansible_collections" / "fleet"
    collections.mkdir(parents=True)
    shutil.copytree(ROOT / ".build" / "ansible_collections" / "fleet" / "checkpoint", collections / "checkpoint",
                    ignore=shutil.ignore_patterns("tests", ".git"))
    introspected = yaml.safe_load(run([builder, "introspect", str(tmp_path / "collections")]).stdout)
    assert any("zstd" in line for line in introspected["system"]), introspected


def slice_dir(tmp_path, name, hosts):
    """An ansible-runner private data dir whose inventory holds `hosts` only: what AWX gives each job of a sliced
    job template (its share of the inventory)."""
    lab = yaml.safe_load(INVENTORY.read_text())["all"]
    found = {}

    def walk(group):
        found.update(group.get("hosts") or {})
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(lab)
    private = tmp_path / name
    (private / "inventory").mkdir(parents=True)
    (private / "inventory" / "hosts.yml").write_text(yaml.safe_dump(
        {"all": {"vars": lab.get("vars") or {}, "hosts": {host: found[host] for host in hosts}}}))
    return private


def start_slice(private, run_id, playbook="host_reboot", **extra):
    """host_reboot (or `playbook`) over the slice's hosts, as AWX sends a job template's extra vars (nothing
    prompted): an ansible-runner process of its own, started at once."""
    (private / "env").mkdir(exist_ok=True)
    (private / "env" / "extravars").write_text(json.dumps({
        "fleet_checkpoint_reboot": "always", "fleet_checkpoint_serial": "100%", "fleet_checkpoint_run_id": run_id,
        "restore_fallback": "cold_start", **extra}))
    (private / "env" / "envvars").write_text(json.dumps({"ANSIBLE_HOST_KEY_CHECKING": "False"}))
    return private, subprocess.Popen([str(ROOT / ".venv" / "bin" / "ansible-runner"), "run", str(private), "-p",
                                      f"fleet.checkpoint.{playbook}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)


def ended(started, key="fleet_checkpoint_host_reboot"):
    """(status, the slice's set_stats summary {host: outcome} under `key`, the hosts its Reboot task ran on) once it
    ended."""
    private, proc = started
    unused, err = proc.communicate(timeout=960)
    (job,) = (private / "artifacts").iterdir()
    events = [json.loads(path.read_text()) for path in sorted((job / "job_events").glob("*.json"),
                                                              key=lambda path: int(path.name.split("-")[0]))]
    stats = [event for event in events if event["event"] == "playbook_on_stats"]
    assert stats, f"rc={proc.returncode} {err[-2000:]}" + "".join(event.get("stdout", "") + "\n"
                                                                  for event in events)[-4000:]
    rebooted = {event["event_data"]["host"] for event in events if event["event"] == "runner_on_ok"
                and event["event_data"].get("task") == "Reboot"}
    status = (job / "status").read_text().strip()
    return status, stats[0]["event_data"]["artifact_data"][key], rebooted


def boot(host):
    return lab_exec(host, "systemctl", "show", "-p", "UserspaceTimestamp", "--value").stdout


def test_two_slices_of_a_sliced_job_at_once_share_the_fleet_and_never_a_host(fleet, tmp_path):
    """Two jobs of a sliced AWX job template - host_reboot through ansible-runner (the engine AWX uses), each over its
    own inventory, at the same time. Over disjoint halves both succeed, each summary complete for its hosts, every
    container restored. Over overlapping halves, the second (started once the first holds the shared host, with
    fleet_checkpoint_preflight_strict=false) is refused on that host, naming the run that holds it, and goes on with
    its other host: the shared host is rebooted once, by the first, and its summary entry in the second says why."""
    a, b, c = fleet
    for host in fleet:
        lab_exec(host, "docker", "rm", "-f", "awx-counter", check=False)
        lab_exec(host, "docker", "run", "-d", "--name", "awx-counter", "--restart", "unless-stopped",
                 "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    time.sleep(2)
    booted = {host: boot(host) for host in fleet}
    first, second = start_slice(slice_dir(tmp_path, "s1", [a]), "slice-1"), \
        start_slice(slice_dir(tmp_path, "s2", [b, c]), "slice-2")
    for (status, summary, rebooted), hosts in ((ended(first), [a]), (ended(second), [b, c])):
        assert status == "successful" and sorted(summary) == hosts and rebooted == set(hosts), (status, summary)
        for host in hosts:
            (row,) = [row for row in summary[host]["containers"] if row["container"] == "awx-counter"]
            assert summary[host]["rebooted"] and row["status"] == "restored" and row["resumed"], summary[host]
    assert all(boot(host) != booted[host] for host in fleet)
    assert {lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}} {{.HostConfig.RestartPolicy.Name}}",
                     "awx-counter").stdout.strip() for host in fleet} == {"true unless-stopped"}

    booted = {host: boot(host) for host in fleet}
    first = start_slice(slice_dir(tmp_path, "o1", [a, b]), "overlap-1")
    deadline = time.monotonic() + 120
    while "overlap-1" not in lab_exec(b, "cat", "/var/lib/fleet-checkpoint/run.lock", check=False).stdout:
        assert time.monotonic() < deadline, "the first slice did not take the shared host"
        time.sleep(0.2)
    second = start_slice(slice_dir(tmp_path, "o2", [b, c]), "overlap-2", fleet_checkpoint_preflight_strict=False)
    (status1, summary1, rebooted1), (status2, summary2, rebooted2) = ended(first), ended(second)
    assert status1 == "successful" and rebooted1 == {a, b} and sorted(summary1) == [a, b], summary1
    assert status2 == "failed" and rebooted2 == {c} and sorted(summary2) == [b, c], summary2
    assert summary2[b]["rebooted"] is False and "in use by run 'overlap-1'" in summary2[b]["error"], summary2[b]
    assert summary2[c]["rebooted"] and not summary2[c]["error"], summary2[c]
    assert all(boot(host) != booted[host] for host in fleet)
    for host in fleet:
        assert lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}}", "awx-counter").stdout.strip() == "true"
        numbers = counts(host, "awx-counter")
        assert all(after == before + 1 for before, after in zip(numbers, numbers[1:])), f"{host}: a gap or a restart"


def test_slices_of_checkpoint_then_restore_each_publish_their_own_hosts(fleet, tmp_path):
    """checkpoint.yml, then restore.yml, each as two jobs of a sliced job template at once over disjoint shares: every
    slice successful, its set_stats summary listing exactly its hosts; the counters stopped by the checkpoint go on
    after the restore without a gap."""
    a, b, c = fleet
    for host in fleet:
        lab_exec(host, "docker", "rm", "-f", "awx-counter", check=False)
        lab_exec(host, "docker", "run", "-d", "--name", "awx-counter", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    time.sleep(2)
    shares = ([a], [b, c])
    for playbook in ("checkpoint", "restore"):
        started = [start_slice(slice_dir(tmp_path, f"{playbook}-{number}", share), f"{playbook}-{number}", playbook,
                               checkpoint_containers=["awx-counter"]) for number, share in enumerate(shares)]
        for run, share in zip(started, shares):
            status, summary, unused = ended(run, f"fleet_checkpoint_{playbook}")
            assert status == "successful" and sorted(summary) == share, (status, summary)
            for host in share:
                assert not summary[host]["error"] and summary[host]["checkpoint"], summary[host]
                assert [(row["container"], row["changed"], row["failed"]) for row in summary[host]["containers"]] == \
                    [("awx-counter", True, False)], summary[host]
        running = {lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}}", "awx-counter").stdout.strip()
                   for host in fleet}
        assert running == ({"false"} if playbook == "checkpoint" else {"true"}), (playbook, running)
    time.sleep(1)
    for host in fleet:
        numbers = counts(host, "awx-counter")
        assert all(after == before + 1 for before, after in zip(numbers, numbers[1:])), f"{host}: a gap or a restart"
        lab_exec(host, "docker", "rm", "-f", "awx-counter")


def test_migrate_through_the_controller_inside_an_execution_environment(fleet, tmp_path):
    """The controller path as AWX runs it: ansible-runner inside an execution-environment container (uid 1000, no
    SSH configuration of its own), the machine credential handed over as ansible-runner's ssh_key (loaded into an
    ssh-agent), the relay's ssh clients running in the container. The container moves with its volume's data."""
    source, target = fleet[0], fleet[1]
    run([str(ROOT / "tests" / "lab" / "build-ee.sh")])
    for host in (source, target):
        lab_exec(host, "docker", "rm", "-f", "ee-mover", check=False)
        lab_exec(host, "docker", "volume", "rm", "-f", "ee-data", check=False)
    lab_exec(source, "docker", "run", "--rm", "-v", "ee-data:/data", IMAGE, "sh", "-c",
             "head -c 16777216 /dev/urandom > /data/blob")
    lab_exec(source, "docker", "run", "-d", "--name", "ee-mover", "-v", "ee-data:/data", "-e", "COUNTER_INTERVAL=0.2",
             IMAGE)
    time.sleep(2)
    inventory = yaml.safe_load(INVENTORY.read_text())
    key = inventory["all"]["vars"].pop("ansible_ssh_private_key_file")  # AWX gives the key through ssh-agent
    for name in ("inventory", "env"):
        (tmp_path / name).mkdir()
    (tmp_path / "inventory" / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "env" / "ssh_key").write_text(open(key, encoding="ascii").read())
    (tmp_path / "env" / "envvars").write_text(json.dumps({"ANSIBLE_HOST_KEY_CHECKING": "False"}))
    (tmp_path / "env" / "extravars").write_text(json.dumps({
        "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
        "fleet_checkpoint_migrate_containers": ["ee-mover"], "fleet_checkpoint_migrate_transfer": "controller"}))
    run(["chown", "-R", "1000:1000", str(tmp_path)])
    try:
        proc = run(["docker", "run", "--rm", "--network", "host", "-v", f"{tmp_path}:/runner",
                    "-v", f"{ROOT / '.build'}:/usr/share/ansible/collections:ro", "fleet-lab-ee:trixie",
                    "ansible-runner", "run", "/runner", "-p", "fleet.checkpoint.migrate"], check=False, timeout=900)
        events = [json.loads(path.read_text()) for path in sorted((tmp_path / "artifacts").glob("*/job_events/*.json"))]
        stdout = "".join(event.get("stdout", "") + "\n" for event in events)
        assert proc.returncode == 0, f"rc={proc.returncode}\n{proc.stderr[-2000:]}\n{stdout[-6000:]}"
        relayed = [event["event_data"]["res"] for event in events  # each relay: one per checkpoint (a loop item)
                   if event.get("event") in ("runner_on_ok", "runner_item_on_ok")
                   and event["event_data"].get("task_action") == "fleet.checkpoint.stream_relay"
                   and "peak_rss" in event["event_data"].get("res", {})]
        assert relayed and all(value < 200 * 1024 * 1024 for res in relayed for value in res["peak_rss"].values()), \
            relayed
        print(f"inside the EE: relay {relayed[-1]['bytes']} bytes in {relayed[-1]['seconds']} s, peak RSS "
              f"{relayed[-1]['peak_rss']}")
        last = counts(source, "ee-mover")[-1]
        deadline = time.monotonic() + 20
        while len(counts(target, "ee-mover")) < 2:
            assert time.monotonic() < deadline, "the moved container does not count on the target"
            time.sleep(0.3)
        assert counts(target, "ee-mover")[0] == last + 1
        digest = "sha256sum /var/lib/docker/volumes/ee-data/_data/blob"
        assert lab_exec(target, "sh", "-c", digest).stdout.split()[0] == \
            lab_exec(source, "sh", "-c", digest).stdout.split()[0]
    finally:
        for host in (source, target):
            lab_exec(host, "docker", "rm", "-f", "ee-mover", check=False)
            lab_exec(host, "docker", "volume", "rm", "-f", "ee-data", check=False)
