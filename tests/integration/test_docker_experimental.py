"""docker_experimental on the lab: real dockerd, real systemd, real containers. Nothing mocked."""

import json

import pytest

from conftest import ROOT, ansible_playbook, docker_restore, lab_exec, on_hosts, run_module, sh

MODULE = "fleet.checkpoint.docker_experimental"
DAEMON_JSON = "/etc/docker/daemon.json"
DROP_IN_DIR = "/etc/systemd/system/docker.service.d"


def daemon(host):
    info = json.loads(lab_exec(host, "docker", "info", "--format", "{{json .}}").stdout)
    return {"experimental": info["ExperimentalBuild"], "live_restore": info["LiveRestoreEnabled"]}


def file_state(host, path=DAEMON_JSON):
    """Bytes digest, inode and mtime of a file on a host, or None when absent: 'untouched' means all equal."""
    out = sh(host, f"[ -e {path} ] && stat -c '%i %Y %a %U' {path} && sha256sum < {path} || true").stdout
    return out or None


def workload(host, name="exp-workload"):
    sh(host, f"docker rm -f {name} >/dev/null 2>&1; docker run -d --name {name} fleet-lab-workload:busybox")
    return container_state(host, name)


def container_state(host, name):
    return lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}} {{.State.Pid}} {{.State.StartedAt}}", name).stdout.strip()


def docker_main_pid(host):
    return lab_exec(host, "systemctl", "show", "-p", "MainPID", "--value", "docker.service").stdout.strip()


def module(host, check=False, diff=False, **args):
    return run_module(host, MODULE, check=check, diff=diff, **args)


def reset(host):
    """Docker as the lab image ships it: no daemon.json, no drop-in, no swarm, experimental off, no containers."""
    # Containers and the swarm go first: a restart would otherwise wait 10 s for each container that ignores SIGTERM.
    sh(host, "docker swarm leave --force >/dev/null 2>&1; docker rm -f $(docker ps -aq) >/dev/null 2>&1; "
             f"rm -rf {DROP_IN_DIR} /etc/docker/daemon.json* /etc/default/docker.fleet-test; "
             "systemctl daemon-reload; systemctl reset-failed docker.service; systemctl restart docker.service; "
             "docker swarm leave --force >/dev/null 2>&1; docker rm -f $(docker ps -aq) >/dev/null 2>&1; true")
    assert daemon(host) == {"experimental": False, "live_restore": False}


@pytest.fixture(scope="module", autouse=True)
def shipped_lab(lab_as_shipped):
    """Every lab host as the image ships it before these tests; what they leave is undone by the next module's
    fixture (conftest.ready, lab_as_shipped)."""
    return lab_as_shipped


@pytest.fixture
def host(trixie_hosts):
    """A trixie lab host reset before and after the test."""
    name = trixie_hosts[-1]
    reset(name)
    yield name
    reset(name)


def test_invalid_json_is_refused_and_left_untouched(host):
    sh(host, "mkdir -p /etc/docker && printf '{\\n  \"debug\": true,\\n' > /etc/docker/daemon.json")
    before = file_state(host)
    result = module(host)
    assert result.get("failed") is True
    assert "not valid JSON" in result["msg"] and DAEMON_JSON in result["msg"]
    assert file_state(host) == before
    assert daemon(host)["experimental"] is False


def test_json_that_is_not_an_object_is_refused(host):
    sh(host, "mkdir -p /etc/docker && echo '[\"experimental\"]' > /etc/docker/daemon.json")
    before = file_state(host)
    result = module(host)
    assert result.get("failed") is True and "not an object" in result["msg"]
    assert file_state(host) == before


