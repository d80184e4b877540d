# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import socket as sock_module
import subprocess

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd import grpc
from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd.task import (
    NAMESPACE,
    SOCKETS,
    ContainerdTask,
    DumpCutOff,
    DumpFailed,
    DumpTimedOut,
    NoContainerd,
    parse_task_list,
    task_init_pid,
)

# How a shell would have put each outcome (the exit codes the dump path used to return), as the typed answers now.
ANSWER = {1: DumpFailed, 124: DumpTimedOut, 125: DumpCutOff}

RUNNING_ID = "6cc94f80441f8008293c210b85b3f05cbd37c449d570ba3087f5b71cd953e127"
STOPPED_ID = "21c88b68762f166d781187683a24ba404344ffb46121dc77392671d03deb5d1c"
TASK_LS = (
    "TASK                                                                PID     STATUS    \n"
    f"{RUNNING_ID}    1354    RUNNING\n"
    f"{STOPPED_ID}    1157    STOPPED\n"
)
CTR = "/usr/bin/ctr"


class FakeRun:
    """Records every argv; answers from a list of (rc, out, err), the last one repeated."""

    def __init__(self, *answers):
        self.answers = list(answers) or [(0, TASK_LS, "")]
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


@pytest.fixture
def socket(tmp_path):
    path = tmp_path / "containerd.sock"
    path.write_text("", encoding="utf-8")
    return str(path)


def task_ls_argv(address):
    return [CTR, "--address", address, "--namespace", NAMESPACE, "task", "ls"]


def test_default_sockets_and_namespace():
    assert NAMESPACE == "moby"
    assert "/run/containerd/containerd.sock" in SOCKETS


def test_parse_task_list_real_output():
    assert parse_task_list(TASK_LS) == {
        RUNNING_ID: {"pid": 1354, "status": "RUNNING"},
        STOPPED_ID: {"pid": 1157, "status": "STOPPED"},
    }


def test_parse_task_list_ignores_header_blank_and_odd_lines():
    text = TASK_LS + "\n" + "garbage line\n" + "abc    -    UNKNOWN\n" + "def 12\n"
    assert set(parse_task_list(text)) == {RUNNING_ID, STOPPED_ID}
    assert not parse_task_list("TASK    PID    STATUS\n")
    assert not parse_task_list("")
    # The first line is always the header, even when it looks like a task.
    assert parse_task_list(f"{RUNNING_ID} 1 RUNNING\n") == {}


def test_check_without_ctr(socket):
    run = FakeRun()
    task = ContainerdTask(run, None, sockets=(socket,))
    assert task.check(RUNNING_ID, 1354) == "ctr (containerd's client) is not installed"
    assert run.calls == []


def test_check_without_any_socket(tmp_path):
    run = FakeRun()
    task = ContainerdTask(run, CTR, sockets=(str(tmp_path / "a.sock"), str(tmp_path / "b.sock")))
    assert task.check(RUNNING_ID, 1354) == "no containerd socket answered for namespace moby"
    assert task.address() is None
    assert run.calls == []


def test_a_socket_that_does_not_answer_is_skipped_and_named(tmp_path, socket):
    dead = tmp_path / "dead.sock"
    dead.write_text("", encoding="utf-8")
    run = FakeRun((1, "", "ctr: connection refused\n"), (0, TASK_LS, ""))
    task = ContainerdTask(run, CTR, sockets=(str(tmp_path / "missing.sock"), str(dead), socket))
    assert task.address() == socket
    assert run.calls == [task_ls_argv(str(dead)), task_ls_argv(socket)]
    assert task.address() == socket  # remembered: no further call
    assert len(run.calls) == 2

    run = FakeRun((1, "", "connection refused\n"))
    task = ContainerdTask(run, CTR, sockets=(str(dead),))
    reason = task.check(RUNNING_ID, 1354)
    assert reason == f"no containerd socket answered for namespace moby ({dead}: connection refused)"


def test_check_task_missing(socket):
    task = ContainerdTask(FakeRun(), CTR, sockets=(socket,))
    assert task.check("f" * 64, 1354) == "containerd has no task ffffffffffff in namespace moby"


