# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A playbook run's claim on a host, held across reboots: a root-only file created exclusively.

docker_checkpoint's flock (_host_lock) covers one module call and is gone when the process ends. A host_reboot or a
migration is many calls and a reboot long; a second run must not slip in between them. The run lock is a file that
names its owner (a run id), what it does and when it expires; only its owner releases it. A lock past its expiry is
abandoned (the run that took it died) and can be taken over; before that, only with force.
"""

from __future__ import annotations

import json
import os
import time

DEFAULT_PATH = "/var/lib/fleet-checkpoint/run.lock"


class LockHeld(Exception):
    """Another run holds the lock; the message names it and what to do."""


def read(path):
    """The lock's record, {} when there is none, {'unreadable': True} when the file cannot be parsed."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.loads(handle.read())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        return {"unreadable": True}
    return data if isinstance(data, dict) else {"unreadable": True}


def describe(record, path):
    if record.get("unreadable"):
        return f"{path} exists but cannot be read"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.get("since") or 0))
    return (f"run {record.get('owner')!r} ({record.get('purpose') or 'fleet.checkpoint'}, from "
            f"{record.get('controller') or 'an unknown controller'}, since {when})")


def _create(path, record):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True))


def acquire(path, record, timeout=0, force=False, check_mode=False, interval=1.0, clock=time.time, sleep=time.sleep):
    """Take the lock for record['owner'].

    Returns (changed, previous): previous is the record of an expired or forced-out holder, or None. Raises LockHeld
    when another live run keeps it for longer than timeout seconds.
    """
    deadline = clock() + timeout
    while True:
        current = read(path)
        if current and current.get("owner") == record["owner"]:
            return False, None
        expired = bool(current) and not current.get("unreadable") and (current.get("expires") or 0) < clock()
        if not current or expired or force:
            if check_mode:
                return True, current or None
            if current:
                os.remove(path)
            try:
                _create(path, record)
            except FileExistsError:
                continue  # another run took it between the read and the create: look again
            return True, current or None
        if clock() >= deadline:
            raise LockHeld(
                f"this host is in use by {describe(current, path)}: fleet.checkpoint does one run per host at a time. "
                f"Wait for that run to end (or raise the lock timeout). If it is dead, the lock expires by itself at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(current.get('expires') or 0))}; to take it over "
                "now, run again with force (fleet_checkpoint_break_lock=true) after making sure it is not running")
        sleep(min(interval, max(deadline - clock(), 0.01)))


def release(path, owner, force=False, check_mode=False):
    """Give the lock back. Returns (changed, previous record). Raises LockHeld when someone else holds it."""
    current = read(path)
    if not current:
        return False, None
    if current.get("owner") != owner and not force:
        raise LockHeld(f"the lock {path} belongs to {describe(current, path)}, not to {owner!r}: it was left alone")
    if not check_mode:
        os.remove(path)
    return True, current
