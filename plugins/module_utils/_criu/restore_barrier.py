# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A barrier that holds several containers' restores at the point where CRIU has rebuilt every process but let none
run (its `post-restore` action, before the network is unlocked), until all of them got there: then they all resume.

Docker gives CRIU no options of its own; runc hands it /etc/criu/runc.conf, where an `action-script` line names a
program CRIU runs at each step. For the time of a group restore that line names BARRIER_SCRIPT, which, for a member
of the group (found by the container id in its restored init's cgroup), marks it ready and waits for `go`; `abort`
(or the deadline) makes it fail, and CRIU then kills what it restored: nothing of that member ever ran. For any
other container's checkpoint or restore it does nothing."""

from __future__ import annotations

import os
import shutil
from typing import Iterable

from ansible_collections.fleet.checkpoint.plugins.module_utils._host import private_files

RUNC_CONF = "/etc/criu/runc.conf"
BARRIER_DIR = "/run/fleet-checkpoint/group-restore"
BARRIER_SCRIPT = "/var/lib/fleet-checkpoint/criu-group-barrier"

SCRIPT = """#!/bin/sh
# fleet.checkpoint: the group restore barrier (a CRIU action script, named in runc.conf only during a group restore).
[ "$CRTOOLS_SCRIPT_ACTION" = post-restore ] || exit 0
dir=%(dir)s
[ -d "$dir/members" ] && [ -n "$CRTOOLS_INIT_PID" ] || exit 0
# A barrier whose module is gone (killed) holds nothing: its restores go on as without it.
owner=$(cat "$dir/owner" 2>/dev/null) && kill -0 "$owner" 2>/dev/null || exit 0
cgroup=$(cat "/proc/$CRTOOLS_INIT_PID/cgroup" 2>/dev/null) || exit 0
for member in "$dir"/members/*; do
    id=${member##*/}
    case "$cgroup" in *"$id"*) ;; *) continue ;; esac
    deadline=$(( $(date +%%s) + $(cat "$dir/hold") ))
    : > "$dir/ready/$id"
    while [ ! -e "$dir/go" ]; do
        if [ -e "$dir/abort" ] || [ "$(date +%%s)" -ge "$deadline" ]; then
            rm -f "$dir/ready/$id"
            exit 1
        fi
        sleep 0.01
    done
    exit 0
done
exit 0
"""


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


class RestoreBarrier:
    """`with RestoreBarrier(ids, seconds):` the barrier is up for the containers `ids` (full ids) until the block
    ends; runc.conf is given back as it was. A member restored and held waits at most `seconds` for the others."""

    def __init__(self, ids: Iterable[str], seconds: float, runc_conf: str = RUNC_CONF, directory: str = BARRIER_DIR,
                 script: str = BARRIER_SCRIPT) -> None:
        self.ids = sorted(set(ids))
        self.seconds = seconds
        self.runc_conf = runc_conf
        self.dir = directory
        self.script = script
        self.line = f"action-script {script}"
        self.original: str | None = None
        self.added = False

    def __enter__(self) -> RestoreBarrier:
        private_files.make_private_dir(os.path.dirname(self.script))
        text = SCRIPT % {"dir": self.dir}
        if _read(self.script) != text:
            private_files.write_private(self.script, text.encode())
        os.chmod(self.script, 0o700)
        shutil.rmtree(self.dir, ignore_errors=True)
        private_files.make_private_dir(self.dir)
        for sub in ("members", "ready"):
            private_files.make_private_dir(os.path.join(self.dir, sub))
        for cid in self.ids:
            private_files.write_private(os.path.join(self.dir, "members", cid), b"")
        private_files.write_private(os.path.join(self.dir, "hold"), str(max(1, int(self.seconds))).encode())
        private_files.write_private(os.path.join(self.dir, "owner"), str(os.getpid()).encode())
        self.original = _read(self.runc_conf)
        lines = (self.original or "").splitlines()
        # A line already there was left by a group restore that was killed (this one holds the host's lock): it is
        # used, and removed at the end like one added now.
        self.added = True
        if self.line not in (line.strip() for line in lines):
            os.makedirs(os.path.dirname(self.runc_conf), mode=0o755, exist_ok=True)
            self._write_conf("\n".join(lines + [self.line]) + "\n")
        else:
            self.original = "\n".join(line for line in lines if line.strip() != self.line) + "\n"
        return self

    def _write_conf(self, text: str) -> None:
        temporary = f"{self.runc_conf}.fleet-tmp"
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, self.runc_conf)

    def ready(self) -> set[str]:
        """The members whose processes are all restored and held."""
        try:
            return set(os.listdir(os.path.join(self.dir, "ready"))) & set(self.ids)
        except FileNotFoundError:
            return set()

    def go(self) -> None:
        private_files.write_private(os.path.join(self.dir, "go"), b"")

    def abort(self) -> None:
        private_files.write_private(os.path.join(self.dir, "abort"), b"")

    def __exit__(self, *exc: object) -> None:
        if self.added:
            current = _read(self.runc_conf)
            if current is not None:
                kept = [line for line in current.splitlines() if line.strip() != self.line]
                if self.original is None and not any(line.strip() for line in kept):
                    os.unlink(self.runc_conf)  # it did not exist before
                else:
                    self._write_conf("\n".join(kept) + "\n" if kept else "")
        shutil.rmtree(self.dir, ignore_errors=True)
