# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fast dump path: containerd's task API, writing straight into Docker's checkpoint directory.

Docker's own checkpoint copies the CRIU images through containerd's content store (about 95% of its time, see
docs). containerd's Tasks.Checkpoint with an image path has runc write them to that directory directly, and Docker
restores from it. It also stops containers that Docker's API cannot stop (those live-restored across a daemon restart).
The module calls Tasks.Checkpoint itself (`_containerd.grpc`); `ctr -n moby task checkpoint --image-path DIR` is the
fallback when containerd's socket takes no request from it. `ctr` also finds the socket and reads the task list.
It is used only when everything is exactly as expected: ctr present, containerd answering, a task in Docker's `moby`
namespace with the container's id, running, with the PID Docker reports.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Callable, List, Tuple

from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd import grpc
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import processes as procs

Run = Callable[[List[str]], Tuple[int, str, str]]

NAMESPACE = "moby"
# gRPC codes that do not prove the dump stopped: our client never cancels and sends no deadline, so these come from
# containerd losing its call to the shim (or being stopped) while runc may still be dumping.
CUT_OFF = (1, 4, 14)  # CANCELLED, DEADLINE_EXCEEDED, UNAVAILABLE
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
SOCKETS = (
    "/run/containerd/containerd.sock",
    "/var/run/docker/containerd/containerd.sock",
    "/run/docker/containerd/containerd.sock",
)
# containerd's state directory beside each socket (a system containerd's default, and the one dockerd starts itself).
# Its runtime v2 keeps a directory per task: <state>/io.containerd.runtime.v2.task/<namespace>/<id>/init.pid.
STATE_DIRS = {
    "/run/containerd/containerd.sock": "/run/containerd",
    "/var/run/docker/containerd/containerd.sock": "/var/run/docker/containerd/daemon",
    "/run/docker/containerd/containerd.sock": "/run/docker/containerd/daemon",
}
TASK_DIR = "io.containerd.runtime.v2.task"


class DumpError(Exception):
    """containerd's checkpoint of a task did not succeed. `client` made the call: "direct" (the module's own
    Tasks.Checkpoint call), "ctr", or None when no containerd answered (nothing was asked)."""

    in_doubt = False  # True: the dump may have happened, or may still be running

    def __init__(self, message: str, client: str | None) -> None:
        super().__init__(message)
        self.client = client


class DumpFailed(DumpError):
    """containerd (or ctr) answered that the dump failed."""


class NoContainerd(DumpFailed):
    """No containerd socket answered for Docker's namespace: nothing was asked."""


class DumpTimedOut(DumpError):
    """The timeout passed before containerd's answer came: the dump may still be running."""

    in_doubt = True


class DumpCutOff(DumpError):
    """containerd's answer could not be read, or says its call to the shim was cut off: the dump may have happened."""

    in_doubt = True


def task_init_pid(container_id: str, state_dirs: Mapping[str, str] | None = None) -> int | None:
    """The init PID containerd's state directory still holds for this container's task in Docker's namespace, or
    None (no such task: deleted, or a containerd whose state is elsewhere)."""
    for state in (STATE_DIRS if state_dirs is None else state_dirs).values():
        try:
            with open(os.path.join(state, TASK_DIR, NAMESPACE, container_id, "init.pid"), encoding="ascii") as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            continue
    return None


