# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A barrier across hosts, through files in a root-only directory on each host that the playbook reads and writes.

A group spread over several hosts is frozen on each (docker_checkpoint consistent=true with barrier_dir, run
asynchronously); each module says it has arrived (`frozen`, or `ready` for a restore) and waits. The playbook waits
until every host has arrived, then writes `go` on every host - or `abort` on every host when one cannot join. A module
that hears neither within its timeout gives up by itself (thaws its members): nothing stays frozen because the
controller went away. `ended` says the module has finished (so that the playbook does not wait for a host that
failed before arriving).

A group moved from several hosts meets once more before that, while it still runs: each host says `prepared` once its
connections to the target are made and its disk state pre-copied, and freezes only on `freeze` - so that no host
waits frozen while another is still pre-copying."""

from __future__ import annotations

import json
import os
import time

from ansible_collections.fleet.checkpoint.plugins.module_utils._host import private_files

GO, ABORT, TIMEOUT = "go", "abort", "timeout"
FREEZE = "freeze"  # the go of the round before the freeze (a group moved from several hosts)


class FleetBarrier:
    """One host's side of the barrier in `directory` (made root-only)."""

    def __init__(self, directory: str, timeout: float) -> None:
        self.directory = directory
        self.timeout = timeout

    def prepare(self) -> None:
        """A fresh directory for this run: markers of an earlier run are removed."""
        private_files.make_private_dir(self.directory)
        for marker in ("prepared", FREEZE, "frozen", "ready", GO, ABORT, "ended"):
            try:
                os.unlink(os.path.join(self.directory, marker))
            except FileNotFoundError:
                pass

    def arrive(self, marker: str, **facts: object) -> None:
        """Say this host has arrived (`frozen` or `ready`), with what the playbook may report."""
        private_files.write_private(os.path.join(self.directory, marker),
                                    json.dumps(dict(facts, at=round(time.time(), 3))).encode())

    def wait(self, marker: str = GO, timeout: float | None = None) -> str:
        """GO once the playbook wrote `marker` (GO, or FREEZE), ABORT, or TIMEOUT when it said nothing within the
        timeout (`timeout`, else the barrier's)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if os.path.exists(os.path.join(self.directory, ABORT)):
                return ABORT
            if os.path.exists(os.path.join(self.directory, marker)):
                return GO
            if time.monotonic() > deadline:
                return TIMEOUT
            time.sleep(0.01)

    def reason(self) -> str:
        """What the playbook wrote into `abort` (which hosts could not join), '' when nothing."""
        try:
            with open(os.path.join(self.directory, ABORT), encoding="utf-8", errors="replace") as handle:
                return handle.read(2000).strip()
        except OSError:
            return ""

    def end(self) -> None:
        try:
            private_files.write_private(os.path.join(self.directory, "ended"), b"")
        except OSError:
            pass


def explain(outcome: str, timeout: float, reason: str = "") -> str:
    """Why a member did not go on, in words (`reason`: what the playbook said when it aborted)."""
    if outcome == ABORT:
        return f"the fleet's barrier was aborted: {reason or 'another host of the group could not join'}"
    return f"the fleet's barrier did not open within barrier_timeout={timeout:g}s (another host did not join)"
