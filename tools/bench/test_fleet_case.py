# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet case's split of a host_reboot.yml run, and the controller's cost as controller_cost.py measures it."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import controller_cost  # noqa: E402 pylint: disable=wrong-import-position
import fleet_case  # noqa: E402 pylint: disable=wrong-import-position


def task(name, action, wall, row=None):
    return {"name": name, "action": action, "wall": wall,
            "results": {"h1": {"results": [row]}} if row else {"h1": {}}}


def test_a_run_is_split_into_its_parts_and_the_rest():
    tasks = [task("Pre-flight", "fleet.checkpoint.docker_checkpoint", 1.0),
             task("Checkpoint", "fleet.checkpoint.docker_checkpoint", 2.0, {"dump_call_seconds": 0.5}),
             task("Reboot", "ansible.builtin.reboot", 6.0),
             task("Wait for the Docker daemon", "ansible.builtin.command", 0.5),
             task("Restore", "fleet.checkpoint.docker_checkpoint", 1.5, {"restore_call_seconds": 0.4})]
    parts = fleet_case.split(tasks, 12.0)
    assert parts == {"checkpoint": 2.0, "reboot": 6.0, "docker": 0.5, "restore": 1.5, "overhead": 2.0, "total": 12.0}


def test_the_trixie_hosts_in_their_order():
    names = ["fleet-lab-10", "fleet-lab-2", "fleet-lab-bookworm", "fleet-lab-1", "fleet-lab-2-bookworm"]
    assert fleet_case._trixie(names) == ["fleet-lab-1", "fleet-lab-2", "fleet-lab-10"]  # pylint: disable=W0212


def test_the_controller_cost_counts_every_process_of_the_run():
    # A child busy for ~0.3 CPU-seconds under the measured process, and 20 MiB held a moment.
    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
    hold = "import time\nx = bytearray(20 * 1024 * 1024)\nx[::4096] = b'1' * len(x[::4096])\ntime.sleep(0.8)\n"
    script = (f"import subprocess, sys\nsubprocess.run([sys.executable, '-c', {busy!r}])\n"
              f"subprocess.run([sys.executable, '-c', {hold!r}])\n")
    argv = [sys.executable, "-c", script]
    proc, cpu, peak = controller_cost.run_measured(argv, {}, 60)
    assert proc.returncode == 0, proc.stderr
    assert 0.3 <= cpu < 3, cpu
    assert 20 <= peak < 200, peak