def test_check_task_not_running(socket):
    task = ContainerdTask(FakeRun(), CTR, sockets=(socket,))
    assert task.check(STOPPED_ID, 1157) == "containerd's task 21c88b68762f is STOPPED, not RUNNING"


def test_check_pid_mismatch(socket):
    task = ContainerdTask(FakeRun(), CTR, sockets=(socket,))
    assert task.check(RUNNING_ID, 4242) == "containerd's task 6cc94f80441f has pid 1354, Docker says 4242"


def test_check_all_good(socket):
    run = FakeRun()
    task = ContainerdTask(run, CTR, sockets=(socket,))
    assert task.check(RUNNING_ID, 1354) == ""
    assert task.why_not == ""
    assert run.calls == [task_ls_argv(socket)]  # the probe's own list serves the first check
    assert task.check(RUNNING_ID, 1354) == ""
    assert run.calls == [task_ls_argv(socket)] * 2  # a later check reads the list afresh


def test_check_when_task_ls_fails_after_the_socket_answered(socket):
    run = FakeRun((0, TASK_LS, ""), (1, "", "ctr: deadline exceeded\n"))
    task = ContainerdTask(run, CTR, sockets=(socket,))
    assert task.check(RUNNING_ID, 1354) == ""
    assert task.check(RUNNING_ID, 1354) == "ctr task ls failed: ctr: deadline exceeded"


@pytest.fixture
def grpc_calls(monkeypatch):
    """containerd's Tasks.Checkpoint as the direct call sees it: what it was asked, and what it answers."""
    calls, answer = [], {}

    def checkpoint(address, namespace, container_id, image_path, **kwargs):
        calls.append((address, namespace, container_id, image_path, kwargs))
        if "raise" in answer:
            raise answer["raise"]
    monkeypatch.setattr(grpc, "checkpoint", checkpoint)
    return calls, answer


@pytest.mark.parametrize("exit_task, extra", [(True, ["--exit"]), (False, [])])
def test_checkpoint_argv_of_the_ctr_fallback(socket, grpc_calls, exit_task, extra):
    calls, answer = grpc_calls
    answer["raise"] = grpc.NotConnected("cannot connect")
    run = FakeRun((0, TASK_LS, ""), (0, "", ""))
    task = ContainerdTask(run, CTR, sockets=(socket,))
    image_path = "/var/lib/docker/containers/x/checkpoints/pre-reboot"
    assert task.checkpoint(RUNNING_ID, image_path, exit_task) == "ctr"
    assert len(calls) == 1  # the direct call first
    assert run.calls[-1] == [CTR, "--address", socket, "--namespace", "moby", "task", "checkpoint",
                             "--image-path", image_path, *extra, RUNNING_ID]


def test_the_ctr_fallback_keeps_the_work_path_too(socket, grpc_calls):
    grpc_calls[1]["raise"] = grpc.NotConnected("cannot connect")
    run = FakeRun((0, TASK_LS, ""), (0, "", ""))
    task = ContainerdTask(run, CTR, sockets=(socket,))
    assert task.checkpoint(RUNNING_ID, "/c/p", True, work_path="/w") == "ctr"
    assert run.calls[-1][-6:] == ["--image-path", "/c/p", "--work-path", "/w", "--exit", RUNNING_ID]


def test_the_ctr_fallback_passes_the_result_through(socket, grpc_calls):
    grpc_calls[1]["raise"] = grpc.NotConnected("server refused the stream (REFUSED_STREAM)")
    run = FakeRun((0, TASK_LS, ""), (1, "", "criu failed: type NOTIFY errno 0\n"))
    task = ContainerdTask(run, CTR, sockets=(socket,))
    assert task.check(RUNNING_ID, 1354) == ""
    with pytest.raises(DumpFailed) as info:
        task.checkpoint(RUNNING_ID, "/tmp/x", True)
    assert (str(info.value), info.value.client, info.value.in_doubt) == ("criu failed: type NOTIFY errno 0\n", "ctr", False)


