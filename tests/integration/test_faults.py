"""Fault injection on the lab (`make test-faults`): each fault is injected for real, and each test asserts what the
user sees and that nothing was lost (every container running again: restored, or started afresh and reported).

The numbers are the faults of the reliability issue; tests elsewhere carry the same marker (fault 1: a dump failing
midway in test_fleet_ops; fault 6: docker_experimental's rollback; fault 7: the per-call lock; fault 8: a target that
cannot restore).
"""

import glob
import json
import os
import pathlib
import re
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import (
    FORGET_STARTS,
    INVENTORY,
    LAB,
    ROOT,
    ansible_json_env,
    ansible_playbook,
    counts,
    docker_up,
    lab_exec,
    run,
    run_module,
    sh,
)

IMAGE = "fleet-lab-workload:busybox"
PLAYBOOKS = ROOT / "playbooks"
MANIFEST = "/var/lib/fleet-checkpoint/manifest.json"
MODULE = "fleet.checkpoint.docker_checkpoint"


def clean(host):
    # After a Docker daemon was killed during a restore, Docker may never see the container it was restoring exit
    # (its `docker rm -f` waits forever; see docs/host_reboot.md): a daemon restart turns it Dead, removable.
    removed = sh(host, "timeout 60 sh -c 'docker rm -f $(docker ps -aq) >/dev/null 2>&1; true'", check=False)
    if removed.returncode != 0:
        sh(host, f"{FORGET_STARTS}; systemctl kill -s KILL docker.service; sleep 1")
        docker_up(host)
        sh(host, "timeout 60 sh -c 'docker rm -f $(docker ps -aq) >/dev/null 2>&1; true'")
    sh(host, "rm -rf /var/lib/fleet-checkpoint/manifest.json /var/lib/fleet-checkpoint/run.lock "
             "/var/lib/fleet-checkpoint/migrate")


def start(host, name, *options, command=()):
    lab_exec(host, "docker", "rm", "-f", name, check=False)
    lab_exec(host, "docker", "run", "-d", "--name", name, "-e", "COUNTER_INTERVAL=0.2", *options, IMAGE, *command)


def wait_counting(host, names, at_least=5, seconds=30):
    deadline = time.monotonic() + seconds
    while not all(counts(host, name)[-1:] >= [at_least] for name in names):
        assert time.monotonic() < deadline, f"{names} on {host} do not count"
        time.sleep(0.3)


def state(host, name, fmt="{{.State.Running}}"):
    return lab_exec(host, "docker", "inspect", "-f", fmt, name).stdout.strip()


def running(host, name):
    return state(host, name) == "true"


def checkpoint_dir(host, name, checkpoint):
    cid = state(host, name, "{{.Id}}")
    return f"/var/lib/docker/containers/{cid}/checkpoints/{checkpoint}"


def exists(host, path):
    return lab_exec(host, "test", "-e", path, check=False).returncode == 0


def manifest(host):
    return json.loads(lab_exec(host, "cat", MANIFEST).stdout)


def statuses(host):
    return {item["container"]: item["status"] for item in manifest(host)["containers"]}


def resumes_from(host, name, last, seconds=20):
    """The counter goes on above `last` (restored), not from 1 (a cold start)."""
    deadline = time.monotonic() + seconds
    while True:
        numbers = counts(host, name)
        tail = numbers[numbers.index(last) + 1:] if last in numbers else []
        if len(tail) >= 3:
            break
        assert time.monotonic() < deadline, f"{host}/{name} does not count on after {last}: {numbers[-8:]}"
        time.sleep(0.3)
    assert tail[0] == last + 1 and 1 not in tail, f"{host}/{name}: {last} then {tail[:6]} (not a continuation)"


def broken(numbers):
    return [(a, b) for a, b in zip(numbers, numbers[1:]) if b != a + 1]


def all_failed_messages(output):
    return " | ".join(result.get("msg", "") for play in output["plays"] for task in play["tasks"]
                      for result in task["hosts"].values() if result.get("failed") or result.get("unreachable"))


