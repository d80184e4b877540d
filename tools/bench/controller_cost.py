# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What a playbook run costs the controller: CPU seconds and peak memory of ansible-playbook and everything it starts.

The run gets a session of its own; every process of that session counts (ansible-playbook, its forks, the modules'
local actions, the ssh clients), and so do the SSH connection masters it leaves behind (ControlPersist: they leave
the session), found by the run's own ControlPath directory. CPU: what the run's waited-for processes used (the
kernel's account of reaped children) plus what the masters used, read before they are stopped. Memory: the largest
sum of the processes' proportional set sizes (Pss: a page the forks share counts once) sampled every 0.2 s.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import tempfile
import threading

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid):
    """(session id, CPU seconds, command name) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            text = handle.read()
    except OSError:
        return None
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[3]), (int(fields[11]) + int(fields[12])) / TICK, name


def _pss_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _is_master(pid, control_dir):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return control_dir.encode() in handle.read()
    except OSError:
        return False


class _Sampler:
    def __init__(self, session, control_dir):
        self.session = session
        self.control_dir = control_dir
        self.masters = {}  # pid: CPU seconds, last seen
        self.peak_kib = 0

    def sample(self):
        total = 0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            found = _stat(entry)
            if found is None:
                continue
            sid, cpu, name = found
            if sid == self.session:
                total += _pss_kib(entry)
            elif name == "ssh" and (entry in self.masters or _is_master(entry, self.control_dir)):
                self.masters[entry] = cpu
                total += _pss_kib(entry)
        self.peak_kib = max(self.peak_kib, total)


def run_measured(argv, env, timeout):
    """Run argv (a playbook); (CompletedProcess, controller CPU seconds, peak memory in MiB)."""
    control_dir = tempfile.mkdtemp(prefix="fleet-bench-cp-")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                          env={**env, "ANSIBLE_SSH_CONTROL_PATH_DIR": control_dir}) as proc:
        sampler = _Sampler(proc.pid, control_dir)
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                sampler.sample()
                stop.wait(0.2)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            out, err = proc.communicate(timeout=timeout)
        finally:
            stop.set()
            watcher.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    sampler.sample()  # the masters' CPU at the end, before they are stopped
    for pid in sampler.masters:
        try:
            os.kill(int(pid), signal.SIGTERM)
        except OSError:
            pass
    shutil.rmtree(control_dir, ignore_errors=True)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime) + sum(sampler.masters.values())
    completed = subprocess.CompletedProcess(argv, proc.returncode, out, err)
    return completed, cpu, sampler.peak_kib / 1024
