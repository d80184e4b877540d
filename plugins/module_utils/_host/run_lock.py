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

import contextlib
import fcntl
import json
import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    LockRecord = dict[str, Any]  # owner, purpose, controller, since, expires (epoch seconds); or unreadable

DEFAULT_PATH = "/var/lib/fleet-checkpoint/run.lock"


class LockHeld(Exception):
    """Another run holds the lock; the message names it and what to do."""


def read(path: str) -> LockRecord:
    """The lock's record, {} when there is none, {'unreadable': True, 'expires': mtime + 4 h} when the file cannot be
    parsed (a run killed while writing it: it expires like any other)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.loads(handle.read())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        data = None
    if isinstance(data, dict):
        return data
    try:
        return {"unreadable": True, "expires": os.path.getmtime(path) + 4 * 3600}
    except OSError:
        return {}


@contextlib.contextmanager
def _guard(path: str) -> Iterator[None]:
    """Serialise the read-check-write of acquire and release between runs (an flock on the lock's directory, so
    that no extra file is left behind)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def describe(record: LockRecord, path: str) -> str:
    if record.get("unreadable"):
        return f"{path} exists but cannot be read"
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.get("since") or 0))
    return (f"run {record.get('owner')!r} ({record.get('purpose') or 'fleet.checkpoint'}, from "
            f"{record.get('controller') or 'an unknown controller'}, since {when})")


def _create(path: str, record: LockRecord, replace: bool = False) -> None:
    """Write the record to a private temporary file, then link it into place: the lock file appears complete or not
    at all, and never replaces another run's (replace: our own, renewed, is replaced in one step)."""
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(record, sort_keys=True))
        if replace:
            os.replace(tmp, path)  # (tmp is gone: it is the lock now)
        else:
            os.link(tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.remove(tmp)


def acquire(path: str, record: LockRecord, timeout: float = 0, force: bool = False, check_mode: bool = False,
            interval: float = 1.0, clock: Callable[[], float] = time.time,
            sleep: Callable[[float], None] = time.sleep) -> tuple[bool, LockRecord | None]:
    """Take the lock for record['owner'].

    Returns (changed, previous): previous is the record of an expired or forced-out holder, or None. Raises LockHeld
    when another live run keeps it for longer than timeout seconds.
    """
    deadline = clock() + timeout
    while True:
        if check_mode:
            current = read(path)
        else:
            with _guard(path):
                current = read(path)
                taken = _take(path, record, current, force, clock)
            if taken is not None:
                return taken
        if current and current.get("owner") == record["owner"]:
            return False, None
        if check_mode and (not current or _expired(current, clock) or force):
            return True, current or None
        if clock() >= deadline:
            raise LockHeld(
                f"this host is in use by {describe(current, path)}: fleet.checkpoint does one run per host at a time. "
                f"Wait for that run to end (or raise the lock timeout). If it is dead, the lock expires by itself at "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(current.get('expires') or 0))}; to take it over "
                "now, run again with force (fleet_checkpoint_break_lock=true) after making sure it is not running")
        sleep(min(interval, max(deadline - clock(), 0.01)))


def _expired(current: LockRecord, clock: Callable[[], float]) -> bool:
    return (current.get("expires") or 0) < clock()


def _take(path: str, record: LockRecord, current: LockRecord, force: bool,
          clock: Callable[[], float]) -> tuple[bool, LockRecord | None] | None:
    """Under the guard: (changed, previous) when the lock is (already) ours now, None when another run keeps it.

    Ours already: its lease is renewed from now (a run that claimed the host early, in a pre-flight, claims it again
    when it comes to work on it), which is not a change of holder."""
    if current and current.get("owner") == record["owner"]:
        if (record.get("expires") or 0) > (current.get("expires") or 0):
            _create(path, dict(record, since=current.get("since", record.get("since"))), replace=True)
        return False, None
    if current and not (_expired(current, clock) or force):
        return None
    if current:
        os.remove(path)
    _create(path, record)
    return True, current or None


def release(path: str, owner: str, force: bool = False, check_mode: bool = False) -> tuple[bool, LockRecord | None]:
    """Give the lock back. Returns (changed, previous record). Raises LockHeld when someone else holds it."""
    if check_mode:
        return _release(path, owner, force, True)
    if not os.path.exists(path):
        return False, None
    with _guard(path):
        return _release(path, owner, force, False)


def _release(path: str, owner: str, force: bool, check_mode: bool) -> tuple[bool, LockRecord | None]:
    current = read(path)
    if not current:
        return False, None
    if current.get("owner") != owner and not force:
        raise LockHeld(f"the lock {path} belongs to {describe(current, path)}, not to {owner!r}: it was left alone")
    if not check_mode:
        os.remove(path)
    return True, current


def give_back(owner: str, path: str | None = None, check_mode: bool = False) -> tuple[bool, str | None]:
    """The lock given back as the last act of a call that finished a run's work on the host (docker_checkpoint's
    release_run_lock): (released, warning). Nobody holding it is no error; another run holding it is left alone,
    with a warning. Check mode gives nothing back."""
    path = path or DEFAULT_PATH
    if check_mode:
        return False, None
    try:
        released, unused = release(path, owner)
    except LockHeld as exc:
        return False, str(exc)
    except OSError as exc:
        return False, f"the run lock {path} could not be given back: {exc}"
    return released, None