# -- 1. CRIU cannot dump one of the containers ------------------------------------------------------------------------
@pytest.mark.fault(1, "CRIU cannot dump one of the containers")
def test_one_container_criu_refuses_keeps_running_the_others_are_checkpointed(fleet):
    host = fleet[0]
    clean(host)
    lab_exec(host, "docker", "run", "-d", "--name", "tcp-server", IMAGE, "sh", "-c",
             "mkdir -p /www && exec httpd -f -p 8080 -h /www")
    server = state(host, "tcp-server", "{{.NetworkSettings.IPAddress}}")
    start(host, "holds-tcp", "--label", "fault=1", command=["sh", "-c", f"sleep 100000 | nc {server} 8080 & exec counter"])
    for name in ("one", "two"):
        start(host, name, "--label", "fault=1", "--restart", "always")
    wait_counting(host, ["holds-tcp", "one", "two"])
    pid = state(host, "holds-tcp", "{{.State.Pid}}")
    # runc.conf without tcp-established: CRIU refuses the established connection, for this run only.
    sh(host, "cp /etc/criu/runc.conf /etc/criu/runc.conf.keep && sed -i '/^tcp-established/d' /etc/criu/runc.conf")
    try:
        result = run_module(host, MODULE, all_running=True, filters={"label": "fault=1"}, name="f1")
    finally:
        sh(host, "mv /etc/criu/runc.conf.keep /etc/criu/runc.conf")
    assert result.get("failed"), result
    rows = {row["container"]: row for row in result["results"]}
    assert set(rows) == {"holds-tcp", "one", "two"}
    assert rows["holds-tcp"].get("failed") and "tcp-established" in rows["holds-tcp"]["msg"], rows["holds-tcp"]
    assert "holds-tcp" in result["msg"]
    assert running(host, "holds-tcp") and state(host, "holds-tcp", "{{.State.Pid}}") == pid
    assert not exists(host, checkpoint_dir(host, "holds-tcp", "f1"))
    for name in ("one", "two"):
        assert rows[name].get("changed") and not rows[name].get("failed") and rows[name]["stopped"], rows[name]
        assert not running(host, name) and exists(host, checkpoint_dir(host, name, "f1"))
    last = {name: counts(host, name)[-1] for name in ("one", "two")}
    restored = run_module(host, MODULE, containers=["one", "two"], name="f1", state="restored")
    assert not restored.get("failed"), restored
    for name in ("one", "two"):
        resumes_from(host, name, last[name])
        assert state(host, name, "{{.HostConfig.RestartPolicy.Name}}") == "always"
    clean(host)


# -- 2. The Docker daemon is killed in the middle of a restore batch ---------------------------------------------------
@pytest.mark.fault(2, "Docker daemon killed in the middle of a restore")
def test_a_restore_interrupted_by_a_killed_docker_daemon_is_finished_by_a_rerun(fleet):
    host = fleet[1]
    clean(host)
    names = [f"batch{i}" for i in range(6)]
    for name in names:
        start(host, name)
    wait_counting(host, names)
    ansible_playbook(PLAYBOOKS / "checkpoint.yml", extra_vars={"fleet_checkpoint_hosts": host})
    assert set(statuses(host).values()) == {"checkpointed"}
    last = {name: counts(host, name)[-1] for name in names}

    restore = subprocess.Popen(  # pylint: disable=consider-using-with
        ["ansible-playbook", "-i", str(INVENTORY), str(PLAYBOOKS / "restore.yml"),
         "-e", json.dumps({"fleet_checkpoint_hosts": host, "restore_parallel": 1})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, **ansible_json_env()))
    deadline = time.monotonic() + 120
    while True:  # kill dockerd once some containers are back and others still wait
        up = [name for name in names if running(host, name)]
        if up:
            break
        assert time.monotonic() < deadline and restore.poll() is None, "the restore did not start any container"
        time.sleep(0.1)
    # Forget earlier starts first, so that systemd's start limit does not keep the killed daemon down.
    sh(host, f"{FORGET_STARTS}; systemctl kill -s KILL docker.service")
    killed_after = len(up)
    stdout, _stderr = restore.communicate(timeout=600)
    docker_up(host)  # systemd restarted dockerd (Restart=always)
    assert killed_after < len(names), "every container was restored before the kill: the fault was not injected"
    first = json.loads(stdout)
    assert restore.returncode != 0, "the interrupted restore claimed success"
    assert first["stats"][host]["failures"] >= 1

    rc, output = ansible_playbook(PLAYBOOKS / "restore.yml", extra_vars={"fleet_checkpoint_hosts": host}, check=False)
    assert rc == 0, all_failed_messages(output)
    # The restore the daemon was in the middle of can finish inside containerd after the daemon died; Docker never
    # learns of that copy (task UNKNOWN, it outlives `docker rm`). The re-run must have stopped it before restoring.
    assert orphan_processes(host) == [], "a copy Docker does not know of still runs beside the restored containers"
    final = statuses(host)
    for name in names:
        assert running(host, name), f"{name} is not running after the re-run: {final}"
        assert final[name] in ("restored", "cold_started"), final
        if final[name] == "restored":
            resumes_from_checkpoint(host, name, last[name])
    # Containers Docker itself killed (no live-restore) are brought back from their checkpoint, not started afresh.
    # Only the one whose restore the daemon was in the middle of may not be: the killed daemon can leave containerd's
    # copy of its checkpoint broken ("invalid tar header"); it is then started afresh and reported so.
    rows = manifest(host)["containers"]
    report = "\n".join(f"{row['container']}: {row['status']} {row.get('restore_msg') or ''}" for row in rows)
    print(report)
    assert list(final.values()).count("restored") >= len(names) - 1, report
    assert all(row.get("restore_msg") for row in rows if row["status"] == "cold_started"), report
    again = ansible_playbook(PLAYBOOKS / "restore.yml", extra_vars={"fleet_checkpoint_hosts": host})[1]
    assert again["stats"][host]["changed"] == 0
    clean(host)


