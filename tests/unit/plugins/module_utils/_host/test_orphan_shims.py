# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Orphan shims, on real processes: a Python process named like a shim (argv[0]) with a child stands in for one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from ansible_collections.fleet.checkpoint.plugins.module_utils._host.orphan_shims import find_shims, lingering_shims, stop_shims

CID = "9abd1e16c3bdd54bb6ba162a3af36ac28c2a4a5453151c09f7f2c410b211120e"
CHILD = "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)"


def fake_shim(namespace="moby", cid=CID):
    return subprocess.Popen(  # pylint: disable=consider-using-with
        ["containerd-shim-runc-v2", "-c", CHILD, "-namespace", namespace, "-id", cid, "-address", "/x.sock"],
        executable=sys.executable)


def wait_for_child(pid, seconds=10, cid=CID):
    """The shim once its child runs `sleep`: between its fork and its exec the child still carries the shim's command
    line, and reads as a second shim (seen once on a loaded machine)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        shims = find_shims(cid)
        if shims.get(pid) and list(shims) == [pid]:
            return shims
        time.sleep(0.05)
    raise AssertionError(f"no child seen under {pid}: {find_shims(cid)}")


def test_a_shim_for_the_container_is_found_with_its_processes_and_stopped():
    shim = fake_shim()
    try:
        shims = wait_for_child(shim.pid)
        assert list(shims) == [shim.pid] and len(shims[shim.pid]) == 1
        child = shims[shim.pid][0]
        assert stop_shims(shims) == []
        shim.wait(timeout=5)
        assert not os.path.exists(f"/proc/{child}") or open(f"/proc/{child}/stat", encoding="utf-8").read().split(
            ") ")[1].startswith("Z")
        assert find_shims(CID) == {}
    finally:
        shim.kill()
        shim.wait()


def test_shims_of_other_containers_or_namespaces_are_not_found():
    others = [fake_shim(cid="0" * 64), fake_shim(namespace="k8s.io")]
    try:
        time.sleep(0.3)
        assert find_shims(CID) == {}
        assert list(find_shims("0" * 64)) == [others[0].pid]
        assert list(find_shims(CID, namespace="k8s.io")) == [others[1].pid]
    finally:
        stop_shims({**find_shims("0" * 64), **find_shims(CID, namespace="k8s.io")}, wait=2)
        for other in others:
            other.kill()
            other.wait()


def test_stopping_what_is_already_gone_is_not_an_error():
    assert stop_shims({999999999: [999999998]}, wait=0.2) == []


# Tests run in parallel (ansible-test units: pytest -n auto): each test's shims serve a container id of its own.
ENDING_CID = "5e" * 32
COPY_CID = "5c" * 32


def test_a_shim_with_nothing_under_it_is_given_time_to_end():
    ending = subprocess.Popen(  # pylint: disable=consider-using-with
        ["containerd-shim-runc-v2", "-c", "import time; time.sleep(0.5)", "-namespace", "moby", "-id", ENDING_CID],
        executable=sys.executable)
    try:
        time.sleep(0.1)
        assert list(find_shims(ENDING_CID)) == [ending.pid]
        reaper = threading.Timer(0.6, ending.wait)  # reaped once it ends, as containerd reaps its shims
        reaper.start()
        assert lingering_shims(ENDING_CID, wait=5) == {}
        reaper.join()
    finally:
        ending.kill()
        ending.wait()


def test_a_shim_with_processes_under_it_is_a_copy_at_once():
    shim = fake_shim(cid=COPY_CID)
    try:
        wait_for_child(shim.pid, cid=COPY_CID)
        started = time.monotonic()
        assert list(lingering_shims(COPY_CID, wait=5)) == [shim.pid]
        assert time.monotonic() - started < 1
    finally:
        stop_shims(find_shims(COPY_CID), wait=2)
        shim.kill()
        shim.wait()
