# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The daemon watch, on real processes: this test's own process stands in for dockerd, a child for its successor."""

from __future__ import annotations

import os
import subprocess
import sys

from ansible_collections.fleet.checkpoint.plugins.module_utils._host.daemon_watch import DaemonWatch, daemon_identity


def pidfile(tmp_path, pid):
    path = tmp_path / "docker.pid"
    path.write_text(f"{pid}\n")
    return str(path)


def test_identity_is_the_pid_and_its_start_time(tmp_path):
    identity = daemon_identity(pidfile(tmp_path, os.getpid()))
    assert identity[0] == os.getpid()
    assert identity[1] > 0
    assert daemon_identity(pidfile(tmp_path, os.getpid())) == identity


def test_the_same_daemon_has_not_restarted(tmp_path):
    watch = DaemonWatch(pidfile(tmp_path, os.getpid()))
    assert watch.start is not None
    assert not watch.restarted()


def test_another_process_in_the_pid_file_is_a_restart(tmp_path):
    path = pidfile(tmp_path, os.getpid())
    watch = DaemonWatch(path)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as child:
        try:
            pidfile(tmp_path, child.pid)
            assert watch.restarted()
        finally:
            child.kill()


def test_a_daemon_that_is_gone_is_a_restart(tmp_path):
    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:
        child.wait()
    path = pidfile(tmp_path, os.getpid())
    watch = DaemonWatch(path)
    pidfile(tmp_path, child.pid)  # a process that has exited (its PID is not reused this fast)
    assert watch.restarted()
    os.unlink(path)
    assert watch.restarted()


def test_no_conclusion_without_a_pid_file_or_for_a_remote_daemon(tmp_path):
    assert daemon_identity(str(tmp_path / "absent.pid")) is None
    assert not DaemonWatch(str(tmp_path / "absent.pid")).restarted()
    (tmp_path / "garbage.pid").write_text("not a pid")
    assert daemon_identity(str(tmp_path / "garbage.pid")) is None
    assert not DaemonWatch(pidfile(tmp_path, os.getpid()), enabled=False).restarted()