def orphan_processes(host):
    """PIDs of containerd shims in Docker's namespace (and their processes) that Docker does not know as running."""
    return sh(host, r"""
        for shim in $(pgrep -f 'containerd-shim-runc-v2 -namespace moby'); do
          id=$(tr '\0' ' ' < /proc/$shim/cmdline | sed -n 's/.* -id \([0-9a-f]*\).*/\1/p')
          pid=$(docker inspect -f '{{if .State.Running}}{{.State.Pid}}{{end}}' "$id" 2>/dev/null)
          for child in $(pgrep -P $shim); do [ "$child" = "$pid" ] || echo "$shim $child"; done
        done""").stdout.split()


def resumes_from_checkpoint(host, name, last):
    """After a re-restore the log holds the interrupted run too; the newest numbers still continue the checkpoint's
    count (a cold start would print 1, 2, 3 again)."""
    deadline = time.monotonic() + 20
    while True:
        numbers = counts(host, name)
        restarts = [i for i, (a, b) in enumerate(zip(numbers, numbers[1:]), 1) if b != a + 1]
        tail = numbers[restarts[-1]:] if restarts else numbers[numbers.index(last) + 1:]
        if len(tail) >= 3:
            break
        assert time.monotonic() < deadline, f"{host}/{name} does not count: {numbers[-8:]}"
        time.sleep(0.3)
    assert tail[0] == last + 1, f"{host}/{name}: the newest run starts at {tail[0]}, the checkpoint was at {last}"


# -- 3. A checkpoint corrupted or truncated after the dump ------------------------------------------------------------
@pytest.mark.fault(3, "checkpoint files corrupted or truncated after the dump")
def test_damaged_checkpoints_are_caught_before_the_restore_and_the_fallback_applies(fleet):
    host = fleet[2]
    clean(host)
    names = ("corrupted", "truncated", "intact")
    for name in names:
        start(host, name)
    wait_counting(host, names)
    ansible_playbook(PLAYBOOKS / "checkpoint.yml", extra_vars={"fleet_checkpoint_hosts": host})
    checkpoint = manifest(host)["checkpoint"]
    last = {name: counts(host, name)[-1] for name in names}
    bad = checkpoint_dir(host, "corrupted", checkpoint)
    short = checkpoint_dir(host, "truncated", checkpoint)
    # One flipped page in the middle of the memory image; the other image cut short.
    sh(host, f"f=$(ls {bad}/pages-*.img | head -1); size=$(stat -c %s $f); "
             f"printf 'XXXXXXXX' | dd of=$f bs=1 seek=$((size / 2)) conv=notrunc status=none")
    sh(host, f"f=$(ls {short}/pages-*.img | head -1); truncate -s -4096 $f")

    # Without a fallback the module refuses, names the damage, and changes nothing.
    before = sh(host, "docker ps -a --format '{{.Names}} {{.State}}' | sort; "
                      f"ls -l {bad} {short}").stdout
    refused = run_module(host, MODULE, container="corrupted", name=checkpoint, state="restored")
    assert refused.get("failed") and "damaged" in refused["msg"] and "sha256" in refused["msg"], refused
    refused = run_module(host, MODULE, container="truncated", name=checkpoint, state="restored")
    assert refused.get("failed") and "truncated" in refused["msg"], refused
    assert sh(host, "docker ps -a --format '{{.Names}} {{.State}}' | sort; "
                    f"ls -l {bad} {short}").stdout == before

    # The restore role's fallback (cold_start) applies, and the report says why.
    rc, output = ansible_playbook(PLAYBOOKS / "restore.yml", extra_vars={"fleet_checkpoint_hosts": host}, check=False)
    assert rc == 0, all_failed_messages(output)
    rows = {item["container"]: item for item in manifest(host)["containers"]}
    for name in ("corrupted", "truncated"):
        assert rows[name]["status"] == "cold_started" and "damaged" in rows[name]["restore_msg"], rows[name]
        assert running(host, name)
    assert rows["intact"]["status"] == "restored"
    resumes_from(host, "intact", last["intact"])
    clean(host)


