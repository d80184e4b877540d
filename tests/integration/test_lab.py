"""The lab fleet behaves like a real fleet: SSH, systemd, Docker, reboots; and ships without CRIU or experimental mode."""

import json
import time

import pytest

from conftest import DOCKER_INVENTORY, ROOT, ansible_adhoc, ansible_playbook, lab_exec


@pytest.fixture(scope="module", autouse=True)
def shipped_lab(lab_as_shipped):
    """Every lab host as the image ships it: the lab's own promise (no CRIU, experimental mode off)."""
    return lab_as_shipped


def test_ping_over_ssh_reaches_every_host(lab):
    results = ansible_adhoc("all", "ansible.builtin.ping")
    assert sorted(results) == sorted(lab)
    for host, res in results.items():
        assert res.get("ping") == "pong", (host, res)


def test_docker_connection_reaches_every_host(lab):
    results = ansible_adhoc("all", "ansible.builtin.ping", inventory=DOCKER_INVENTORY)
    assert sorted(results) == sorted(lab)
    assert all(res.get("ping") == "pong" for res in results.values()), results


def test_ssh_lands_in_the_host_itself(lab):
    """The SSH port of each host leads to that host (not to another one, not to the machine)."""
    results = ansible_adhoc("all", "ansible.builtin.command", "hostname")
    for host, res in results.items():
        assert res["stdout"] == host


def test_hosts_run_systemd_docker_and_sshd(lab):
    for host in lab:
        assert lab_exec(host, "cat", "/proc/1/comm").stdout.strip() == "systemd"
        assert lab_exec(host, "systemctl", "is-system-running", check=False).stdout.strip() == "running"
        for unit in ("docker.service", "containerd.service", "ssh.service"):
            assert lab_exec(host, "systemctl", "is-active", unit, check=False).stdout.strip() == "active", (host, unit)


def test_lab_image_has_no_criu_and_experimental_is_off(lab):
    for host in lab:
        assert lab_exec(host, "sh", "-c", "command -v criu", check=False).returncode != 0, f"criu found on {host}"
        status = lab_exec(host, "dpkg-query", "-W", "-f", "${Status}", "criu", check=False).stdout
        assert "installed" not in status.split(), f"criu package on {host}: {status}"
        info = json.loads(lab_exec(host, "docker", "info", "--format", "{{json .}}").stdout)
        assert info["ExperimentalBuild"] is False, host
        assert info["ServerVersion"]


def test_workload_image_runs_in_every_host(lab):
    for host in lab:
        out = lab_exec(host, "docker", "run", "--rm", "-e", "COUNTER_INTERVAL=0.01",
                       "fleet-lab-workload:busybox", "sh", "-c", "timeout 1 counter | head -n 3").stdout.split()
        assert out == ["1", "2", "3"], (host, out)


def test_readiness_playbook_reports_what_is_missing(lab):
    rc, result = ansible_playbook(ROOT / "playbooks" / "readiness.yml")
    assert rc == 0
    readiness = result["global_custom_stats"]["fleet_checkpoint_readiness"]
    assert sorted(readiness) == sorted(lab)
    for host, facts in readiness.items():
        assert facts["ready"] is False, host
        assert "Docker experimental mode is off" in facts["problems"]
        assert "CRIU is not installed" in facts["problems"]
        assert facts["criu_version"] == "absent"
        assert facts["docker_version"] == lab_exec(host, "docker", "version", "--format", "{{.Server.Version}}").stdout.strip()
    assert result["stats"][lab[0]]["changed"] == 0


def test_readiness_playbook_can_fail_hosts_that_are_not_ready(lab):
    rc, result = ansible_playbook(ROOT / "playbooks" / "readiness.yml",
                                  extra_vars={"fleet_checkpoint_require_ready": True}, check=False)
    assert rc == 2
    assert all(result["stats"][host]["failures"] == 1 for host in lab)


def test_reboot_brings_a_host_back_with_docker_and_its_containers(trixie_hosts):
    host = trixie_hosts[-1]
    lab_exec(host, "docker", "rm", "-f", "reboot-probe", check=False)
    lab_exec(host, "docker", "run", "-d", "--name", "reboot-probe", "--restart", "always", "fleet-lab-workload:busybox")
    before = lab_exec(host, "systemctl", "show", "-p", "UserspaceTimestamp", "--value").stdout.strip()
    # `systemctl reboot` through ansible.builtin.reboot over SSH, with the lab's boot_time_command from the inventory.
    results = ansible_adhoc(host, "ansible.builtin.reboot",
                            "reboot_command='systemctl reboot' reboot_timeout=180 "
                            "boot_time_command='{{ fleet_checkpoint_reboot_boot_time_command }}'")
    assert results[host].get("rebooted") is True, results[host]
    after = lab_exec(host, "systemctl", "show", "-p", "UserspaceTimestamp", "--value").stdout.strip()
    assert after != before
    deadline = time.monotonic() + 60
    while lab_exec(host, "systemctl", "is-active", "docker.service", check=False).stdout.strip() != "active":
        assert time.monotonic() < deadline, "docker.service did not come back after the reboot"
        time.sleep(1)
    while lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}}", "reboot-probe", check=False).stdout.strip() != "true":
        assert time.monotonic() < deadline, "the container with restart policy 'always' did not come back"
        time.sleep(1)
    lab_exec(host, "docker", "rm", "-f", "reboot-probe")
