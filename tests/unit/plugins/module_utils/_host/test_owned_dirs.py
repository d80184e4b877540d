# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Work directories claimed by real processes: a sweep removes those whose every claimant is gone (a killed run),
and keeps those of a process that runs, whichever of its claimants it is."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ansible_collections.fleet.checkpoint.plugins.module_utils._host import owned_dirs


def ended_process():
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_a_killed_run_s_directory_goes_and_a_running_one_stays(tmp_path):
    for name in ("killed", "mine", "daemon", "unclaimed-new", "unclaimed-old", "garbled"):
        (tmp_path / name).mkdir()
    (tmp_path / "a-file").write_text("not a directory")
    owned_dirs.claim(str(tmp_path / "killed"), ended_process())
    owned_dirs.claim(str(tmp_path / "mine"))  # this process
    sleeper = subprocess.Popen(["sleep", "30"])  # pylint: disable=consider-using-with
    try:
        owned_dirs.claim(str(tmp_path / "daemon"), ended_process())  # the module that started the daemon: gone
        owned_dirs.claim(str(tmp_path / "daemon"), sleeper.pid)  # the daemon: serving still
        old = time.time() - owned_dirs.UNCLAIMED_AGE - 60
        os.utime(tmp_path / "unclaimed-old", (old, old))
        (tmp_path / "garbled" / owned_dirs.OWNER).write_text("nonsense\n")  # (a claim being written: young)
        assert owned_dirs.sweep(str(tmp_path)) == ["killed", "unclaimed-old"]
        assert sorted(os.listdir(tmp_path)) == ["a-file", "daemon", "garbled", "mine", "unclaimed-new"]
        os.utime(tmp_path / "garbled", (old, old))
        assert owned_dirs.sweep(str(tmp_path)) == ["garbled"]  # no claim in it for an hour: left behind
        assert oct(os.stat(tmp_path / "mine" / owned_dirs.OWNER).st_mode & 0o777) == "0o600"
    finally:
        sleeper.kill()
        sleeper.wait()
    assert owned_dirs.sweep(str(tmp_path)) == ["daemon"]  # its daemon ended too


def test_a_pid_reused_by_another_process_does_not_keep_the_directory(tmp_path):
    (tmp_path / "reused").mkdir()
    (tmp_path / "reused" / owned_dirs.OWNER).write_text(f"{os.getpid()} 1\n")  # this PID, another start time
    assert owned_dirs.sweep(str(tmp_path)) == ["reused"]


def test_no_parent_directory_is_nothing_to_sweep(tmp_path):
    assert owned_dirs.sweep(str(tmp_path / "none")) == []