# -- 4. The disk runs out during the dump -----------------------------------------------------------------------------
@pytest.mark.fault(4, "the disk runs out for the checkpoint")
def test_a_full_checkpoint_area_is_refused_before_the_dump(fleet):
    host = fleet[0]
    clean(host)
    start(host, "cramped")
    wait_counting(host, ["cramped"])
    area = checkpoint_dir(host, "cramped", "x").rsplit("/", 1)[0]
    sh(host, f"mkdir -p {area} && mount -t tmpfs -o size=1m tmpfs {area}")
    pid = state(host, "cramped", "{{.State.Pid}}")
    try:
        rc, output = ansible_playbook(PLAYBOOKS / "checkpoint.yml", check=False,
                                      extra_vars={"fleet_checkpoint_hosts": host})
        assert rc != 0
        assert "not enough free disk" in all_failed_messages(output), all_failed_messages(output)
        assert running(host, "cramped") and state(host, "cramped", "{{.State.Pid}}") == pid
        assert lab_exec(host, "ls", "-A", area).stdout.strip() == ""
        assert not exists(host, MANIFEST)
    finally:
        sh(host, f"umount {area}")
    clean(host)


@pytest.mark.fault(4, "the disk runs out for the checkpoint")
def test_a_dump_that_fills_the_disk_fails_cleanly_and_the_container_keeps_running(fleet):
    """The estimate sees resident memory, not a tmpfs mount's data (CRIU archives it too): the dump itself hits
    ENOSPC. CRIU's partial images are removed; the container runs on, untouched."""
    host = fleet[0]
    clean(host)
    start(host, "scratchy", "--tmpfs", "/scratch:size=64m",
          command=["sh", "-c", "head -c 33554432 /dev/urandom > /scratch/data && exec counter"])
    wait_counting(host, ["scratchy"])
    area = checkpoint_dir(host, "scratchy", "x").rsplit("/", 1)[0]
    sh(host, f"mkdir -p {area} && mount -t tmpfs -o size=24m tmpfs {area}")
    pid = state(host, "scratchy", "{{.State.Pid}}")
    try:
        result = run_module(host, MODULE, container="scratchy", name="full")
        assert result.get("failed"), result
        print("ENOSPC dump:", result["msg"][:600])
        assert "No space left" in result["msg"] or "ENOSPC" in result["msg"] or "errno 28" in result["msg"].lower(), \
            result["msg"]
        assert running(host, "scratchy") and state(host, "scratchy", "{{.State.Pid}}") == pid
        assert state(host, "scratchy", "{{.HostConfig.RestartPolicy.Name}}") == "no"
        assert lab_exec(host, "ls", "-A", area).stdout.strip() == "", "a partial checkpoint was left behind"
        info = run_module(host, "fleet.checkpoint.docker_checkpoint_info", container="scratchy")
        assert info["containers"][0]["checkpoints"] == []
    finally:
        sh(host, f"umount {area}")
    last = counts(host, "scratchy")[-1]
    resumes_from(host, "scratchy", last)
    clean(host)


