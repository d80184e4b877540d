# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A stopping dump through containerd returns once the container's processes are gone; Docker records the exit a
moment later, and every later operation waits for that (container.settled). Real processes stand for the
container's main process; the Engine is faked."""

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import DumpInDoubt, OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd import task as containerd_task
from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd.task import DumpCutOff, DumpFailed, DumpTimedOut
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import processes as procs

CID = "c" * 64


class FakeAPI:
    """Inspect answers from a script (the last one repeated); counts them."""

    kind = "unix"

    def __init__(self, *states):
        self.states = list(states)
        self.inspects = 0

    def get(self, path):
        assert path == f"/containers/{CID}/json"
        self.inspects += 1
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"Id": CID, "Name": "/app", "State": state}


class FakeContainerd:
    """containerd's task checkpoint: ends the given process when asked to exit (as runc does after the dump)."""

    def __init__(self, process=None):
        self.process = process

    def check(self, container_id, pid):
        return ""

    def checkpoint(self, container_id, path, exit_task, timeout=None, work_path=None):
        assert container_id == CID and exit_task
        if self.process:
            self.process.kill()
        return "direct"


def host(api, containerd=None, root_dir="/nonexistent", check_mode=False):
    return HostContext(api=api, containerd=containerd, check_mode=check_mode, criu_log=None, root_dir=root_dir)


def a_dump(path, main=(None, None), stop=True):
    """A dump of checkpoint cp of CID into path, that began at time 0; main: the main process (pid, start time)."""
    return dump.Dump(CID, "cp", str(path), stop=stop, since=0, timeout=60, main_pid=main[0], main_started=main[1])


@pytest.fixture
def task_left(monkeypatch):
    """containerd still holds the container's task, with this init PID (Docker has not deleted it yet)."""
    holder = {}
    monkeypatch.setattr(containerd_task, "task_init_pid", lambda cid, state_dirs=None: holder.get("pid"))
    return holder


@pytest.fixture
def process():
    child = subprocess.Popen(["sleep", "60"])
    yield child
    child.kill()
    child.wait()


def ended_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_running_with_a_live_main_process_is_taken_as_it_is(process):
    api = FakeAPI({"Running": True, "Pid": process.pid})
    ctx = host(api)
    assert container.settled(ctx, container.inspect(ctx, CID))["State"]["Running"] is True
    assert api.inspects == 1


def test_running_with_its_main_process_gone_waits_for_docker(task_left):
    gone = task_left["pid"] = ended_pid()
    api = FakeAPI({"Running": True, "Pid": gone}, {"Running": True, "Pid": gone}, {"Running": False, "Pid": 0})
    ctx = host(api)
    assert container.settled(ctx, container.inspect(ctx, CID))["State"] == {"Running": False, "Pid": 0}
    assert api.inspects == 3


def test_the_wait_ends_when_docker_shows_another_process(task_left, process):
    gone = task_left["pid"] = ended_pid()
    api = FakeAPI({"Running": True, "Pid": gone}, {"Running": True, "Pid": process.pid})
    ctx = host(api)
    assert container.settled(ctx, container.inspect(ctx, CID))["State"]["Pid"] == process.pid
    assert api.inspects == 2


def test_a_member_paused_for_its_group_and_dumped_waits_for_docker_too(task_left):
    """consistent=true pauses every member before the dumps: until Docker catches up with the exit it says running
    AND paused (a move's send then read the container as running again, and refused to send it)."""
    gone = task_left["pid"] = ended_pid()
    api = FakeAPI({"Running": True, "Paused": True, "Pid": gone}, {"Running": True, "Paused": True, "Pid": gone},
                  {"Running": False, "Paused": False, "Pid": 0})
    ctx = host(api)
    assert container.settled(ctx, container.inspect(ctx, CID))["State"]["Running"] is False
    assert api.inspects == 3


def test_a_paused_container_whose_process_lives_is_taken_as_docker_says(task_left, process):
    api = FakeAPI({"Running": True, "Paused": True, "Pid": process.pid})
    ctx = host(api)
    assert container.settled(ctx, container.inspect(ctx, CID))["State"]["Paused"] is True
    assert api.inspects == 1


@pytest.mark.parametrize("state", [
    {"Running": True, "Restarting": True, "Pid": 0},  # Docker's restarting state
    {"Running": True, "Pid": 0},
])
def test_no_wait_without_evidence_of_an_exit_docker_has_not_recorded(task_left, state):
    state = dict(state)
    api = FakeAPI(state)
    ctx = host(api)
    assert container.settled(ctx, container.inspect(ctx, CID))["State"] == state
    assert api.inspects == 1


