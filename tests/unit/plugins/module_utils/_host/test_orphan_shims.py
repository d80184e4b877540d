# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Orphan shims, on real processes: a Python process named like a shim (argv[0]) with a child stands in for one."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

from ansible_collections.fleet.checkpoint.plugins.module_utils._host.orphan_shims import find_shims, lingering_shims, stop_shims

# Container ids of this process's own: two runs of these tests at once (make fast-gates runs the units with both
# ansible-cores side by side) must not find - and stop - each other's shims.
_RUN = f"{os.getpid()}-{os.urandom(8).hex()}"


def cid_for(name):
    return hashlib.sha256(f"{name}-{_RUN}".encode()).hexdigest()


CID = cid_for("main")
OTHER_CID = cid_for("other")
CHILD = "sleep 60 & wait"
UID = os.getuid()  # the tests' shims are this user's (the module requires root's)
SHIM_DIR = tempfile.mkdtemp(prefix="fleet-test-shim-")
# A stand-in for the shim's executable: a copy of sh under the shim's name (/proc/PID/exe names it).
SHIM_BINARY = os.path.join(SHIM_DIR, "containerd-shim-runc-v2")
shutil.copy(shutil.which("sh") or "/bin/sh", SHIM_BINARY)


def fake_shim(namespace="moby", cid=CID, script=CHILD):
    return subprocess.Popen(  # pylint: disable=consider-using-with
        [SHIM_BINARY, "-c", script, "-namespace", namespace, "-id", cid, "-address", "/x.sock"])


def find(cid, **kwargs):
    return find_shims(cid, uid=UID, **kwargs)


def _runs_sleep(pid):
    """Whether the process has exec'd `sleep` (a child just forked still runs the shim's binary)."""
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
            return handle.read().strip() == "sleep"
    except OSError:
        return False


def wait_for_child(pid, seconds=10, cid=CID):
    """The shim once its child runs `sleep`: between its fork and its exec the child still carries the shim's command
    line, and reads as a second shim (seen once on a loaded machine)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        shims = find(cid)
        if shims.get(pid) and list(shims) == [pid] and all(_runs_sleep(child) for child in shims[pid]):
            return shims
        time.sleep(0.05)
    raise AssertionError(f"no child seen under {pid}: {find(cid)}")


def test_a_shim_for_the_container_is_found_with_its_processes_and_stopped():
    shim = fake_shim()
    try:
        shims = wait_for_child(shim.pid)
        assert list(shims) == [shim.pid] and len(shims[shim.pid]) == 1
        child = shims[shim.pid][0]
        assert stop_shims(shims, uid=UID) == []
        shim.wait(timeout=5)
        assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat", encoding="utf-8").read().split(
            ") ")[1].startswith("Z")
        assert find(CID) == {}
    finally:
        shim.kill()
        shim.wait()


def test_shims_of_other_containers_or_namespaces_are_not_found():
    others = [fake_shim(cid=OTHER_CID), fake_shim(namespace="k8s.io")]
    try:
        time.sleep(0.3)
        assert find(CID) == {}
        assert list(find(OTHER_CID)) == [others[0].pid]
        assert list(find(CID, namespace="k8s.io")) == [others[1].pid]
    finally:
        stop_shims({**find(OTHER_CID), **find(CID, namespace="k8s.io")}, wait=2, uid=UID)
        for other in others:
            other.kill()
            other.wait()


def test_stopping_what_is_already_gone_is_not_an_error():
    assert stop_shims({999999999: [999999998]}, wait=0.2) == []


# Tests run in parallel (ansible-test units: pytest -n auto): each test's shims serve a container id of its own.
ENDING_CID = cid_for("ending")
COPY_CID = cid_for("copy")


def test_a_shim_with_nothing_under_it_is_given_time_to_end():
    # No child: the shell counts for about a quarter to a second with builtins only, then ends.
    ending = fake_shim(cid=ENDING_CID, script="i=0; while [ $i -lt 300000 ]; do i=$((i + 1)); done")
    try:
        time.sleep(0.1)
        assert list(find(ENDING_CID)) == [ending.pid]
        reaper = threading.Timer(0.6, ending.wait)  # reaped once it ends, as containerd reaps its shims
        reaper.start()
        assert lingering_shims(ENDING_CID, wait=5, uid=UID) == {}
        reaper.join()
    finally:
        ending.kill()
        ending.wait()


def test_a_shim_with_processes_under_it_is_a_copy_at_once():
    shim = fake_shim(cid=COPY_CID)
    try:
        wait_for_child(shim.pid, cid=COPY_CID)
        started = time.monotonic()
        assert list(lingering_shims(COPY_CID, wait=5, uid=UID)) == [shim.pid]
        assert time.monotonic() - started < 1
    finally:
        stop_shims(find(COPY_CID), wait=2, uid=UID)
        shim.kill()
        shim.wait()


# Issue 20, finding 8: what any user can fake is not enough.
FAKE_CID = cid_for("fake")


def test_a_process_only_named_like_a_shim_is_not_one():
    """A process whose command line says containerd-shim-runc-v2 (argv[0] is free to choose) but whose executable is
    not the shim's: it used to be found, and killed with its children."""
    named = subprocess.Popen(  # pylint: disable=consider-using-with
        ["containerd-shim-runc-v2", "-c", "import time; time.sleep(30)", "-namespace", "moby", "-id", FAKE_CID],
        executable=sys.executable)
    try:
        time.sleep(0.3)
        assert find(FAKE_CID) == {}
    finally:
        named.kill()
        named.wait()


def test_a_shim_of_another_user_is_not_one():
    shim = fake_shim(cid=FAKE_CID)
    try:
        wait_for_child(shim.pid, cid=FAKE_CID)
        assert find_shims(FAKE_CID, uid=UID + 1) == {}
    finally:
        stop_shims(find(FAKE_CID), wait=2, uid=UID)
        shim.kill()
        shim.wait()


def test_a_pid_that_is_no_longer_the_shims_child_is_not_killed():
    """Between the scan and the kill a PID can be reused: each process is checked again (pinned by a pidfd)."""
    bystander = subprocess.Popen(["sleep", "30"])  # pylint: disable=consider-using-with
    try:
        stop_shims({999999999: [bystander.pid]}, wait=0.2, uid=UID)  # not that shim's child
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