# -- 5. The host does not come back from its reboot --------------------------------------------------------------------
@pytest.mark.fault(5, "a host does not come back from its reboot in time")
def test_a_host_that_does_not_come_back_fails_clearly_and_keeps_its_checkpoints(fleet):
    host = fleet[2]
    clean(host)
    names = ("late1", "late2")
    for name in names:
        start(host, name)
    wait_counting(host, names)
    # The lab host's container does not restart when it reboots: the host stays down.
    run(["docker", "update", "--restart", "no", host])
    try:
        rc, output = ansible_playbook(PLAYBOOKS / "host_reboot.yml", check=False, extra_vars={
            "fleet_checkpoint_hosts": host, "fleet_checkpoint_reboot": "always",
            "fleet_checkpoint_reboot_timeout": 15, "fleet_checkpoint_docker_timeout": 10})
    finally:
        run(["docker", "update", "--restart", "unless-stopped", host])
        run(["docker", "start", host])
        run([str(LAB / "wait-host.sh"), host], timeout=300)
    assert rc != 0
    message = all_failed_messages(output)
    assert f"{host}: Fail a host that did not come back in time: the host did not come back within " \
           "fleet_checkpoint_reboot_timeout=15s" in message and "fleet.checkpoint.restore" in message, message
    run_id = re.search(r"fleet_checkpoint_run_id=(\w+)", message).group(1)
    assert set(statuses(host).values()) == {"checkpointed"}
    checkpoint = manifest(host)["checkpoint"]
    for name in names:
        assert not running(host, name) and exists(host, checkpoint_dir(host, name, checkpoint))
    last = {name: counts(host, name)[-1] for name in names}
    # The run lock is still held by that run: another run is refused; the same run id finishes it.
    rc, output = ansible_playbook(PLAYBOOKS / "restore.yml", extra_vars={"fleet_checkpoint_hosts": host}, check=False)
    assert rc != 0 and "in use by run" in all_failed_messages(output)
    ansible_playbook(PLAYBOOKS / "restore.yml", extra_vars={"fleet_checkpoint_hosts": host,
                                                            "fleet_checkpoint_run_id": run_id})
    for name in names:
        resumes_from(host, name, last[name])
    assert not exists(host, "/var/lib/fleet-checkpoint/run.lock")
    clean(host)


# -- 7. Two runs on the same host at once -----------------------------------------------------------------------------
@pytest.mark.fault(7, "two runs on the same host at once")
def test_a_second_playbook_run_is_refused_while_the_first_holds_the_host(fleet, tmp_path):
    host = fleet[1]
    clean(host)
    names = ("shared1", "shared2")
    for name in names:
        start(host, name)
    wait_counting(host, names)
    last = {name: counts(host, name)[-1] for name in names}
    hook = tmp_path / "slow-drain.yml"
    hook.write_text("- name: Drain slowly\n  ansible.builtin.pause:\n    seconds: 25\n")
    first = subprocess.Popen(  # pylint: disable=consider-using-with
        ["ansible-playbook", "-i", str(INVENTORY), str(PLAYBOOKS / "host_reboot.yml"), "-e", json.dumps({
            "fleet_checkpoint_hosts": host, "fleet_checkpoint_reboot": "always",
            "fleet_checkpoint_pre_reboot_tasks": str(hook)})],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, **ansible_json_env()))
    try:
        deadline = time.monotonic() + 120
        while not exists(host, "/var/lib/fleet-checkpoint/run.lock"):
            assert time.monotonic() < deadline and first.poll() is None, "the first run never took the host"
            time.sleep(0.3)
        pids = {name: state(host, name, "{{.State.Pid}}") for name in names}
        for playbook in ("host_reboot.yml", "checkpoint.yml", "restore.yml"):
            rc, output = ansible_playbook(PLAYBOOKS / playbook, check=False, extra_vars={
                "fleet_checkpoint_hosts": host, "fleet_checkpoint_reboot": "always"})
            assert rc != 0, playbook
            assert "in use by run" in all_failed_messages(output) and "host_reboot" in all_failed_messages(output)
        assert {name: state(host, name, "{{.State.Pid}}") for name in names} == pids, "the second run touched them"
    finally:
        stdout, stderr = first.communicate(timeout=900)
    assert first.returncode == 0, stdout[-3000:] + stderr[-3000:]
    for name in names:
        resumes_from(host, name, last[name])
    assert not exists(host, "/var/lib/fleet-checkpoint/run.lock")
    clean(host)


