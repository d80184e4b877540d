# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The group restore barrier: runc.conf given back as it was, and the CRIU action script run as CRIU runs it (its
environment), for a member and for any other container."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.restore_barrier import RestoreBarrier

CONF = "# Ansible managed\nlog-file /var/log/criu/runc.log\ntcp-established\n"


def barrier(tmp_path, ids, seconds=30.0, conf=CONF):
    runc_conf = tmp_path / "criu" / "runc.conf"
    if conf is not None:
        runc_conf.parent.mkdir(parents=True)
        runc_conf.write_text(conf)
    return RestoreBarrier(ids, seconds, runc_conf=str(runc_conf), directory=str(tmp_path / "run" / "group"),
                          script=str(tmp_path / "lib" / "barrier")), runc_conf


def own_cgroup_token():
    """A word of this process's cgroup path, as a container id appears in its processes' cgroup paths."""
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        words = re.findall(r"[A-Za-z0-9._-]+", handle.read().split(":", 2)[-1])
    assert words, "no word in /proc/self/cgroup"
    return words[-1]


def run_script(held, action="post-restore", pid=None):
    env = dict(os.environ, CRTOOLS_SCRIPT_ACTION=action, CRTOOLS_INIT_PID=str(pid or os.getpid()))
    return subprocess.Popen([held.script], env=env)  # pylint: disable=consider-using-with


def test_runc_conf_gets_the_line_for_the_restore_and_is_given_back(tmp_path):
    held, runc_conf = barrier(tmp_path, ["a" * 64])
    with held:
        text = runc_conf.read_text()
        assert text.startswith(CONF) and text.endswith(f"action-script {held.script}\n")
        assert oct(os.stat(held.script).st_mode & 0o777) == "0o700"
        assert os.listdir(os.path.join(held.dir, "members")) == ["a" * 64]
    assert runc_conf.read_text() == CONF
    assert not os.path.exists(held.dir)


def test_a_missing_runc_conf_is_made_for_the_restore_and_removed(tmp_path):
    held, runc_conf = barrier(tmp_path, ["b" * 64], conf=None)
    with held:
        assert runc_conf.read_text() == f"action-script {held.script}\n"
    assert not runc_conf.exists()


def test_a_line_a_killed_restore_left_is_used_then_removed(tmp_path):
    line = f"action-script {tmp_path / 'lib' / 'barrier'}\n"
    held, runc_conf = barrier(tmp_path, ["c" * 64], conf=CONF + line)
    with held:
        assert runc_conf.read_text() == CONF + line
    assert runc_conf.read_text() == CONF


def test_the_script_holds_a_member_until_go(tmp_path):
    member = own_cgroup_token()
    held = barrier(tmp_path, [member])[0]
    with held:
        assert run_script(held, action="network-lock").wait(5) == 0  # other steps: nothing to do
        script = run_script(held)
        deadline = time.monotonic() + 5
        while member not in held.ready():
            assert time.monotonic() < deadline and script.poll() is None, "the member never said it was ready"
            time.sleep(0.01)
        time.sleep(0.1)
        assert script.poll() is None, "the member was let go before go"
        threading.Timer(0.05, held.go).start()
        assert script.wait(5) == 0


def test_abort_and_the_deadline_fail_the_member_and_others_pass(tmp_path):
    member = own_cgroup_token()
    held = barrier(tmp_path, [member])[0]
    with held:
        script = run_script(held)
        while member not in held.ready():
            time.sleep(0.01)
        held.abort()
        assert script.wait(5) == 1
    held = barrier(tmp_path / "late", [member], seconds=1)[0]
    with held:
        script = run_script(held)
        assert script.wait(5) == 1  # held past its time: CRIU kills what it restored
        assert held.ready() == set()  # and the member is no longer said to be ready
    held = barrier(tmp_path / "other", ["f" * 64])[0]
    with held:
        assert run_script(held).wait(5) == 0  # not a member: its restore goes on


def test_a_barrier_whose_module_is_gone_holds_nothing(tmp_path):
    member = own_cgroup_token()
    held = barrier(tmp_path, [member])[0]
    with held:
        gone = subprocess.Popen(["true"])  # pylint: disable=consider-using-with
        gone.wait()
        with open(os.path.join(held.dir, "owner"), "w", encoding="utf-8") as handle:
            handle.write(str(gone.pid))  # as if the module had been killed: its restores go on unheld
        assert run_script(held).wait(5) == 0