def test_experimental_flag_on_the_command_line_is_a_conflict(host):
    sh(host, f"mkdir -p {DROP_IN_DIR} && printf '[Service]\\nExecStart=\\nExecStart=/usr/sbin/dockerd -H fd:// "
             f"--containerd=/run/containerd/containerd.sock --experimental\\n' > {DROP_IN_DIR}/experimental.conf && "
             "printf '{\"debug\": false}\\n' > /etc/docker/daemon.json && systemctl daemon-reload && "
             "systemctl reset-failed docker.service docker.socket && systemctl restart docker")
    before = file_state(host)
    pid = docker_main_pid(host)
    result = module(host)
    assert result.get("failed") is True
    assert "--experimental" in result["msg"] and f"{DROP_IN_DIR}/experimental.conf" in result["msg"]
    assert "would stop dockerd from starting" in result["msg"]
    assert result["conflicts"] == [{"key": "experimental", "flag": "--experimental", "source": f"{DROP_IN_DIR}/experimental.conf"}]
    assert file_state(host) == before
    assert docker_main_pid(host) == pid


def test_flag_in_etc_default_docker_is_a_conflict(host):
    sh(host, "echo 'DOCKER_OPTS=\"--live-restore\"' > /etc/default/docker && "
             "systemctl reset-failed docker.service docker.socket && systemctl restart docker")
    before = file_state(host)
    result = module(host, live_restore=True)
    assert result.get("failed") is True
    assert "/etc/default/docker (DOCKER_OPTS)" in result["msg"]
    assert file_state(host) == before
    sh(host, "rm -f /etc/default/docker")


@pytest.mark.fault(6, "Docker does not start after the daemon.json change")
def test_failed_restart_is_rolled_back_and_the_daemon_runs_again(host):
    """Inject a fault: this host's dockerd cannot start once daemon.json turns experimental on."""
    sh(host, f"mkdir -p {DROP_IN_DIR} && printf '[Service]\\nExecStartPre=/bin/sh -c \"! grep -q experimental "
             f"/etc/docker/daemon.json\"\\n' > {DROP_IN_DIR}/fault.conf && "
             "printf '{\\n    \"debug\": false\\n}\\n' > /etc/docker/daemon.json && systemctl daemon-reload && "
             "systemctl reset-failed docker.service docker.socket && systemctl restart docker")
    before_file = file_state(host)
    before_container = workload(host)
    result = module(host, timeout=20)
    assert result.get("failed") is True, result
    assert result["rolled_back"] is True
    assert "Rolled back" in result["msg"] and "previous daemon.json restored" in result["msg"]
    assert lab_exec(host, "systemctl", "is-active", "docker.service", check=False).stdout.strip() == "active"
    assert daemon(host)["experimental"] is False
    assert file_state(host) is not None
    assert sh(host, "cat /etc/docker/daemon.json").stdout == '{\n    "debug": false\n}\n'
    assert file_state(host).split()[2:] == before_file.split()[2:]  # same mode, owner and bytes
    assert container_state(host, "exp-workload") == before_container  # the workload never stopped


def test_live_restore_on_a_swarm_node_is_refused(host):
    sh(host, "docker swarm init >/dev/null")
    result = module(host, live_restore=True)
    assert result.get("failed") is True and "incompatible with swarm mode" in result["msg"]
    assert file_state(host) is None


def test_if_safe_does_not_restart_a_swarm_node_with_running_containers(host):
    sh(host, "docker swarm init >/dev/null")
    before_container = workload(host)
    pid = docker_main_pid(host)
    result = module(host)
    assert result["changed"] is True
    assert result["restart_mode"] == "unsafe" and result["restart_required"] is True
    assert "swarm node" in result["restart_reason"]
    assert docker_main_pid(host) == pid
    assert container_state(host, "exp-workload") == before_container
    assert json.loads(sh(host, "cat /etc/docker/daemon.json").stdout) == {"experimental": True}


def test_restart_never_only_edits_the_file(host):
    pid = docker_main_pid(host)
    first = module(host, restart="never")
    assert first["changed"] is True and first["restart_required"] is True and first["restarted"] is False
    assert docker_main_pid(host) == pid and daemon(host)["experimental"] is False
    second = module(host, restart="never")
    assert second["changed"] is False and second["restart_required"] is True