# -- 8. Migration target unreachable or out of disk mid-transfer ------------------------------------------------------
def controller_dirs():
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "fleet-checkpoint-migrate-*")))


def migrate(source, target, name):
    return ansible_playbook(PLAYBOOKS / "migrate.yml", check=False, extra_vars={
        "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
        "fleet_checkpoint_migrate_containers": [name]})


def migrate_into_a_small_disk(source, target, name, size):
    """migrate.yml with the target's Docker containers directory - where a received checkpoint and its disk state
    land - on a tmpfs of `size`."""
    sh(target, f"mount -t tmpfs -o size={size},mode=0710 tmpfs /var/lib/docker/containers")
    try:
        return migrate(source, target, name)
    finally:
        sh(target, "umount /var/lib/docker/containers; true")


def migrate_injecting(source, target, name, moment, inject, seconds=180, every=0.1):
    """migrate.yml source -> target while a watcher injects a fault (`inject()`) as soon as `moment()` says it has
    come; returns (rc, output, whether the fault was injected)."""
    injected = threading.Event()

    def watch():
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if moment():
                inject()
                injected.set()
                return
            time.sleep(every)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        rc, output = migrate(source, target, name)
    finally:
        watcher.join()
    return rc, output, injected.is_set()


def assert_back_on_source(source, target, name, last, leftovers_before):
    assert running(source, name)
    resumes_from(source, name, last)
    assert lab_exec(target, "docker", "ps", "-aq", "--filter", f"name=^{name}$").stdout.strip() == ""
    # Nothing left behind: the source's lock and transfer files, the controller's transfer directory.
    assert not exists(source, "/var/lib/fleet-checkpoint/run.lock")
    assert not exists(source, "/var/lib/fleet-checkpoint/migrate")
    assert not exists(source, "/var/lib/fleet-checkpoint/migrate-known_hosts")
    assert controller_dirs() == leftovers_before, "the controller's transfer directory was left behind"


@pytest.mark.fault(8, "migration target unreachable or out of disk mid-transfer")
def test_a_target_lost_before_the_checkpoint_stops_the_move_with_nothing_stopped(fleet):
    """The target's SSH goes away while the move is being set up (images, the waiting restore): the run stops before
    the container stops, and gives the source back (its lock and transfer files) instead of dropping it."""
    source, target = fleet[0], fleet[1]
    clean(source)
    clean(target)
    start(source, "mover")
    wait_counting(source, ["mover"])
    pid = state(source, "mover", "{{.State.Pid}}")
    leftovers = controller_dirs()
    try:
        rc, output, injected = migrate_injecting(
            source, target, "mover",
            lambda: exists(source, "/var/lib/fleet-checkpoint/migrate"),  # the setting up has begun
            lambda: sh(target, "systemctl stop ssh.service; pkill -9 sshd-session; true"), every=0.05)
    finally:
        sh(target, "systemctl start ssh.service")
    assert injected, "the fault was not injected"
    text = json.dumps(output)
    assert rc != 0 and "could not be reached" in text and "nothing was checkpointed" in text, \
        all_failed_messages(output)
    assert state(source, "mover", "{{.State.Pid}}") == pid, "the container was stopped"
    assert not exists(source, "/var/lib/fleet-checkpoint/run.lock")
    assert not exists(source, "/var/lib/fleet-checkpoint/migrate")
    assert not exists(source, "/var/lib/fleet-checkpoint/migrate-known_hosts")
    assert controller_dirs() == leftovers, "the controller's transfer directory was left behind"
    assert lab_exec(target, "docker", "ps", "-aq", "--filter", "name=^mover$").stdout.strip() == ""
    clean(source)
    clean(target)