def test_once_containerd_has_let_the_task_go_one_more_inspect_tells(task_left):
    gone = ended_pid()  # containerd holds no task for it: Docker is recording the exit (its lock makes us wait)
    api = FakeAPI({"Running": True, "Pid": gone}, {"Running": False, "Pid": 0}, {"Running": True, "Pid": 1})
    ctx = host(api)
    assert container.settled(ctx, container.inspect(ctx, CID))["State"] == {"Running": False, "Pid": 0}
    assert api.inspects == 2
    assert task_left == {}


def test_a_checkpoint_right_after_another_sees_the_container_stopped(task_left, tmp_path):
    gone = task_left["pid"] = ended_pid()
    api = FakeAPI({"Running": True, "Pid": gone}, {"Running": False, "Status": "exited", "Pid": 0})
    ctx = host(api, root_dir=str(tmp_path))
    with pytest.raises(OpError, match="app is exited: a checkpoint needs a running container"):
        dump.present(ctx, CID, dump.DumpOptions("cp", leave_running=False, timeout=60))


def test_a_restore_right_after_the_checkpoint_is_not_taken_for_already_running(task_left, tmp_path):
    gone = task_left["pid"] = ended_pid()
    api = FakeAPI({"Running": True, "Pid": gone}, {"Running": False, "Pid": 0})
    ctx = host(api, root_dir=str(tmp_path))
    # Stopped, so the restore goes on (and finds no checkpoint here) instead of answering "already running".
    with pytest.raises(OpError, match="checkpoint 'cp' not found for container app"):
        restore.restored(ctx, CID, restore.RestoreOptions("cp", timeout=60, target=None, archive=None))


def test_sending_an_existing_checkpoint_right_after_the_dump_is_not_refused(task_left):
    gone = task_left["pid"] = ended_pid()
    api = FakeAPI({"Running": True, "Pid": gone}, {"Running": False, "Pid": 0})
    ctx = host(api, check_mode=True)
    result = {"container": "app", "id": CID, "action": "unchanged", "changed": False}
    send.send_checkpoint(ctx, result, "cp", {"host": "b", "directory": "/var/lib/in", "user": None}, 60)
    assert result["action"] == "sent" and result["sent"]["to"] == "root@b:/var/lib/in/app-cp.stream"


def test_a_remote_engine_is_never_second_guessed():
    api = FakeAPI({"Running": True, "Pid": ended_pid()})
    api.kind = "tcp"  # its PIDs are not this host's
    ctx = host(api)
    assert container.settled(ctx, container.inspect(ctx, CID))["State"]["Running"] is True
    assert api.inspects == 1


def test_containerd_dump_returns_when_the_process_is_gone_without_asking_docker(tmp_path, process):
    api = FakeAPI({"Running": True, "Pid": process.pid})
    ctx = host(api, FakeContainerd(process))
    main = (process.pid, procs.start_time(process.pid)[1])
    result = {"container": "app", "warnings": []}
    assert dump.run_dump(ctx, a_dump(tmp_path / "cp", main), "containerd", result) == "containerd"
    assert result["containerd_client"] == "direct"  # the client the containerd task reports is passed on
    assert api.inspects == 0
    assert not procs.alive(*main)


def test_containerd_dump_that_left_the_process_running_is_refused(tmp_path, process, monkeypatch):
    monkeypatch.setattr(procs, "wait_gone", lambda pid, started, seconds: False)  # 10 s shortened to none
    monkeypatch.setattr(container, "wait_state", lambda ctx, cid, running, seconds: {"Running": True})
    path = tmp_path / "cp"
    path.mkdir()
    ctx = host(FakeAPI({"Running": True, "Pid": process.pid}), FakeContainerd())
    main = (process.pid, procs.start_time(process.pid)[1])
    with pytest.raises(OpError, match="still running after a stopping checkpoint through containerd"):
        dump.run_dump(ctx, a_dump(path, main), "containerd", {"container": "app", "warnings": []})
    assert not path.exists()  # the checkpoint was discarded


def test_without_a_known_start_time_docker_is_asked(tmp_path, process, monkeypatch):
    asked = []
    monkeypatch.setattr(container, "wait_state",
                        lambda ctx, cid, running, seconds: asked.append(cid) or {"Running": False})
    ctx = host(FakeAPI({"Running": True, "Pid": process.pid}), FakeContainerd(process))
    assert dump.run_dump(ctx, a_dump(tmp_path / "cp", (process.pid, None)), "containerd",
                         {"container": "app", "warnings": []}) == "containerd"
    assert asked == [CID]


