"""What AWX needs: an execution environment definition that ansible-builder accepts, and host_reboot run through
ansible-runner (the engine AWX uses) with AWX-style extra vars and an SSH inventory."""

import json
import shutil
import time

import ansible_runner
import pytest
import yaml

from conftest import INVENTORY, ROOT, lab_exec, ready, run

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