@pytest.mark.fault(8, "migration target unreachable or out of disk mid-transfer")
def test_a_target_lost_mid_transfer_leaves_the_container_running_on_the_source(fleet):
    source, target = fleet[0], fleet[1]
    clean(source)
    clean(target)
    start(source, "mover", command=["memhog", "512"])  # a stream of 512 MiB: time to cut it halfway
    wait_counting(source, ["mover"])
    leftovers = controller_dirs()
    try:
        # Once the checkpoint's memory is arriving on the target (the container is frozen), the target's SSH goes
        # away: the relayed stream breaks mid-transfer.
        rc, output, injected = migrate_injecting(
            source, target, "mover",
            lambda: sh(target, "ls /var/lib/docker/containers/*/checkpoints/.*.fleet-import/pages-*",
                       check=False).returncode == 0,
            lambda: sh(target, "systemctl stop ssh.service; pkill -9 sshd-session; true"))
    finally:
        sh(target, "systemctl start ssh.service")
    assert injected, "the fault was not injected"
    assert rc != 0
    assert "NOT moved" in json.dumps(output), all_failed_messages(output)
    numbers = counts(source, "mover")
    assert running(source, "mover") and not broken(numbers), f"the count broke on the source: {broken(numbers)[:3]}"
    assert_back_on_source(source, target, "mover", numbers[-1], leftovers)
    # The target could not be told: it keeps this run's lock (it expires, or fleet_checkpoint_break_lock takes it).
    assert exists(target, "/var/lib/fleet-checkpoint/run.lock")
    assert not exists(target, "/var/lib/fleet-checkpoint/migrate")
    clean(source)
    clean(target)


@pytest.mark.fault(8, "migration target unreachable or out of disk mid-transfer")
def test_a_target_out_of_disk_leaves_the_container_running_on_the_source(fleet):
    source, target = fleet[0], fleet[2]
    clean(source)
    clean(target)
    start(source, "mover", command=["memhog", "64"])
    wait_counting(source, ["mover"])
    # The filesystem that receives the checkpoint (Docker's containers directory) holds 4 MiB: the stream of a 64 MiB
    # checkpoint fills it halfway (the free-space check looks at Docker's root directory, which has room).
    leftovers = controller_dirs()
    last = counts(source, "mover")[-1]
    rc, output = migrate_into_a_small_disk(source, target, "mover", "4m")
    assert rc != 0
    report = json.dumps(output)
    assert "NOT moved" in report and "No space left on device" in report, all_failed_messages(output)
    assert_back_on_source(source, target, "mover", last, leftovers)
    assert not exists(target, "/var/lib/fleet-checkpoint/run.lock")
    clean(source)
    clean(target)


@pytest.mark.fault(8, "migration target unreachable or out of disk mid-transfer")
def test_a_target_disk_that_fills_with_the_disk_state_leaves_the_container_running_on_the_source(fleet):
    """The volume's 64 MiB go ahead of the freeze (the pre-copy) into a target directory that holds 8 MiB: the
    receive fails while the container still runs on the source - it is never frozen - and the target keeps neither
    the container nor the volume made for it."""
    source, target = fleet[0], fleet[2]
    clean(source)
    clean(target)
    for host in (source, target):
        lab_exec(host, "docker", "volume", "rm", "-f", "mover-data", check=False)
    lab_exec(source, "docker", "run", "--rm", "-v", "mover-data:/data", IMAGE, "sh", "-c",
             "head -c 67108864 /dev/urandom > /data/blob")
    start(source, "mover", "-v", "mover-data:/data")
    wait_counting(source, ["mover"])
    pid = lab_exec(source, "docker", "inspect", "-f", "{{.State.Pid}}", "mover").stdout.strip()
    leftovers = controller_dirs()
    rc, output = migrate_into_a_small_disk(source, target, "mover", "8m")
    assert rc != 0
    report = json.dumps(output)
    assert "NOT moved" in report and "No space left on device" in report, all_failed_messages(output)
    assert "ahead failed, so nothing was checkpointed and the container was not touched" in report, \
        all_failed_messages(output)
    # Never frozen: the same process, counting on.
    assert lab_exec(source, "docker", "inspect", "-f", "{{.State.Pid}}", "mover").stdout.strip() == pid
    assert_back_on_source(source, target, "mover", counts(source, "mover")[-1] - 1, leftovers)
    assert lab_exec(target, "docker", "volume", "ls", "-q", "--filter", "name=^mover-data$").stdout.strip() == ""
    assert not exists(target, "/var/lib/fleet-checkpoint/run.lock")
    clean(source)
    clean(target)
    for host in (source, target):
        lab_exec(host, "docker", "volume", "rm", "-f", "mover-data", check=False)


SLOW_RESTORE = '#!/bin/sh\n[ "$1" = swrk ] && { touch /run/fleet-restore-begun; sleep 6; }\nexec "$0.real" "$@"\n'


