# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Ansible callback for the benchmark: every task's start and every host's result, with times, as JSON lines.

Enabled by tools/bench/run.py (ANSIBLE_CALLBACK_PLUGINS, ANSIBLE_CALLBACKS_ENABLED=bench_log) and written to the
file named by BENCH_LOG. It sits beside the normal output and changes nothing in the run.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: bench_log
type: aggregate
short_description: task and result times as JSON lines, for tools/bench
description: Writes one JSON object per task start and per host result to the file named by BENCH_LOG.
"""

# What is kept of a module's result: figures, not payloads.
KEPT = ("changed", "failed", "delta", "start", "end", "rc", "msg", "group")
KEPT_ROW = ("container", "action", "method", "size", "duration", "dump_call_seconds", "restore_call_seconds",
            "containerd_client", "restore_path", "import_seconds", "failed", "msg", "archive", "dump_seconds",
            "restore_seconds", "dump_started_at", "resumed_at", "sent", "received", "bytes", "seconds", "peak_rss")


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_log"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        path = os.environ.get("BENCH_LOG")
        self._out = open(path, "a", encoding="utf-8") if path else None  # noqa: SIM115 (open for the whole run)

    def _write(self, **event):
        if self._out:
            event["t"] = time.time()
            self._out.write(json.dumps(event, default=str) + "\n")
            self._out.flush()

    def v2_playbook_on_start(self, playbook):
        self._write(event="playbook", name=os.path.basename(playbook._file_name))

    def v2_playbook_on_play_start(self, play):
        self._write(event="play", name=play.get_name())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._write(event="task", name=task.get_name(), action=task.action, uuid=task._uuid)

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _result(self, status, result):
        data = result._result
        kept = {key: data[key] for key in KEPT if key in data}
        rows = data.get("results")
        if isinstance(rows, list):
            kept["results"] = [{key: row[key] for key in KEPT_ROW if key in row} for row in rows if isinstance(row, dict)]
        self._write(event="result", status=status, host=result._host.get_name(), task=result._task.get_name(),
                    action=result._task.action, uuid=result._task._uuid, result=kept)

    def v2_runner_on_ok(self, result):
        self._result("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result("ignored" if ignore_errors else "failed", result)

    def v2_runner_on_skipped(self, result):
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._result("unreachable", result)

    def v2_playbook_on_stats(self, stats):
        self._write(event="end")
        if self._out:
            self._out.close()
            self._out = None
