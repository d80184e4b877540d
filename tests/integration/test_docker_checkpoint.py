"""docker_checkpoint and docker_checkpoint_info on the real lab fleet: Docker 26.1.5, CRIU 4.2.1, systemd, SSH.

The workload is an in-memory counter (tests/lab/workload/counter) printing one number per tick: a restored
container continues from its last number; a cold-started one starts again at 1. Every restore below checks that.
"""

import gzip
import hashlib
import io
import json
import os
import tarfile
import time

import pytest
import yaml

from conftest import (ROOT, ansible_adhoc, ansible_playbook, as_shipped, counts, lab_exec, lab_turn, on_hosts, ready, run,
                      run_module, sh)

MODULE = "fleet.checkpoint.docker_checkpoint"
INFO = "fleet.checkpoint.docker_checkpoint_info"
IMAGE = "fleet-lab-workload:busybox"
INSTALL = ROOT / "playbooks" / "install.yml"
ARCHIVES = "/var/lib/fleet-checkpoint/archives"


# -- helpers ---------------------------------------------------------------------------------------------------------
def module(host, check=False, diff=False, **args):
    return run_module(host, MODULE, check=check, diff=diff, **args)


def ok(result):
    assert not result.get("failed"), json.dumps(result, indent=1)[-4000:]
    return result


def only(result):
    assert len(result["results"]) == 1, result
    return result["results"][0]


def start_counter(host, name, *options, command=()):
    lab_exec(host, "docker", "rm", "-f", name, check=False)
    lab_exec(host, "docker", "run", "-d", "--name", name, "-e", "COUNTER_INTERVAL=0.2", *options, IMAGE, *command)
    wait_count(host, name, 5)