@pytest.mark.fault(2, "Docker daemon killed in the middle of a restore")
def test_a_migration_target_whose_docker_dies_mid_restore_leaves_nothing_there(fleet):
    """The target's dockerd is killed while it restores the moved container (CRIU held 6 s at its start, so the kill
    lands inside the restore; containerd may still finish it behind the dead daemon). The container runs on the
    source again, restored; on the target, once systemd has brought Docker back, nothing is left - no container, no
    volume, no copy of the workload running under an orphaned shim."""
    source, target = fleet[0], fleet[2]
    clean(source)
    clean(target)
    for host in (source, target):
        lab_exec(host, "docker", "volume", "rm", "-f", "mover-data", check=False)
    start(source, "mover", "-v", "mover-data:/data", command=["memhog", "64"])
    wait_counting(source, ["mover"])
    sh(target, "rm -f /run/fleet-restore-begun; criu=$(command -v criu) && mv \"$criu\" \"$criu.real\" && "
               f"cat > \"$criu\" <<'EOF'\n{SLOW_RESTORE}EOF\nchmod 755 \"$criu\"")
    leftovers = controller_dirs()
    try:
        rc, output, killed = migrate_injecting(
            source, target, "mover", lambda: exists(target, "/run/fleet-restore-begun"),
            lambda: sh(target, f"{FORGET_STARTS}; systemctl kill -s KILL docker.service"), seconds=240, every=0.2)
    finally:
        sh(target, 'criu=$(command -v criu) && [ -e "$criu.real" ] && mv "$criu.real" "$criu"; '
                   'rm -f /run/fleet-restore-begun; true')
        docker_up(target)
    assert killed, "the fault was not injected"
    assert rc != 0 and "NOT moved" in json.dumps(output), all_failed_messages(output)
    # The target's restore cleaned up behind itself once Docker was back (the container, the volume made for it,
    # and the copy containerd may have restored without the daemon).
    assert "the container created for it" in all_failed_messages(output) and "removed again" in \
        all_failed_messages(output), all_failed_messages(output)
    numbers = counts(source, "mover")
    assert running(source, "mover") and not broken(numbers), f"the count broke on the source: {broken(numbers)[:3]}"
    assert_back_on_source(source, target, "mover", numbers[-1], leftovers)
    assert lab_exec(target, "docker", "volume", "ls", "-q", "--filter", "name=^mover-data$").stdout.strip() == ""
    assert sh(target, "pgrep -x memhog", check=False).stdout.strip() == "", "a copy of the workload runs on the target"
    clean(source)
    clean(target)
    for host in (source, target):
        lab_exec(host, "docker", "volume", "rm", "-f", "mover-data", check=False)


# The target's receive (the module under async_wrapper, not the wrapper: its result must still be written) is held
# as soon as Docker shows the moved container running, and killed: a receive that never reports.
KILL_ON_START = (pathlib.Path(__file__).parent / "kill_on_start.py").read_text()


@pytest.mark.fault(9, "the target's restore killed before it reports")
def test_a_target_restore_killed_after_the_start_leaves_one_copy_on_the_source(fleet):
    """The target's module dies after Docker started the moved container there, before it could say so: the playbook
    knows nothing of what it created, yet the container must not run on both hosts. The copy on the target is
    removed by name (no container had that name there before the move) and the container runs on the source again,
    restored from the checkpoint it kept."""
    source, target = fleet[0], fleet[1]
    clean(source)
    clean(target)
    start(source, "mover")
    wait_counting(source, ["mover"])
    leftovers = controller_dirs()
    said = {}
    killer = threading.Thread(target=lambda: said.update(
        out=lab_exec(target, "python3", "-c", KILL_ON_START, "mover", check=False).stdout))
    killer.start()
    try:
        rc, output = migrate(source, target, "mover")
    finally:
        killer.join(150)
    assert "running=true" in said.get("out", "") and "killed" in said["out"], said
    assert rc != 0 and "NOT moved" in json.dumps(output), all_failed_messages(output)
    numbers = counts(source, "mover")
    assert running(source, "mover") and not broken(numbers), f"the count broke on the source: {broken(numbers)[:3]}"
    assert_back_on_source(source, target, "mover", numbers[-1], leftovers)
    assert sh(target, "pgrep -f '[c]ounter'", check=False).stdout.strip() == "", "a copy of the workload runs there"
    clean(source)
    clean(target)