def _answers(socket_path: str) -> bool:
    """Whether something accepts connections on this unix socket (a containerd left behind leaves a dead file)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2)
    try:
        probe.connect(socket_path)
    except OSError:
        return False
    finally:
        probe.close()
    return True


def parse_task_list(text: str) -> dict[str, dict[str, int | str]]:
    """{task id: {'pid': int, 'status': str}} from `ctr task ls` output."""
    tasks: dict[str, dict[str, int | str]] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[1].isdigit():
            tasks[parts[0]] = {"pid": int(parts[1]), "status": parts[2]}
    return tasks


class ContainerdTask:
    """Finds containerd and checks a container's task; `run(argv)` returns (rc, stdout, stderr)."""

    def __init__(self, run: Run, ctr_path: str | None, sockets: Sequence[str] = SOCKETS, timeout_path: str | None = None,
                 state_dirs: Mapping[str, str] | None = None) -> None:
        self.run = run
        self.ctr = ctr_path
        self.timeout_path = timeout_path
        self.sockets = sockets
        self.state_dirs: Mapping[str, str] = STATE_DIRS if state_dirs is None else state_dirs
        self._address: str | None = None
        self._probe: str | None = None  # the task list of the address probe, used once by the first check
        self.why_not = ""

    def _ctr(self, address: str, *args: str) -> tuple[int, str, str]:
        if not self.ctr:  # not reached: every caller checks first
            return 1, "", "ctr (containerd's client) is not installed"
        return self.run([self.ctr, "--address", address, "--namespace", NAMESPACE, *args])

    def address(self) -> str | None:
        """The containerd socket that serves Docker's namespace, or None (why_not says why)."""
        if self._address:
            return self._address
        if not self.ctr:
            self.why_not = "ctr (containerd's client) is not installed"
            return None
        reasons = []
        for socket_path in self.sockets:
            if not os.path.exists(socket_path):
                continue
            rc, out, err = self._ctr(socket_path, "task", "ls")
            if rc == 0:
                self._address = socket_path
                self._probe = out
                return socket_path
            reasons.append(f"{socket_path}: {(err or out).strip()}")
        self.why_not = "no containerd socket answered for namespace moby" + (f" ({'; '.join(reasons)})" if reasons else "")
        return None

    def _task_in_state(self, container_id: str, pid: int) -> str | None:
        """The socket of the containerd that answers and whose state directory holds this container's task in
        Docker's namespace, with Docker's PID as its init process and that process alive; else None. It answers what
        `ctr task ls` would, without starting ctr (~40 ms), except the task's status: a paused container is refused
        before (Docker reports it Paused)."""
        candidates = [self._address] if self._address else self.sockets
        for socket_path in candidates:
            state = self.state_dirs.get(socket_path)
            if not state or not os.path.exists(socket_path):
                continue
            if task_init_pid(container_id, {socket_path: state}) == pid and procs.alive(pid) and _answers(socket_path):
                return socket_path
        return None

    def check(self, container_id: str, pid: int) -> str:
        """'' when the container's task is exactly as expected, else the reason the fast path cannot be used (a
        paused container is refused by the caller: see _task_in_state)."""
        if self.ctr:
            found = self._task_in_state(container_id, pid)
            if found:
                self._address = found
                return ""
        address = self.address()
        if not address:
            return self.why_not
        out, self._probe = self._probe, None  # the list the probe just read saves a second `ctr task ls`
        if out is None:
            rc, out, err = self._ctr(address, "task", "ls")
            if rc != 0:
                return f"ctr task ls failed: {(err or out).strip()}"
        task = parse_task_list(out).get(container_id)
        if task is None:
            return f"containerd has no task {container_id[:12]} in namespace {NAMESPACE}"
        if task["status"] != "RUNNING":
            return f"containerd's task {container_id[:12]} is {task['status']}, not RUNNING"
        if task["pid"] != pid:
            return f"containerd's task {container_id[:12]} has pid {task['pid']}, Docker says {pid}"
        return ""

    def remove_content(self, digest: str) -> str:
        """Remove one blob from Docker's namespace of containerd's content store; returns '' or why it was not."""
        if not DIGEST.fullmatch(digest or ""):
            return f"not a content digest: {digest!r}"
        address = self.address()
        if not address:
            return self.why_not
        rc, out, err = self._ctr(address, "content", "rm", digest)
        return "" if rc == 0 else f"ctr content rm {digest} failed: {(err or out).strip()}"

    def checkpoint(self, container_id: str, image_path: str, exit_task: bool, timeout: float | None = None,
                   work_path: str | None = None) -> str:
        """Dump the task into image_path (CRIU's work directory, with its statistics, kept in work_path when given);
        returns the client that made the call: "direct" or "ctr".

        containerd's Tasks.Checkpoint is called directly (no `ctr` process, and no pause and resume around the dump,
        which ctr's client adds: CRIU freezes the container itself). `ctr` dumps only when containerd took no request
        from that call (no connection, or the stream refused before it was processed).

        Raises DumpFailed (the dump failed; NoContainerd when no containerd socket answered, nothing was asked),
        DumpTimedOut (`timeout` passed) or DumpCutOff (containerd's answer could not be read, or says the call was
        cut off). After the last two the dump may have happened or still be running (`in_doubt`)."""
        address = self.address()
        if not address:
            raise NoContainerd(self.why_not, None)
        try:
            grpc.checkpoint(address, NAMESPACE, container_id, image_path, exit_task=exit_task, timeout=timeout or None,
                            work_path=work_path)
            return "direct"
        except grpc.NotConnected:
            pass
        except grpc.GrpcError as exc:
            message = exc.grpc_message or str(exc)
            if exc.code in CUT_OFF or "ttrpc:" in message:  # containerd lost its connection to the shim
                raise DumpCutOff(f"containerd's call was cut off ({exc.code_name}): {message}", "direct") from exc
            raise DumpFailed(f"containerd: {message}", "direct") from exc
        except grpc.DeadlineExceeded as exc:
            raise DumpTimedOut(f"containerd: {exc}", "direct") from exc
        except grpc.ContainerdGrpcError as exc:
            raise DumpCutOff(f"containerd's answer could not be read: {exc}", "direct") from exc
        args = ["task", "checkpoint", "--image-path", image_path]
        if work_path:
            args += ["--work-path", work_path]
        if exit_task:
            args.append("--exit")
        if not self.ctr:  # not reached: address() finds a socket only through ctr
            raise NoContainerd("ctr (containerd's client) is not installed", None)
        argv = [self.ctr, "--address", address, "--namespace", NAMESPACE, *args, container_id]
        if timeout and self.timeout_path:
            argv = [self.timeout_path, str(int(timeout)), *argv]
        rc, out, err = self.run(argv)
        if rc == 124:  # timeout(1) stopped waiting
            raise DumpTimedOut(f"ctr: {(err or out).strip() or 'timed out'}", "ctr")
        if rc == 125:  # timeout(1) itself failed: whether ctr ran is unknown
            raise DumpCutOff(err, "ctr")
        if rc != 0:
            raise DumpFailed(err or out, "ctr")
        return "ctr"
