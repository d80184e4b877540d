# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Prove CRIU works on this host: dump and restore throw-away processes holding what real workloads hold.

Each resource kind gets its own small process (so that one kind failing does not hide the others): started in a
new session with no terminal, dumped (which stops it), restored detached, then checked from outside that it
resumed: its counter went on from where it was and the resource still works. Everything lives in a private
temporary directory (0700) that is removed afterwards, together with any process left over.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import TYPE_CHECKING, Any, TypedDict

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    RunCommand = Callable[[list[str]], tuple[int, str, str]]  # argv -> (rc, stdout, stderr), like AnsibleModule's
    WorkloadState = dict[str, Any]  # the workload's state.json: pid, counter, resource_ok (and port)

KINDS = ("process", "pipe", "open_file", "child_process", "unix_socket", "tcp_listen")

# The workload: keeps a counter, holds one resource kind, exercises it every tick, reports in state.json.
WORKLOAD = r'''
import json, os, socket, sys, time
kind, work = sys.argv[1], sys.argv[2]
state = {"pid": os.getpid(), "counter": 0, "resource_ok": True}
held = {}
if kind == "pipe":
    held["r"], held["w"] = os.pipe()
elif kind == "open_file":
    held["f"] = open(os.path.join(work, "data.txt"), "a+")
elif kind == "child_process":
    child = os.fork()
    if child == 0:
        n = 0
        while True:
            n += 1
            with open(os.path.join(work, "child.tmp"), "w") as f:
                f.write(str(n))
            os.replace(os.path.join(work, "child.tmp"), os.path.join(work, "child.txt"))
            time.sleep(0.05)
    held["child"] = child
elif kind == "unix_socket":
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.path.join(work, "sock"))
    s.listen(4)
    s.settimeout(0.02)
    held["listen"] = s
    held["pair"] = socket.socketpair()
elif kind == "tcp_listen":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    s.settimeout(0.02)
    held["listen"] = s
    state["port"] = s.getsockname()[1]
while True:
    state["counter"] += 1
    ok = True
    if kind == "pipe":
        os.write(held["w"], b"x")
        ok = os.read(held["r"], 1) == b"x"
    elif kind == "open_file":
        held["f"].write("%d\n" % state["counter"])
        held["f"].flush()
    elif kind == "child_process":
        try:
            os.kill(held["child"], 0)
        except OSError:
            ok = False
    elif kind == "unix_socket":
        a, b = held["pair"]
        a.sendall(b"y")
        ok = b.recv(1) == b"y"
    if "listen" in held:
        try:
            conn, _ = held["listen"].accept()
            conn.sendall(b"%d\n" % state["counter"])
            conn.close()
        except socket.timeout:
            pass
    state["resource_ok"] = ok
    with open(os.path.join(work, "state.tmp"), "w") as f:
        json.dump(state, f)
    os.replace(os.path.join(work, "state.tmp"), os.path.join(work, "state.json"))
    time.sleep(0.05)
'''

FIXES = {
    "tcp_listen": "install a CRIU that can dump TCP sockets on this kernel (e.g. a newer release from a pinned source)",
    "unix_socket": "install a newer CRIU release",
}


class SelfTestError(Exception):
    pass


class Outcome(TypedDict):
    """How one resource kind fared: ok, the stage reached (start, dump, restore, verify, done) and the error."""

    ok: bool
    stage: str
    error: str | None


def _read_state(work: str) -> WorkloadState | None:
    try:
        with open(os.path.join(work, "state.json"), encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _wait_state(work: str, predicate: Callable[[WorkloadState], bool], timeout: float) -> WorkloadState | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _read_state(work)
        if state and predicate(state):
            return state
        time.sleep(0.05)
    return _read_state(work)


def _criu_error(log_path: str) -> str:
    """The most telling error line of a CRIU log."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            lines = [line.rstrip() for line in handle if line.strip()]
    except OSError:
        return "no CRIU log"
    # CRIU logs a harmless "Error" when it may not raise RLIMIT_NOFILE (no CAP_SYS_RESOURCE); skip it.
    errors = [line for line in lines if ("Error" in line or "error" in line) and "RLIMIT_NOFILE" not in line]
    return (errors[0] if errors else (lines[-1] if lines else "empty CRIU log"))[-300:]


def _kill_tree(pid: int | None) -> None:
    if not pid:
        return
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _talk(kind: str, work: str, state: WorkloadState) -> int:
    """Connect to the restored listening socket; return the counter it answers with."""
    if kind == "tcp_listen":
        sock = socket.create_connection(("127.0.0.1", state["port"]), timeout=2)
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(2)
        sock.connect(os.path.join(work, "sock"))
    with sock:
        return int(sock.recv(64).split()[0])


def _spawn(argv: list[str], cwd: str, log_path: str) -> int:
    """Start argv in a new session, stdin from /dev/null, output to log_path; return its PID (our child)."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.setsid()
            os.chdir(cwd)
            null = os.open(os.devnull, os.O_RDONLY)
            log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.closerange(3, 1024)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)  # pylint: disable=protected-access
    return pid