@pytest.mark.parametrize("rc, in_doubt", [(124, True), (125, True), (1, False)])
def test_the_ctr_fallbacks_exit_codes_become_typed_answers(socket, grpc_calls, rc, in_doubt):
    """ctr under timeout(1), the reference path: 124 timed out, 125 timeout itself failed (in doubt), else failed."""
    grpc_calls[1]["raise"] = grpc.NotConnected("cannot connect")
    run = FakeRun((0, TASK_LS, ""), (rc, "", "ctr: something\n"))
    task = ContainerdTask(run, CTR, sockets=(socket,), timeout_path="/usr/bin/timeout")
    with pytest.raises(ANSWER[rc]) as info:
        task.checkpoint(RUNNING_ID, "/tmp/x", True, timeout=30)
    assert info.type is ANSWER[rc] and info.value.in_doubt is in_doubt and info.value.client == "ctr"
    assert run.calls[-1][:2] == ["/usr/bin/timeout", "30"]


@pytest.mark.parametrize("exit_task", [True, False])
def test_checkpoint_calls_containerd_directly_without_ctr(socket, grpc_calls, exit_task):
    calls, _answer = grpc_calls
    run = FakeRun((0, TASK_LS, ""))
    task = ContainerdTask(run, CTR, sockets=(socket,))
    assert task.check(RUNNING_ID, 1354) == ""
    path = "/var/lib/docker/containers/x/checkpoints/c"
    assert task.checkpoint(RUNNING_ID, path, exit_task, timeout=30) == "direct"
    assert run.calls == [task_ls_argv(socket)]  # the probe only: no ctr for the dump
    assert calls == [(socket, "moby", RUNNING_ID, path, {"exit_task": exit_task, "timeout": 30, "work_path": None})]
    task.checkpoint(RUNNING_ID, path, exit_task, timeout=30, work_path="/var/lib/fleet-checkpoint/criu-work/x")
    assert calls[-1][4]["work_path"] == "/var/lib/fleet-checkpoint/criu-work/x"


@pytest.mark.parametrize("error, rc, fragment", [
    (grpc.GrpcError(2, "runc did not terminate successfully: criu failed"), 1,
     "containerd: runc did not terminate successfully: criu failed"),
    (grpc.GrpcError(5, ""), 1, "containerd: grpc-status 5 (NOT_FOUND)"),
    (grpc.GrpcError(2, "ttrpc: closed"), 125, "cut off (UNKNOWN): ttrpc: closed"),
    (grpc.GrpcError(2, "ttrpc: stream closed"), 125, "cut off (UNKNOWN): ttrpc: stream closed"),
    (grpc.GrpcError(14, "connection error"), 125, "cut off (UNAVAILABLE)"),
    (grpc.GrpcError(1, "context canceled"), 125, "cut off (CANCELLED)"),
    (grpc.GrpcError(4, "context deadline exceeded"), 125, "cut off (DEADLINE_EXCEEDED)"),
    (grpc.DeadlineExceeded("deadline exceeded while waiting for the server"), 124, "deadline exceeded"),
    (grpc.ProtocolError("connection closed by the server"), 125, "answer could not be read: connection closed"),
])
def test_checkpoint_reports_what_containerd_answered(socket, grpc_calls, error, rc, fragment):
    _calls, answer = grpc_calls
    answer["raise"] = error
    run = FakeRun((0, TASK_LS, ""))
    task = ContainerdTask(run, CTR, sockets=(socket,))
    with pytest.raises(ANSWER[rc]) as info:
        task.checkpoint(RUNNING_ID, "/tmp/x", False)
    assert info.type is ANSWER[rc] and fragment in str(info.value), info.value
    assert info.value.client == "direct"
    assert run.calls == [task_ls_argv(socket)]  # asked once: never again through ctr