def test_check_mode_predicts_the_real_run_and_disable_restores_off(host):
    workload(host)
    sh(host, "mkdir -p /etc/docker && printf '{\\n  \"log-level\": \"info\",\\n  \"max-concurrent-downloads\": 3\\n}\\n' > /etc/docker/daemon.json")
    before = file_state(host)
    predicted = module(host, check=True, diff=True)
    assert file_state(host) == before
    assert daemon(host)["experimental"] is False
    real = module(host, diff=True, backup=True)
    for key in ("changed", "restart_mode", "restarted", "restart_required", "experimental", "containers_kept_running"):
        assert predicted[key] == real[key], key
    assert predicted["diff"] == real["diff"]
    assert real["experimental"] == {"before": False, "after": True}
    assert json.loads(sh(host, "cat /etc/docker/daemon.json").stdout) == {
        "log-level": "info", "max-concurrent-downloads": 3, "experimental": True}
    assert sh(host, f"cat {real['backup_file']}").stdout == '{\n  "log-level": "info",\n  "max-concurrent-downloads": 3\n}\n'
    assert sh(host, f"stat -c %a {real['backup_file']}").stdout.strip() == "644"

    state = container_state(host, "exp-workload")
    disabled = module(host, state="disabled", diff=True)
    assert disabled["changed"] is True and disabled["experimental"] == {"before": True, "after": False}
    assert json.loads(sh(host, "cat /etc/docker/daemon.json").stdout) == {"log-level": "info", "max-concurrent-downloads": 3}
    assert container_state(host, "exp-workload") == state
    assert module(host, state="disabled")["changed"] is False


def test_role_enables_experimental_fleet_wide_without_stopping_workloads(lab):
    on_hosts(reset, lab)
    before = {name: workload(name) for name in lab}
    for name in lab:
        assert lab_exec(name, "docker", "checkpoint", "ls", "exp-workload", check=False).returncode != 0

    rc, checked = ansible_playbook(ROOT / "tests" / "integration" / "playbooks" / "docker_experimental.yml", options=["--check"])
    assert rc == 0
    assert all(daemon(name)["experimental"] is False for name in lab)
    rc, result = ansible_playbook(ROOT / "tests" / "integration" / "playbooks" / "docker_experimental.yml")
    assert rc == 0
    for name in lab:
        assert result["stats"][name]["changed"] == 1, name
        assert checked["stats"][name]["changed"] == 1, name
        assert daemon(name)["experimental"] is True, name
        assert container_state(name, "exp-workload") == before[name], f"{name}: the workload was restarted"
        # Docker now serves its checkpoint API.
        assert lab_exec(name, "docker", "checkpoint", "ls", "exp-workload").returncode == 0
        module_results = [task["hosts"][name] for task in result["plays"][0]["tasks"]
                          if "live_restored_containers" in task["hosts"].get(name, {})]
        assert [r["live_restored_containers"] for r in module_results] == [["exp-workload"]], name

    pids = {name: docker_main_pid(name) for name in lab}
    rc, again = ansible_playbook(ROOT / "tests" / "integration" / "playbooks" / "docker_experimental.yml")
    assert rc == 0
    assert all(again["stats"][name]["changed"] == 0 for name in lab)
    assert pids == {name: docker_main_pid(name) for name in lab}, "a second run restarted dockerd"


def test_checkpoint_create_works_once_experimental_is_on(trixie_hosts):
    """With experimental on (previous test) and CRIU from the host's distribution, Docker checkpoints a container."""
    host = trixie_hosts[0]
    assert module(host)["experimental"]["after"] is True
    sh(host, "command -v criu >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq criu >/dev/null)")
    sh(host, "docker rm -f cp-probe >/dev/null 2>&1; docker run -d --name cp-probe fleet-lab-workload:busybox")
    sh(host, "docker checkpoint create cp-probe cp1")
    assert "cp1" in lab_exec(host, "docker", "checkpoint", "ls", "cp-probe").stdout
    assert container_state(host, "cp-probe").startswith("false")
    docker_restore(host, "cp-probe", "cp1")
    assert container_state(host, "cp-probe").startswith("true")
    sh(host, "docker rm -f cp-probe >/dev/null; "
             "DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq criu libcompel1 python3-pycriu libcriu2 >/dev/null")