def _reap(pid: int, timeout: float) -> bool:
    """Wait for our child to exit (so that its PID is free again); True when it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return True
        if done:
            return True
        time.sleep(0.02)
    return False


def run_one(criu: str, kind: str, run: RunCommand, base_dir: str | None = None, timeout: float = 10) -> Outcome:
    """Dump and restore one workload holding `kind`; return {'ok', 'stage', 'error'}.

    `run(argv)` returns (rc, stdout, stderr), like AnsibleModule.run_command.
    """
    work = tempfile.mkdtemp(prefix=f"fleet-criu-selftest-{kind}-", dir=base_dir)
    os.chmod(work, 0o700)
    images = os.path.join(work, "images")
    os.mkdir(images, 0o700)
    restored_pid: int | None = None
    pid: int | None = None
    try:
        pid = _spawn([sys.executable, "-c", WORKLOAD, kind, work], work, os.path.join(work, "workload.log"))
        before = _wait_state(work, lambda s: s["counter"] >= 3, timeout)
        if not before or before["counter"] < 3:
            return {"ok": False, "stage": "start", "error": "the test process did not start"}
        dump_log = os.path.join(work, "dump.log")
        rc, _out, _err = run([criu, "dump", "-t", str(pid), "-D", images, "-o", dump_log, "-v4"])
        if rc != 0:
            return {"ok": False, "stage": "dump", "error": _criu_error(dump_log)}
        if not _reap(pid, timeout):  # its PID must be free for the restore
            return {"ok": False, "stage": "dump", "error": "the dumped process did not exit"}
        pid = None
        dumped = _read_state(work)
        if dumped is None:  # not reached: read as `before` already; the workload only ever replaces it atomically
            return {"ok": False, "stage": "dump", "error": "the workload's state could not be read after the dump"}
        frozen = dumped["counter"]
        restore_log = os.path.join(work, "restore.log")
        pidfile = os.path.join(work, "restored.pid")
        rc, _out, _err = run([criu, "restore", "-d", "-D", images, "-o", restore_log, "-v4", "--pidfile", pidfile])
        if rc != 0:
            return {"ok": False, "stage": "restore", "error": _criu_error(restore_log)}
        with open(pidfile, encoding="utf-8") as handle:
            restored_pid = int(handle.read().strip())
        after = _wait_state(work, lambda s: s["counter"] >= frozen + 3, timeout)
        if not after or after["counter"] < frozen + 3:
            return {"ok": False, "stage": "verify", "error": f"the restored process did not resume (counter stayed at {frozen})"}
        if after["pid"] != before["pid"] or not after["resource_ok"]:
            return {"ok": False, "stage": "verify", "error": f"the {kind} did not work after the restore"}
        if kind in ("tcp_listen", "unix_socket"):
            try:
                answered = _talk(kind, work, after)
            except (OSError, ValueError, IndexError) as exc:
                return {"ok": False, "stage": "verify", "error": f"the restored {kind} did not answer: {exc}"}
            if answered <= frozen:
                return {"ok": False, "stage": "verify", "error": f"the restored {kind} answered with an old counter"}
        return {"ok": True, "stage": "done", "error": None}
    finally:
        _kill_tree(restored_pid)
        if pid is not None:
            _kill_tree(pid)
            _reap(pid, 5)
        shutil.rmtree(work, ignore_errors=True)


def run_all(criu: str, run: RunCommand, kinds: Iterable[str] = KINDS,
            base_dir: str | None = None) -> dict[str, Outcome]:
    """{kind: result} for every kind."""
    return {kind: run_one(criu, kind, run, base_dir) for kind in kinds}


def summary(results: dict[str, Outcome]) -> list[str]:
    """One line per failing kind, naming the resource, the stage, CRIU's line and the fix."""
    lines = []
    for kind, result in results.items():
        if not result["ok"]:
            fix = FIXES.get(kind, "install a newer CRIU release")
            lines.append(f"{kind}: {result['stage']} failed ({result['error']}); fix: {fix}")
    return lines