def wait_count(host, name, at_least, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        numbers = counts(host, name)
        if numbers and numbers[-1] >= at_least:
            return numbers
        assert time.monotonic() < deadline, f"{name} on {host} did not count to {at_least}: {numbers[-5:]}"
        time.sleep(0.3)


def inspect(host, name, fmt):
    return lab_exec(host, "docker", "inspect", "-f", fmt, name).stdout.strip()


def running(host, name):
    return inspect(host, name, "{{.State.Running}}") == "true"


def policy(host, name):
    return inspect(host, name, "{{.HostConfig.RestartPolicy.Name}}")


def checkpoint_path(host, name, checkpoint):
    cid = inspect(host, name, "{{.Id}}")
    return f"/var/lib/docker/containers/{cid}/checkpoints/{checkpoint}"


def exists(host, path):
    return lab_exec(host, "test", "-e", path, check=False).returncode == 0


def assert_continued(host, name, before):
    """After a restore of a container stopped by its checkpoint: the next number is the last one plus one."""
    after = wait_count(host, name, before[-1] + 3)
    new = after[len(before):]
    assert new and new[0] == before[-1] + 1, f"{name}: counted {before[-3:]} then {new[:5]} (not a continuation)"


def snapshot(host):
    """Everything a failed call must leave as it was: containers (state, PID, policy), checkpoints, archives."""
    return sh(host, "for c in $(docker ps -aq); do docker inspect -f "
                    "'{{.Name}} {{.State.Status}} {{.State.Pid}} {{.HostConfig.RestartPolicy.Name}}' $c; done | sort; "
                    "find /var/lib/docker/containers -path '*/checkpoints*' | sort; "
                    f"find {ARCHIVES} /root/bad 2>/dev/null | sort").stdout


def experimental_only(host):
    """A host as shipped, then experimental mode on (no CRIU)."""
    as_shipped(host)
    assert not run_module(host, "fleet.checkpoint.docker_experimental").get("failed")


@pytest.fixture(scope="module")
def hosts(lab, trixie_hosts):
    """Hosts 1 and 2 with CRIU (criu role, lab overrides) and experimental mode, shared (conftest.ready); host 3 with
    experimental mode only; the bookworm host as shipped (neither). All made at once."""
    first, second, third = trixie_hosts[:3]
    bookworm = [host for host in lab if host not in trixie_hosts]
    with lab_turn():
        on_hosts(lambda action: action(), [lambda: ready((first, second)), lambda: experimental_only(third)]
                 + [lambda host=host: as_shipped(host) for host in bookworm])
    return first, second, third


# -- create and restore ----------------------------------------------------------------------------------------------
def test_checkpoint_and_restore_in_place_with_check_mode_diff_and_idempotency(hosts):
    host = hosts[0]
    start_counter(host, "inplace")
    pid = inspect(host, "inplace", "{{.State.Pid}}")

    predicted = only(ok(module(host, check=True, diff=True, container="inplace", name="cp1")))
    assert predicted["changed"] and predicted["action"] == "created"
    assert running(host, "inplace") and inspect(host, "inplace", "{{.State.Pid}}") == pid
    assert not exists(host, checkpoint_path(host, "inplace", "cp1"))

    result = ok(module(host, diff=True, container="inplace", name="cp1"))
    made = only(result)
    assert made["changed"] and made["stopped"] and made["method"] == "containerd", made
    assert made["containerd_client"] == "direct", made  # the module's own Tasks.Checkpoint call, not ctr
    assert result["diff"]["before"]["inplace"] == {"checkpoint": "absent", "running": True}
    assert not running(host, "inplace")
    before = counts(host, "inplace")
    path = checkpoint_path(host, "inplace", "cp1")
    assert sh(host, f"stat -c %a {path}; find {path} -type f ! -perm 600 | wc -l").stdout.split() == ["700", "0"]

    again = only(ok(module(host, container="inplace", name="cp1")))
    assert not again["changed"]

    assert only(ok(module(host, check=True, container="inplace", name="cp1", state="restored")))["changed"]
    assert not running(host, "inplace")

    restored = only(ok(module(host, container="inplace", name="cp1", state="restored")))
    assert restored["changed"] and restored["resumed"] is True, restored
    assert restored["restore_path"] == "linked" and restored["restore_call_seconds"] > 0, restored
    assert_continued(host, "inplace", before)
    assert_pages_in_place(host, path)

    again = only(ok(module(host, container="inplace", name="cp1", state="restored")))
    assert not again["changed"] and "already running" in again["msg"]


def test_leave_running_then_rewind_with_force(hosts):
    host = hosts[0]
    start_counter(host, "rewind")
    pid = inspect(host, "rewind", "{{.State.Pid}}")
    low = counts(host, "rewind")[-1]
    made = only(ok(module(host, container="rewind", name="snap", leave_running=True)))
    high = counts(host, "rewind")[-1]
    assert made["changed"] and made["leave_running"] and not made["stopped"]
    assert made["method"] == "containerd" and made["containerd_client"] == "direct", made
    assert running(host, "rewind") and inspect(host, "rewind", "{{.State.Pid}}") == pid
    wait_count(host, "rewind", high + 10)

    assert only(ok(module(host, check=True, container="rewind", name="snap", state="restored", force=True)))["changed"]
    assert inspect(host, "rewind", "{{.State.Pid}}") == pid

    assert only(ok(module(host, container="rewind", name="snap", state="restored", force=True)))["resumed"] is True
    time.sleep(1)
    numbers = counts(host, "rewind")
    drops = [index for index in range(1, len(numbers)) if numbers[index] <= numbers[index - 1]]
    assert len(drops) == 1, f"expected one step back in {numbers}"
    first = numbers[drops[0]]
    assert low < first <= high + 1, f"rewound to {first}, the checkpoint was taken between {low} and {high}"


def test_restore_into_a_new_container_on_the_same_host(hosts):
    host = hosts[0]
    start_counter(host, "origin")
    ok(module(host, container="origin", name="clone"))
    before = counts(host, "origin")
    lab_exec(host, "docker", "rm", "-f", "copy", check=False)
    lab_exec(host, "docker", "create", "--name", "copy", "-e", "COUNTER_INTERVAL=0.2", IMAGE)

    assert only(ok(module(host, check=True, container="origin", target="copy", name="clone",
                          state="restored")))["changed"]
    assert not exists(host, checkpoint_path(host, "copy", "clone"))

    result = only(ok(module(host, container="origin", target="copy", name="clone", state="restored")))
    assert result["resumed"] is True and result["container"] == "copy" and result["source"] == "origin"
    assert wait_count(host, "copy", before[-1] + 1)[0] == before[-1] + 1
    assert not running(host, "origin")
    assert not only(ok(module(host, container="origin", target="copy", name="clone", state="restored")))["changed"]


def assert_pages_in_place(host, path):
    """After a restore: no link left in the checkpoint, no side directory, no unpacked copy of containerd's."""
    side = os.path.join(os.path.dirname(os.path.dirname(path)), ".fleet-pages-" + os.path.basename(path))
    out = sh(host, f"find {path} -type l | wc -l; find {path} -name 'pages-*.img' -type f ! -perm 600 | wc -l; "
                   f"find /tmp -maxdepth 2 -lname '*{side.lstrip('/')}*' | wc -l; "
                   f"find {path} -name 'pages-*.img' -type f | wc -l; test -e {side} && echo side-left || true"
             ).stdout.split()
    assert out[:3] == ["0", "0", "0"] and int(out[3]) >= 1 and "side-left" not in out, out


def test_fast_restore_can_be_turned_off_and_an_interrupted_one_is_repaired(hosts):
    """method=api lets Docker copy the pages; a run killed while the pages were linked is repaired by the next one."""
    host = hosts[0]
    start_counter(host, "links")
    ok(module(host, container="links", name="l1"))
    before = counts(host, "links")
    copies = "ls -d /tmp/ctrd-checkpoint* 2>/dev/null | wc -l"
    copies_before = sh(host, copies).stdout.strip()
    assert only(ok(module(host, container="links", name="l1", state="restored", method="api")))[
        "restore_path"] == "copied"
    assert_continued(host, "links", before)
    # containerd's unpacked copy of the whole checkpoint (which it never removes) is gone too.
    assert sh(host, copies).stdout.strip() == copies_before
    ok(module(host, container="links", name="l2"))
    path = checkpoint_path(host, "links", "l2")
    side = os.path.join(os.path.dirname(os.path.dirname(path)), ".fleet-pages-l2")
    # What an interrupted fast restore leaves: the pages aside, links in their place (one of them not made yet).
    sh(host, f"mkdir -m 700 {side} && for f in {path}/pages-*.img; do mv $f {side}/; done && "
             f"ln -s {side}/pages-1.img {path}/pages-1.img")
    before = counts(host, "links")
    restored = only(ok(module(host, container="links", name="l2", state="restored")))
    assert restored["resumed"] is True and restored["restore_path"] == "linked", restored
    assert_continued(host, "links", before)
    assert_pages_in_place(host, path)


def test_dump_paths_api_and_containerd_both_restore(hosts):
    host = hosts[0]
    for method in ("api", "containerd"):
        name = f"via-{method}"
        start_counter(host, name)
        made = only(ok(module(host, container=name, name="mm", method=method)))
        assert made["method"] == method, made
        before = counts(host, name)
        assert only(ok(module(host, container=name, name="mm", state="restored")))["resumed"] is True
        assert_continued(host, name, before)


GRPC_PROBE = """
import json, os, sys
sys.path.insert(0, "/root/grpc-probe")
from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd import grpc as grpc
sock = next(path for path in ("/run/containerd/containerd.sock", "/var/run/docker/containerd/containerd.sock")
            if os.path.exists(path))
try:
    grpc.checkpoint(sock, "moby", "no-such-task-" + sys.argv[1], "/root/never", exit_task=True, timeout=30)
    print(json.dumps({"answer": "ok"}))
except grpc.GrpcError as exc:
    print(json.dumps({"answer": type(exc).__name__, "code": exc.code, "message": exc.grpc_message}))
"""


def test_the_direct_containerd_client_reads_a_real_error_answer(hosts):
    """containerd's own answer to a checkpoint of a task it does not have: a gRPC status, read through our HTTP/2 and
    HPACK (Go's server sends Huffman-coded, indexed headers), not a protocol error."""
    host = hosts[0]
    utils = "/root/grpc-probe/ansible_collections/fleet/checkpoint/plugins/module_utils"
    lab_exec(host, "mkdir", "-p", f"{utils}/_containerd")
    for name in ("_containerd/grpc.py", "_containerd/hpack.py"):  # the client alone, as a module would ship it
        run(["docker", "cp", str(ROOT / "plugins" / "module_utils" / name), f"{host}:{utils}/{name}"])
    first = json.loads(lab_exec(host, "python3", "-c", GRPC_PROBE, "a").stdout)
    assert first["answer"] == "GrpcError" and first["code"] == 5 and "not found" in first["message"], first
    second = json.loads(lab_exec(host, "python3", "-c", GRPC_PROBE, "b").stdout)  # a fresh connection, same answer
    assert second["answer"] == "GrpcError" and second["code"] == 5, second
    assert not exists(host, "/root/never")


def test_listening_tcp_socket_is_checkpointed_and_serves_after_restore(hosts):
    host = hosts[0]
    serve = "mkdir -p /www && echo fleet > /www/index.html && httpd -p 8080 -h /www && exec counter"
    start_counter(host, "web", command=["sh", "-c", serve])
    address = inspect(host, "web", "{{.NetworkSettings.IPAddress}}")
    assert lab_exec(host, "docker", "exec", "web", "wget", "-qO-", "http://127.0.0.1:8080/").stdout.strip() == "fleet"
    ok(module(host, container="web", name="tcp"))
    before = counts(host, "web")
    assert only(ok(module(host, container="web", name="tcp", state="restored")))["resumed"] is True
    assert_continued(host, "web", before)
    assert lab_exec(host, "docker", "exec", "web", "wget", "-qO-", f"http://{address}:8080/").stdout.strip() == "fleet"


def test_a_container_named_twice_is_handled_once(hosts):
    host = hosts[0]
    start_counter(host, "twice")
    short_id = inspect(host, "twice", "{{.Id}}")[:12]
    result = ok(module(host, containers=["twice", short_id], name="once", leave_running=True))
    assert [item["container"] for item in result["results"]] == ["twice"]
    assert running(host, "twice")


def test_absent_and_retention(hosts):
    host = hosts[0]
    start_counter(host, "keep")
    for index in range(3):
        ok(module(host, container="keep", name=f"k{index}", leave_running=True, keep_last=2))
    listed = ok(run_module(host, INFO, container="keep"))["containers"][0]["checkpoints"]
    assert [item["name"] for item in listed] == ["k1", "k2"]
    assert all(item["managed"] and item["method"] == "containerd" for item in listed)

    assert only(ok(module(host, check=True, container="keep", name="k1", state="absent")))["changed"]
    assert exists(host, checkpoint_path(host, "keep", "k1"))
    assert only(ok(module(host, container="keep", name="k1", state="absent")))["changed"]
    assert not exists(host, checkpoint_path(host, "keep", "k1"))
    assert not only(ok(module(host, container="keep", name="k1", state="absent")))["changed"]


# -- many containers -------------------------------------------------------------------------------------------------
def test_all_running_checkpoints_and_restores_five_containers_in_one_call(hosts):
    host = hosts[1]
    names = [f"fleet-{index}" for index in range(5)]
    for name in names:
        start_counter(host, name, "--label", "batch=five", "--restart", "unless-stopped")
    start_counter(host, "bystander")
    bystander_pid = inspect(host, "bystander", "{{.State.Pid}}")

    args = dict(all_running=True, filters={"label": ["batch=five"]}, name="batch")
    predicted = ok(module(host, check=True, **args))
    assert sorted(item["container"] for item in predicted["results"]) == names
    assert all(running(host, name) for name in names)

    result = ok(module(host, **args))
    assert sorted(item["container"] for item in result["results"]) == names
    assert all(item["changed"] and item["stopped"] for item in result["results"])
    assert not any(running(host, name) for name in names)
    assert {policy(host, name) for name in names} == {"no"}
    assert inspect(host, "bystander", "{{.State.Pid}}") == bystander_pid
    before = {name: counts(host, name) for name in names}
    assert not ok(module(host, **args))["changed"]

    restore = dict(args, state="restored")
    result = ok(module(host, **restore))
    assert sorted(item["container"] for item in result["results"]) == names
    assert all(item["resumed"] is True for item in result["results"]), result
    for name in names:
        assert_continued(host, name, before[name])
        assert policy(host, name) == "unless-stopped"
    assert not ok(module(host, **restore))["changed"]


# -- across hosts ----------------------------------------------------------------------------------------------------
def carry(source, destination, path, tmp_path):
    local = tmp_path / "archive"
    run(["docker", "cp", f"{source}:{path}", str(local)])
    sh(destination, f"mkdir -p -m 0700 {ARCHIVES}")
    run(["docker", "cp", str(local), f"{destination}:{path}"])


def test_export_on_one_host_import_and_restore_on_another(hosts, tmp_path):
    first, second = hosts[0], hosts[1]
    start_counter(first, "mover", "--restart", "unless-stopped")
    ok(module(first, container="mover", name="move"))
    before = counts(first, "mover")
    archive = f"{ARCHIVES}/mover-move.tar.zst"

    assert only(ok(module(first, check=True, container="mover", name="move", state="exported",
                          archive_path=archive)))["changed"]
    assert not exists(first, archive)
    exported = only(ok(module(first, container="mover", name="move", state="exported", archive_path=archive)))
    assert exported["changed"] and len(exported["sha256"]) == 64
    assert sh(first, f"stat -c %a {archive}; stat -c %a {ARCHIVES}").stdout.split() == ["600", "700"]
    assert not only(ok(module(first, container="mover", name="move", state="exported",
                              archive_path=archive)))["changed"]

    carry(first, second, archive, tmp_path)
    lab_exec(second, "docker", "rm", "-f", "mover", check=False)
    lab_exec(second, "docker", "create", "--name", "mover", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    args = dict(container="mover", name="move", archive_path=archive)
    checked = only(ok(module(second, check=True, state="imported", **args)))
    assert checked["changed"] and checked["manifest"]["container"]["restart_policy"]["Name"] == "unless-stopped"
    assert not exists(second, checkpoint_path(second, "mover", "move"))
    assert only(ok(module(second, state="imported", **args)))["changed"]
    assert not only(ok(module(second, state="imported", **args)))["changed"]

    restored = only(ok(module(second, container="mover", name="move", state="restored")))
    assert restored["resumed"] is True and restored["restart_policy_restored"]["Name"] == "unless-stopped"
    assert wait_count(second, "mover", before[-1] + 1)[0] == before[-1] + 1
    assert policy(second, "mover") == "unless-stopped"

    # The same in one step, gzip this time: restored straight from an archive directory.
    ok(module(first, container="mover", name="move", state="exported", archive_dir=ARCHIVES, compression="gzip"))
    carry(first, second, f"{ARCHIVES}/mover-move.tar.gz", tmp_path)
    lab_exec(second, "docker", "rm", "-f", "mover", check=False)
    lab_exec(second, "docker", "create", "--name", "mover", "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    sh(second, f"rm -f {archive}")
    restored = only(ok(module(second, container="mover", name="move", state="restored", archive_dir=ARCHIVES)))
    assert restored["imported"] and restored["resumed"] is True
    assert wait_count(second, "mover", before[-1] + 1)[0] == before[-1] + 1
    assert not only(ok(module(second, container="mover", name="move", state="restored",
                              archive_dir=ARCHIVES)))["changed"]


# -- traps -----------------------------------------------------------------------------------------------------------
def test_unless_stopped_container_survives_a_reboot_as_a_checkpoint_and_restores(hosts):
    host = hosts[0]
    start_counter(host, "reboot-me", "--restart", "unless-stopped")
    made = only(ok(module(host, container="reboot-me", name="pre-reboot")))
    assert made["restart_policy"]["Name"] == "unless-stopped" and policy(host, "reboot-me") == "no"
    before = counts(host, "reboot-me")

    rebooted = ansible_adhoc(host, "ansible.builtin.reboot", "reboot_command='systemctl reboot' reboot_timeout=180 "
                                                             "boot_time_command='{{ fleet_checkpoint_reboot_boot_time_command }}'")
    assert rebooted[host].get("rebooted") is True, rebooted[host]
    deadline = time.monotonic() + 60
    while lab_exec(host, "docker", "info", check=False).returncode != 0:
        assert time.monotonic() < deadline, "docker did not come back after the reboot"
        time.sleep(1)
    time.sleep(2)
    assert not running(host, "reboot-me"), "the daemon cold-started the checkpointed container after the reboot"
    assert counts(host, "reboot-me") == before

    restored = only(ok(module(host, container="reboot-me", name="pre-reboot", state="restored")))
    assert restored["resumed"] is True
    assert_continued(host, "reboot-me", before)
    assert policy(host, "reboot-me") == "unless-stopped"


def test_live_restored_container_is_really_stopped_and_restores(hosts):
    host = hosts[1]
    start_counter(host, "survivor")
    assert not run_module(host, "fleet.checkpoint.docker_experimental", live_restore=True).get("failed")
    pid = inspect(host, "survivor", "{{.State.Pid}}")
    sh(host, "systemctl reset-failed docker.service docker.socket; systemctl restart docker.service")
    assert inspect(host, "survivor", "{{.State.Pid}}") == pid, "live-restore did not keep the container"

    made = only(ok(module(host, container="survivor", name="after-restart", method="api")))
    assert made.get("live_restored") is True and made["method"] == "containerd", made
    assert made["containerd_client"] == "direct", made
    assert not running(host, "survivor")
    before = counts(host, "survivor")
    assert only(ok(module(host, container="survivor", name="after-restart", state="restored")))["resumed"] is True
    assert_continued(host, "survivor", before)


def test_info_reports_restorability(hosts):
    first, third = hosts[0], hosts[2]
    start_counter(first, "info-probe")
    ok(module(first, container="info-probe", name="i1", leave_running=True))
    listed = ok(run_module(first, INFO, name="i1"))
    assert listed["host"]["criu"] and listed["host"]["experimental"]
    entry = [item for item in listed["containers"] if item["name"] == "info-probe"][0]
    checkpoint = entry["checkpoints"][0]
    assert checkpoint["restorable"] is False and "running" in checkpoint["not_restorable_because"][0]
    assert checkpoint["size"] > 0 and checkpoint["restart_policy"]["Name"] == "no"
    lab_exec(first, "docker", "stop", "-t", "1", "info-probe")
    checkpoint = ok(run_module(first, INFO, container="info-probe"))["containers"][0]["checkpoints"][0]
    assert checkpoint["restorable"] is True, checkpoint

    third_view = ok(run_module(third, INFO))
    assert third_view["host"]["criu"] is None and third_view["changed"] is False


INSIDE = ("mkdir -p /www /data && echo fleet > /www/index.html && echo kept > /data/app.log && httpd -p 8080 -h /www "
          "&& (sleep 100000 | nc -l -p 9000 >/dev/null &) && sleep 0.5 && (sleep 100001 | nc 127.0.0.1 9000 &) "
          "&& exec 3</data/app.log && exec counter")


def test_info_details_show_what_a_checkpoint_holds_and_a_missing_file(hosts):
    """Real checkpoints read with the real crit: a web server with a TCP connection and an open file, and a 32 MiB
    memory workload. The open file removed after the dump makes the checkpoint not restorable, naming it; put back,
    the checkpoint restores (the counter goes on)."""
    host = hosts[0]
    start_counter(host, "inside", command=["sh", "-c", INSIDE])
    start_counter(host, "hog", command=["memhog", "32"])
    low = counts(host, "inside")[-1]
    ok(module(host, containers=["inside", "hog"], name="look", leave_running=True))
    high = counts(host, "inside")[-1]
    lab_exec(host, "docker", "exec", "inside", "rm", "/data/app.log")
    lab_exec(host, "docker", "stop", "-t", "1", "inside")
    listed = ok(run_module(host, INFO, containers=["inside", "hog"], name="look", details=True))
    assert listed["changed"] is False
    inside, hog = (entry["checkpoints"][0] for entry in listed["containers"])
    details = inside["details"]
    assert "problem" not in details, details
    commands = {item["cmdline"] for item in details["processes"]}
    assert {"/bin/sh /usr/local/bin/counter", "httpd -p 8080 -h /www", "nc -l -p 9000", "nc 127.0.0.1 9000",
            "sleep 100000", "sleep 100001"} <= commands, details["processes"]
    first = details["processes"][0]
    assert (first["pid"], first["ppid"], first["command"]) == (1, 0, "counter") and first["memory_bytes"] > 0
    files = {item["path"]: item for item in details["files"]}
    assert files["/data/app.log"]["exists"] is False and "1: fd 3" in files["/data/app.log"]["used_as"], files
    assert files["/bin/busybox"]["exists"] is True and files["/bin/busybox"]["filesystem"] == "overlay"
    sockets = details["sockets"]
    assert ("listen", "[::]:8080") in {(item["state"], item["local"]) for item in sockets}, sockets
    # Both ends of the one connection (the accepting end IPv4-mapped: busybox listens on ::, and nc -l closes its
    # listening socket once it accepted).
    established = [item for item in sockets if item["state"] == "established"]
    ports = [{item[end].rsplit(":", 1)[1] for item in established} for end in ("local", "remote")]
    assert len(established) == 2 and ports[0] == ports[1] and "9000" in ports[0], sockets
    assert {"/", "/proc"} <= {item["mountpoint"] for item in details["mounts"]}
    assert {"pid", "mnt", "ipc", "uts"} <= set(details["namespaces"])
    assert details["versions"]["criu"] and details["stats"]["pages_written"] > 0, details  # (method auto: containerd)
    assert exists(host, inside["path"] + "/cpuinfo.img")  # (checked by criu cpuinfo check: the same CPU here)
    assert inside["restorable"] is False and any(
        reason.startswith("/data/app.log is missing here") for reason in inside["not_restorable_because"]), inside
    hog_process = hog["details"]["processes"][-1]
    assert hog_process["cmdline"] == "memhog 32" and hog_process["memory_bytes"] >= 32 * 1024 * 1024, \
        hog["details"]["processes"]
    assert hog["restorable"] is False  # (running: leave_running)

    sh(host, "echo kept > /tmp/app.log && docker cp /tmp/app.log inside:/data/app.log")
    again = ok(run_module(host, INFO, container="inside", name="look", details=True))["containers"][0]["checkpoints"]
    assert again[0]["restorable"] is True, again[0]["not_restorable_because"]
    before = counts(host, "inside")
    assert only(ok(module(host, container="inside", name="look", state="restored")))["action"] == "restored"
    deadline = time.monotonic() + 20
    while len(counts(host, "inside")) < len(before) + 3:
        assert time.monotonic() < deadline, counts(host, "inside")[-5:]
        time.sleep(0.3)
    after = counts(host, "inside")
    # It goes on from the checkpoint (taken while it counted from low to high), not from 1.
    assert low < after[len(before)] <= high + 1, (low, high, after[len(before):][:5])
    lab_exec(host, "docker", "rm", "-f", "inside", "hog")


def test_an_export_in_podman_s_layout_is_read_by_checkpointctl(hosts):
    """archive_layout=podman: Debian's checkpointctl (1.3) shows and inspects a Docker checkpoint; the export is
    idempotent; our own import refuses it and says what to do."""
    host = hosts[0]
    sh(host, "command -v checkpointctl >/dev/null || apt-get install -y -q --no-install-recommends checkpointctl "
             ">/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -q --no-install-recommends checkpointctl "
             ">/dev/null; }")
    start_counter(host, "ctl")
    ok(module(host, container="ctl", name="look"))
    export = dict(container="ctl", name="look", state="exported", archive_path="/root/ctl.tar.gz", compression="gzip",
                  archive_layout="podman")
    assert only(ok(module(host, **export)))["changed"] is True
    assert only(ok(module(host, **export)))["changed"] is False
    assert sh(host, "stat -c %a /root/ctl.tar.gz").stdout.strip() == "600"
    shown = sh(host, "checkpointctl show /root/ctl.tar.gz").stdout
    assert "ctl" in shown and "fleet-lab-workload:busybox" in shown and "containerd" in shown, shown
    cid = inspect(host, "ctl", "{{.Id}}")
    assert cid[:12] in shown, shown
    inspected = sh(host, "checkpointctl inspect --ps-tree --stats /root/ctl.tar.gz").stdout
    assert "counter" in inspected and "Freezing time" in inspected, inspected  # (the dump's kept statistics)
    refused = module(host, container="ctl", name="again", state="imported", archive_path="/root/ctl.tar.gz")
    assert refused.get("failed") and "archive_layout=fleet to import it" in refused["msg"], refused
    lab_exec(host, "docker", "rm", "-f", "ctl")
    sh(host, "rm -f /root/ctl.tar.gz")


# -- bad input -------------------------------------------------------------------------------------------------------
def _tar(path, entries, manifest_files=None, manifest=None):
    """A crafted archive: manifest.json first (valid unless given), then entries (name, kind, data)."""
    files = manifest_files if manifest_files is not None else {
        name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        for name, kind, data in entries if kind == "file"}
    manifest = manifest or {
        "format": "fleet.checkpoint/manifest", "format_version": 1, "checkpoint": "bad", "created": 0,
        "method": "api", "container": {"image": {}, "restart_policy": {"Name": "no"}},
        "versions": {}, "files": files, "size": sum(item["size"] for item in files.values()),
    }
    with tarfile.open(path, "w") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name, kind, payload in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, payload
                tar.addfile(info)
            elif kind == "device":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
                tar.addfile(info)


def bad_archives(tmp_path):
    good = b"pages" * 100
    crafted = {
        "traversal.tar": [("../../../../etc/fleet-evil", "file", good)],
        "absolute.tar": [("/etc/fleet-evil", "file", good)],
        "symlink.tar": [("pages-1.img", "symlink", "/etc/shadow")],
        "device.tar": [("pages-1.img", "device", None)],
    }
    for name, entries in crafted.items():
        _tar(tmp_path / name, entries, manifest_files={"pages-1.img": {"size": 500, "sha256": "0" * 64}})
    _tar(tmp_path / "corrupt.tar", [("pages-1.img", "file", good)],
         manifest_files={"pages-1.img": {"size": len(good), "sha256": "1" * 64}})
    _tar(tmp_path / "foreign.tar", [("pages-1.img", "file", good)], manifest={"format": "something/else"})
    (tmp_path / "garbage.tar").write_bytes(b"this is not a tar archive" * 40)
    # A manifest that would give its container the host: / and Docker's socket bound read-write, the host's network
    # (issue 20, finding 1). Everything else in it is valid, and the image is on the host.
    files = {"pages-1.img": {"size": len(good), "sha256": hashlib.sha256(good).hexdigest()}}
    _tar(tmp_path / "host-reach.tar", [("pages-1.img", "file", good)], manifest={
        "format": "fleet.checkpoint/manifest", "format_version": 1, "checkpoint": "bad", "created": 0,
        "method": "api", "versions": {}, "files": files, "size": len(good),
        "container": {"image": {"reference": IMAGE}, "restart_policy": {"Name": "no"}, "network_mode": "host",
                      "cmd": ["counter"], "mounts": [
                          {"type": "bind", "source": "/", "destination": "/host", "rw": True},
                          {"type": "bind", "source": "/var/run/docker.sock", "destination": "/var/run/docker.sock",
                           "rw": True}]}})
    # Size limits (issue 20, finding 2): a sparse entry, a 2 MiB pax header (gzip), a zstd bomb whose manifest lists
    # five bytes but that decompresses to 64 MiB more.
    _tar(tmp_path / "sparse.tar", [], manifest_files={"pages-1.img": {"size": 200 * 1024 * 1024, "sha256": "0" * 64}})
    with tarfile.open(tmp_path / "sparse.tar", "a") as tar:
        sparse = tarfile.TarInfo("pages-1.img")
        sparse.type = tarfile.GNUTYPE_SPARSE
        tar.addfile(sparse)
    pax = tarfile.TarInfo("././@PaxHeader")
    pax.type, pax.size = tarfile.XHDTYPE, 2 * 1024 * 1024
    (tmp_path / "pax.tar.gz").write_bytes(gzip.compress(pax.tobuf(format=tarfile.USTAR_FORMAT) + b"0" * pax.size
                                                        + bytes(1024)))
    small = {"pages-1.img": {"size": 5, "sha256": hashlib.sha256(b"pages").hexdigest()}}
    _tar(tmp_path / "bomb.tar", [("pages-1.img", "file", b"pages"), ("zeros.img", "file", bytes(64 * 1024 * 1024))],
         manifest_files=small)
    run(["zstd", "-q", "-19", str(tmp_path / "bomb.tar"), "-o", str(tmp_path / "bomb.tar.zst")])
    return sorted(crafted) + ["corrupt.tar", "foreign.tar", "garbage.tar", "host-reach.tar", "sparse.tar",
                              "pax.tar.gz", "bomb.tar.zst"]


BAD_INPUTS = [
    # (arguments, a fragment of the expected message)
    (dict(container="victim", name="a/b"), "path separator"),
    (dict(container="victim", name="../etc"), "path separator"),
    (dict(container="victim", name="x..y"), "'..'"),
    (dict(container="victim", name="has space"), "not valid"),
    (dict(container="victim", name="x"), "at least 2"),
    (dict(container="victim", name="-dash"), "start with a letter or digit"),
    (dict(container="victim", name="n" * 200), "at most 128"),
    (dict(container="no-such-container", name="cp"), "not found on this host"),
    (dict(container="bad name!", name="cp"), "not a container name or id"),
    (dict(container="sleeper", name="cp"), "needs a running container"),
    (dict(container="ephemeral", name="cp"), "--rm"),
    (dict(container="sleeper", name="missing", state="restored"), "not found for container sleeper"),
    (dict(container="victim", target="victim2", name="cp", state="restored"), "already running"),
    (dict(container="victim", target="sleeper", name="cp", state="present"), "only with state=restored"),
    (dict(containers=["victim", "sleeper"], name="cp", state="exported", archive_path="/tmp/x.tar"),
     "archive_path is for one container"),
    (dict(container="victim", name="cp", state="exported"), "needs archive_path"),
    (dict(container="sleeper", name="cp", state="imported", archive_path="/root/bad/none.tar"), "does not exist"),
    (dict(container="victim", name="cp", keep_last=0), "keep_last must be 1 or more"),
    (dict(container="victim", name="cp", max_age="soon"), "not a duration"),
    (dict(container="victim", name="cp", filters={"label": "x"}), "only with all_running"),
    (dict(container="victim", name="cp", parallel=0), "parallel must be 1 or more"),
    (dict(containers=[], name="cp"), "empty list"),
    (dict(name="cp"), "no container selected"),
    (dict(name="cp", all_running=False, state="absent"), "no container selected"),
    (dict(container="victim", all_running=True, name="cp"), "mutually exclusive"),
    (dict(container="sleeper", name="cp", state="absent", leave_running=True), "only with state=present"),
    (dict(container="victim", name="cp", docker_host="ssh://elsewhere"), "not supported"),
    (dict(container="victim", name="cp", state="exported", archive_path="/root/bad"), "is a directory"),
    # Issue 20, finding 10: one unknown name refuses the whole call (victim used to be checkpointed and stopped first);
    # a filter value of the wrong type is refused (it used to select nothing, silently).
    (dict(containers=["victim", "ghost"], name="cp"), "container 'ghost' not found on this host"),
    (dict(all_running=True, filters={"label": 5}, name="cp"), "filters.label: 5 is not a string"),
    # ... and restoring a running container from a checkpoint it does not have is an error, not ok.
    (dict(container="victim", name="missing", state="restored"), "checkpoint 'missing' not found for container victim"),
    # ... a relative path, and export's force over a file that is not an archive (issue 20, finding 9).
    (dict(container="victim", name="cp", state="exported", archive_path="victim.tar.zst"),
     "archive_path must be an absolute path"),
    (dict(container="victim", name="exp", state="exported", archive_path="/root/bad/notes.txt", force=True),
     "is not an archive"),
    # An archive in Podman's layout (issue 22) is for checkpointctl: exported only, never encrypted.
    (dict(container="sleeper", name="cp", state="imported", archive_path="/root/bad/x.tar", archive_layout="podman"),
     "archive_layout=podman is used only with state=exported"),
    (dict(container="victim", name="exp", state="exported", archive_path="/root/bad/p.tar", archive_layout="podman",
          encryption_key="a-long-enough-passphrase"), "archive_layout=podman cannot be encrypted"),
    # A post-copy move (issue 21): straight over SSH, memory only.
    (dict(container="victim", name="mv", send_to=dict(via="relay", directory="/root/bad/relay", lazy=True)),
     "send_to.lazy needs send_to.via=ssh"),
    (dict(container="victim", name="mv", send_to=dict(host="192.0.2.1", directory="/var/lib/in", lazy=True,
                                                      volumes="named")), "lazy cannot carry disk state"),
]

BAD_ARCHIVES = {
    "traversal.tar": "climbs out",
    "absolute.tar": "absolute path",
    "symlink.tar": "is a link",
    "device.tar": "device",
    "corrupt.tar": "sha256",
    "foreign.tar": "not a fleet.checkpoint archive",
    "garbage.tar": "not a readable tar archive",
    "sparse.tar": "is a sparse entry",
    "pax.tar.gz": "extended tar header of 2097152 bytes",
    "bomb.tar.zst": "its manifest accounts for",
}


@pytest.mark.bad_inputs
def test_bad_inputs_fail_clearly_and_change_nothing(hosts, tmp_path, record_bad_inputs):
    host = hosts[0]
    start_counter(host, "victim")
    start_counter(host, "victim2")
    start_counter(host, "ephemeral", "--rm")
    lab_exec(host, "docker", "rm", "-f", "sleeper", check=False)
    lab_exec(host, "docker", "create", "--name", "sleeper", IMAGE)
    names = bad_archives(tmp_path)
    sh(host, "mkdir -p -m 0700 /root/bad; echo 'not an archive' > /root/bad/notes.txt")
    ok(module(host, container="victim", name="exp", leave_running=True))  # a checkpoint to export (over notes.txt)
    for name in names:
        run(["docker", "cp", str(tmp_path / name), f"{host}:/root/bad/{name}"])
    before = snapshot(host)
    cases = list(BAD_INPUTS) + [
        (dict(container="sleeper", name="cp", state="imported", archive_path=f"/root/bad/{name}"), fragment)
        for name, fragment in BAD_ARCHIVES.items()
    ] + [(dict(container="intruder", name="bad", state="imported", archive_path="/root/bad/host-reach.tar",
               create=True),
          "its manifest asks for a bind mount of the host's / at /host (allow it with allow_bind_mounts); a bind "
          "mount of the host's /var/run/docker.sock")]
    # One playbook runs every case, in check mode and for real (one SSH session instead of 60 ad-hoc runs).
    tasks = [{"name": f"case {index}", MODULE: args, "ignore_errors": True}
             for index, (args, _fragment) in enumerate(cases)]
    playbook = tmp_path / "bad-inputs.yml"
    playbook.write_text(yaml.safe_dump([
        {"hosts": host, "gather_facts": False, "check_mode": check, "tasks": tasks} for check in (True, False)
    ]))
    output = ansible_playbook(playbook)[1]
    for play in output["plays"]:
        assert len(play["tasks"]) == len(cases)
        for (args, fragment), task in zip(cases, play["tasks"]):
            result = task["hosts"][host]
            assert result.get("failed"), f"{args} did not fail: {result}"
            assert fragment in result["msg"], f"{args}: expected {fragment!r} in {result['msg']!r}"
    assert len(output["plays"]) == 2 and len(cases) >= 30
    assert snapshot(host) == before
    assert not exists(host, "/etc/fleet-evil")
    record_bad_inputs("docker_checkpoint options and crafted archives", len(cases), len(cases))


def test_missing_prerequisites_are_named(hosts, lab):
    third = hosts[2]
    start_counter(third, "no-criu")
    result = module(third, container="no-criu", name="cp")
    assert result.get("failed") and "fleet.checkpoint.criu_install" in result["msg"], result
    assert running(third, "no-criu")
    bookworm = [host for host in lab if host.endswith("-bookworm")]
    for host in bookworm:
        result = module(host, container="anything", name="cp")
        assert result.get("failed") and "fleet.checkpoint.docker_experimental" in result["msg"], result


@pytest.mark.fault(1, "CRIU cannot dump one of the containers")
def test_criu_failure_carries_criu_log_lines_and_leaves_the_container_running(hosts):
    """An established TCP connection without tcp-established in runc.conf: CRIU refuses, and says why."""
    host = hosts[1]
    serve = "mkdir -p /www && echo fleet > /www/index.html && exec httpd -f -p 8080 -h /www"
    lab_exec(host, "docker", "rm", "-f", "tcp-server", check=False)
    lab_exec(host, "docker", "run", "-d", "--name", "tcp-server", IMAGE, "sh", "-c", serve)
    server = inspect(host, "tcp-server", "{{.NetworkSettings.IPAddress}}")
    start_counter(host, "tcp-client", "--restart", "always",
                  command=["sh", "-c", f"sleep 100000 | nc {server} 8080 & exec counter"])
    sh(host, "cp /etc/criu/runc.conf /etc/criu/runc.conf.keep && sed -i '/^tcp-established/d' /etc/criu/runc.conf")
    try:
        before = snapshot(host)
        result = module(host, container="tcp-client", name="conn")
        assert result.get("failed"), result
        assert "CRIU log" in result["msg"] and "tcp-established" in result["msg"], result["msg"]
        assert snapshot(host) == before
        assert running(host, "tcp-client") and policy(host, "tcp-client") == "always"
    finally:
        sh(host, "mv /etc/criu/runc.conf.keep /etc/criu/runc.conf")
    made = only(ok(module(host, container="tcp-client", name="conn")))
    assert made["stopped"]
    before = counts(host, "tcp-client")
    assert only(ok(module(host, container="tcp-client", name="conn", state="restored")))["resumed"] is True
    assert_continued(host, "tcp-client", before)


def test_a_dump_in_doubt_is_marked_and_refused_until_removed(hosts):
    """timeout=1 against a dump that takes longer: the module stops waiting while containerd still dumps. The
    checkpoint is then in doubt: marked, refused by a plain run, cleared by state=absent. (A forced run keeping the
    checkpoint it replaces is in the unit tests: test_dump_settle.py.) The dump is made slow for certain, not by its
    size alone (a fast machine dumped 2 GiB within the second): CRIU is stopped for 4 s as soon as it dumps."""
    host = hosts[1]
    start_counter(host, "doubt", command=["memhog", "512"])
    checkpoints = os.path.dirname(checkpoint_path(host, "doubt", "idt"))
    marker = f"{checkpoints}/.idt.fleet-in-doubt"
    # CRIU names itself "criu: dump ..." once the dump has begun (the module's own `criu --version` is left alone).
    # The watcher leaves a mark when it has stopped CRIU: without it, the test would rest on the dump's size again.
    stopped = "/run/fleet-test-criu-stopped"
    sh(host, f"rm -f {stopped}; (for i in $(seq 3000); do p=$(pgrep -f '^criu: dump') && "
             f"{{ kill -STOP $p; touch {stopped}; sleep 4; kill -CONT $p; exit 0; }}; sleep 0.01; done) "
             ">/dev/null 2>&1 & echo $! > /run/fleet-test-criu-watcher")
    try:
        result = module(host, container="doubt", name="idt", leave_running=True, timeout=1)
        assert exists(host, stopped), "the watcher did not catch CRIU's dump: the dump was not made slow"
        assert result.get("failed"), result
        assert "did not finish the checkpoint within timeout=1s" in result["msg"], result["msg"]
        sh(host, "for i in $(seq 120); do pgrep -x criu >/dev/null || exit 0; sleep 0.5; done; exit 1")  # dump done
        wait_count(host, "doubt", counts(host, "doubt")[-1] + 3)  # not left frozen: it goes on counting
        assert sh(host, f"stat -c %a {marker}").stdout.strip() == "600"

        refused = module(host, container="doubt", name="idt", leave_running=True)
        assert refused.get("failed") and "is in doubt" in refused["msg"], refused
        assert exists(host, marker)

        assert only(ok(module(host, container="doubt", name="idt", state="absent")))["changed"]
        assert not exists(host, marker) and not exists(host, f"{checkpoints}/idt")
        assert running(host, "doubt")
    finally:
        sh(host, f"kill $(cat /run/fleet-test-criu-watcher) 2>/dev/null; pkill -CONT -f '^criu: dump'; "
                 f"rm -f {stopped} /run/fleet-test-criu-watcher; true")
        lab_exec(host, "docker", "rm", "-f", "doubt", check=False)


@pytest.mark.fault(7, "two runs on the same host at once")
def test_a_second_run_waits_for_the_first_and_refuses_after_lock_timeout(hosts):
    host = hosts[0]
    start_counter(host, "locked")
    # Hold the host's lock the way a running docker_checkpoint does (flock), for 60 s, in the background.
    sh(host, "mkdir -p -m 0700 /var/lib/fleet-checkpoint; "
             "(flock /var/lib/fleet-checkpoint/lock sleep 61 >/dev/null 2>&1 &) ; sleep 0.5")
    try:
        result = module(host, container="locked", name="cp", lock_timeout=2)
        assert result.get("failed") and "another fleet.checkpoint run holds" in result["msg"], result
        assert running(host, "locked") and not exists(host, checkpoint_path(host, "locked", "cp"))
        assert only(ok(module(host, check=True, container="locked", name="cp", lock_timeout=2)))["changed"]
    finally:
        sh(host, "pkill -f '^flock /var/lib/fleet-checkpoint/lock'; pkill -x -f 'sleep 61'; true")
    assert only(ok(module(host, container="locked", name="cp", leave_running=True, lock_timeout=5)))["changed"]
