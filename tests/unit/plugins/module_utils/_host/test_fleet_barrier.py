# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One host's side of the barrier across hosts: the markers the playbook reads and writes."""

from __future__ import annotations

import json
import os
import threading
import time

from ansible_collections.fleet.checkpoint.plugins.module_utils._host import fleet_barrier
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.fleet_barrier import FleetBarrier


def test_a_fresh_run_forgets_an_earlier_runs_markers(tmp_path):
    directory = tmp_path / "barrier"
    directory.mkdir()
    for marker in ("frozen", "go", "abort", "ended"):
        (directory / marker).write_text("")
    FleetBarrier(str(directory), 5).prepare()
    assert os.listdir(directory) == [] and oct(os.stat(directory).st_mode & 0o777) == "0o700"


def test_arrive_then_go(tmp_path):
    barrier = FleetBarrier(str(tmp_path / "barrier"), 5)
    barrier.prepare()
    barrier.arrive("frozen", members=["web"])
    said = json.loads((tmp_path / "barrier" / "frozen").read_text())
    assert said["members"] == ["web"] and said["at"] > 0
    threading.Timer(0.05, lambda: (tmp_path / "barrier" / "go").write_text("")).start()
    assert barrier.wait() == fleet_barrier.GO


def test_abort_says_why_and_silence_times_out(tmp_path):
    barrier = FleetBarrier(str(tmp_path / "barrier"), 0.05)
    barrier.prepare()
    assert barrier.wait() == fleet_barrier.TIMEOUT
    assert "did not open within barrier_timeout=0.05s" in fleet_barrier.explain(fleet_barrier.TIMEOUT, 0.05)
    (tmp_path / "barrier" / "abort").write_text("hosts not frozen: web-2 (did not run)")
    assert barrier.wait() == fleet_barrier.ABORT
    assert fleet_barrier.explain(fleet_barrier.ABORT, 5, barrier.reason()) == (
        "the fleet's barrier was aborted: hosts not frozen: web-2 (did not run)")
    barrier.end()
    assert (tmp_path / "barrier" / "ended").exists()


def test_the_round_before_the_freeze_opens_on_freeze_and_waits_as_long_as_it_is_told(tmp_path):
    barrier = FleetBarrier(str(tmp_path / "barrier"), 60)
    barrier.prepare()
    (tmp_path / "barrier" / "go").write_text("")  # (the go of the frozen round does not open this one)
    started = time.monotonic()
    assert barrier.wait(fleet_barrier.FREEZE, timeout=0.05) == fleet_barrier.TIMEOUT
    assert time.monotonic() - started < 5  # its own bound, not the barrier's 60 s
    threading.Timer(0.05, lambda: (tmp_path / "barrier" / "freeze").write_text("")).start()
    assert barrier.wait(fleet_barrier.FREEZE, timeout=5) == fleet_barrier.GO
    barrier.prepare()
    assert not (tmp_path / "barrier" / "freeze").exists()  # a new run starts without it