class AnsweringContainerd:
    """containerd's checkpoint call through the module's own client that leaves a partial dump behind, then answers
    as a shell would put it: rc 0 done, 124 timed out, 125 cut off (both in doubt), else failed with `err`."""

    ANSWERS = {124: DumpTimedOut, 125: DumpCutOff}

    def __init__(self, rc, err):
        self.rc, self.err = rc, err

    def check(self, container_id, pid):
        return ""

    def checkpoint(self, container_id, path, exit_task, timeout=None, work_path=None):
        os.makedirs(path)
        with open(os.path.join(path, "pages-1.img"), "wb") as image:
            image.write(b"x")
        with open(os.path.join(work_path, "stats-dump"), "wb") as stats:  # (runc's CRIU, in the work path given)
            stats.write(b"stats")
        if self.rc:
            raise self.ANSWERS.get(self.rc, DumpFailed)(self.err, "direct")
        return "direct"


@pytest.mark.parametrize("rc, err, kept, error, fragment", [
    (124, "containerd: deadline exceeded", True, DumpInDoubt, "did not finish the checkpoint within timeout=60s"),
    (125, "containerd's answer could not be read: connection closed", True, DumpInDoubt, "may still be dumping"),
    (1, "containerd: criu failed", False, OpError, "checkpoint through containerd failed: containerd: criu failed"),
])
def test_a_dump_in_doubt_keeps_its_directory_and_a_failed_one_is_removed(tmp_path, rc, err, kept, error, fragment):
    path = tmp_path / "checkpoints" / "cp"
    result = {"container": "app", "warnings": []}
    ctx = host(FakeAPI({"Running": True, "Pid": 1}), AnsweringContainerd(rc, err))
    with pytest.raises(error, match=fragment) as info:
        dump.dump_containerd(ctx, a_dump(path), result)
    assert info.type is error  # a failure is not reported in doubt, nor the other way round
    assert path.exists() is kept
    assert (tmp_path / ".fleet-criu-work-cp").exists() is kept  # (a dump in doubt may still be working there)
    assert result["containerd_client"] == "direct" and result["dump_call_seconds"] >= 0


class RunningAPI(FakeAPI):
    """A running container whose restart policy is 'no' (nothing to change around the dump)."""

    def __init__(self, pid):
        super().__init__({"Running": True, "Pid": pid, "Status": "running"})

    def get(self, path):
        inspect = super().get(path)
        inspect["HostConfig"] = {"RestartPolicy": {"Name": "no"}}
        return inspect


def test_a_dump_in_doubt_is_marked_refused_later_and_never_costs_the_older_checkpoint(tmp_path, process, monkeypatch):
    monkeypatch.setattr(container, "host_pids", lambda ctx, cid: [process.pid])
    path = tmp_path / "containers" / CID / "checkpoints" / "cp"
    path.mkdir(parents=True)
    (path / "pages-1.img").write_bytes(b"good")
    marker = path.parent / ".cp.fleet-in-doubt"
    backup = path.parent / ".cp.fleet-old"

    def run(containerd, **options):
        ctx = host(RunningAPI(process.pid), containerd, root_dir=str(tmp_path))
        with pytest.raises(OpError) as info:
            dump.present(ctx, CID, dump.DumpOptions("cp", method="containerd", leave_running=True, timeout=60, **options))
        return str(info.value)

    message = run(AnsweringContainerd(125, "containerd's answer could not be read: connection closed"), force=True)
    assert "may still be dumping" in message and f"kept in {backup}" in message, message
    assert marker.exists() and (backup / "pages-1.img").read_bytes() == b"good"
    assert (path / "pages-1.img").read_bytes() == b"x"  # the dump in doubt is left as it is

    message = run(AnsweringContainerd(0, ""))  # not forced: the checkpoint in doubt is not reported as made
    assert "is in doubt" in message and "state=absent" in message, message
    assert marker.exists() and backup.exists()

    # forced again, and this dump fails: the checkpoint the first run was replacing comes back, not the one in doubt
    message = run(AnsweringContainerd(1, "containerd: criu failed"), force=True)
    assert "checkpoint through containerd failed" in message, message
    assert (path / "pages-1.img").read_bytes() == b"good"
    assert not marker.exists() and not backup.exists()


def test_a_containerd_dump_keeps_criu_s_statistics_and_removes_its_work_directory(tmp_path):
    path = tmp_path / "checkpoints" / "cp"
    path.parent.mkdir()
    result = {"container": "app", "warnings": []}
    ctx = host(FakeAPI({"Running": True, "Pid": 1}), AnsweringContainerd(0, ""))
    dump.dump_containerd(ctx, a_dump(path), result)
    assert (path / "stats-dump").read_bytes() == b"stats"
    assert sorted(os.listdir(tmp_path)) == ["checkpoints"]  # (the work directory, beside them, removed)
