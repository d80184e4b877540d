"""What AWX needs: an execution environment definition that ansible-builder accepts, and host_reboot run through
ansible-runner (the engine AWX uses) with AWX-style extra vars and an SSH inventory."""

import json
import shutil
import time

import ansible_runner
import pytest
import yaml

from conftest import INVENTORY, ROOT, counts, lab_exec, ready, run

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


@pytest.fixture
def ready_host(trixie_hosts):
    """A host prepared by the install playbook, shared (conftest.ready). The first one: test_docker_checkpoint, often
    just before, leaves live-restore on on the second (which would have to be prepared again)."""
    return ready([trixie_hosts[0]])[0]


def test_host_reboot_through_ansible_runner(ready_host, tmp_path):
    host = ready_host
    lab_exec(host, "docker", "rm", "-f", "awx-counter", check=False)
    lab_exec(host, "docker", "run", "-d", "--name", "awx-counter", "--restart", "unless-stopped",
             "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    time.sleep(2)
    booted = lab_exec(host, "systemctl", "show", "-p", "UserspaceTimestamp", "--value").stdout
    (tmp_path / "inventory").mkdir()
    shutil.copy(INVENTORY, tmp_path / "inventory" / "hosts.yml")
    # As an AWX job template sends them: extra vars only, nothing prompted.
    extravars = {"fleet_checkpoint_hosts": host, "fleet_checkpoint_reboot": "always", "fleet_checkpoint_serial": 1,
                 "restore_fallback": "cold_start"}
    result = ansible_runner.run(
        private_data_dir=str(tmp_path), playbook="fleet.checkpoint.host_reboot", extravars=extravars,
        envvars={"ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_SHOW_CUSTOM_STATS": "1"},
        quiet=True, timeout=900,
    )
    assert result.status == "successful", f"rc={result.rc}\n" + "".join(
        event.get("stdout", "") + "\n" for event in result.events)[-6000:]
    events = list(result.events)
    stats = [event for event in events if event["event"] == "playbook_on_stats"]
    assert stats and stats[0]["event_data"]["failures"] == {}
    summary = stats[0]["event_data"]["artifact_data"]["fleet_checkpoint_host_reboot"][host]
    assert summary["rebooted"] is True
    assert lab_exec(host, "systemctl", "show", "-p", "UserspaceTimestamp", "--value").stdout != booted
    row = [item for item in summary["containers"] if item["container"] == "awx-counter"][0]
    assert row["status"] == "restored" and row["resumed"] is True, row
    artifacts = tmp_path / "artifacts"
    job = next(artifacts.iterdir())
    assert (job / "status").read_text().strip() == "successful"
    assert json.loads((job / "job_events" / sorted(p.name for p in (job / "job_events").iterdir())[0]).read_text())
    assert lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}} {{.HostConfig.RestartPolicy.Name}}",
                    "awx-counter").stdout.split() == ["true", "unless-stopped"]


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