def test_checkpoint_without_a_containerd_asks_nothing(tmp_path, grpc_calls):
    calls, _answer = grpc_calls
    run = FakeRun()
    task = ContainerdTask(run, CTR, sockets=(str(tmp_path / "absent.sock"),))
    with pytest.raises(NoContainerd) as info:
        task.checkpoint(RUNNING_ID, "/tmp/x", True)
    assert (isinstance(info.value, DumpFailed), info.value.client) == (True, None)
    assert "no containerd socket answered" in str(info.value)
    assert calls == [] and run.calls == []


def test_remove_content_removes_one_blob_from_dockers_namespace(socket):
    digest = "sha256:" + "ab" * 32
    run = FakeRun((0, TASK_LS, ""), (0, "", ""))
    assert ContainerdTask(run, CTR, sockets=[socket]).remove_content(digest) == ""
    assert run.calls[-1] == [CTR, "--address", socket, "--namespace", NAMESPACE, "content", "rm", digest]


def test_remove_content_refuses_what_is_not_a_digest_and_reports_a_failure(socket):
    run = FakeRun((0, TASK_LS, ""), (1, "", "ctr: not found"))
    task = ContainerdTask(run, CTR, sockets=[socket])
    assert "not a content digest" in task.remove_content("sha256:../../etc")
    assert run.calls == []
    assert "ctr: not found" in task.remove_content("sha256:" + "0" * 64)


@pytest.fixture
def listening(tmp_path):
    """A unix socket that accepts connections, as containerd's does."""
    path = str(tmp_path / "live.sock")
    server = sock_module.socket(sock_module.AF_UNIX, sock_module.SOCK_STREAM)
    server.bind(path)
    server.listen(8)
    yield path
    server.close()


def state_dir_task(tmp_path, socket, container_id, pid):
    """A containerd state directory beside the socket holding one task of Docker's namespace."""
    state = tmp_path / "state"
    task_dir = state / "io.containerd.runtime.v2.task" / NAMESPACE / container_id
    task_dir.mkdir(parents=True)
    (task_dir / "init.pid").write_text(f"{pid}", encoding="ascii")
    return {socket: str(state)}


def test_check_reads_the_task_from_containerd_state_without_ctr(tmp_path, listening):
    run = FakeRun()
    me = os.getpid()  # a running process standing for the container's main process
    task = ContainerdTask(run, CTR, sockets=(listening,),
                          state_dirs=state_dir_task(tmp_path, listening, RUNNING_ID, me))
    assert task.check(RUNNING_ID, me) == ""
    assert run.calls == []  # no ctr started
    assert task.address() == listening  # the checkpoint goes to that containerd
    assert task_init_pid(RUNNING_ID, {listening: str(tmp_path / "state")}) == me
    assert task_init_pid(STOPPED_ID, {listening: str(tmp_path / "state")}) is None


@pytest.mark.parametrize("case", ["other pid", "process gone", "no task dir", "garbage init.pid", "no socket",
                                  "dead socket"])
def test_state_that_does_not_match_falls_back_to_ctr(tmp_path, listening, socket, case):
    if case != "dead socket":  # a socket file nothing listens on (containerd gone) stays as `socket` is
        socket = listening
    child = subprocess.Popen(["true"])
    child.wait()
    me = os.getpid()
    pid_in_state = {"other pid": me + 1, "process gone": child.pid}.get(case, me)
    dirs = state_dir_task(tmp_path, socket, RUNNING_ID if case != "no task dir" else STOPPED_ID, pid_in_state)
    if case == "garbage init.pid":
        (tmp_path / "state" / "io.containerd.runtime.v2.task" / NAMESPACE / RUNNING_ID / "init.pid").write_text("x")
    if case == "no socket":
        os.unlink(socket)
    asked = child.pid if case == "process gone" else me
    run = FakeRun((0, TASK_LS.replace("1354", str(asked)), ""))
    task = ContainerdTask(run, CTR, sockets=(socket,), state_dirs=dirs)
    answer = task.check(RUNNING_ID, asked)
    if case == "no socket":
        assert run.calls == [] and "no containerd socket answered" in answer
    else:
        assert run.calls == [task_ls_argv(socket)]  # decided by `ctr task ls`, as before
        assert answer == ""
