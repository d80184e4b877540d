# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Reading, changing and writing Docker's daemon.json without disturbing anything we do not own.

Plain Python, no Ansible: every rule here is unit-tested directly.
- every other key keeps its position, value and type; new keys are appended;
- a missing file, or an empty one, is an empty object; invalid JSON, duplicate keys or a top level that is not
  an object are refused with an error naming the file and the position;
- a symlinked path is followed: the link stays, its target is written;
- writes are atomic (temporary file in the same directory, fsync, rename) and keep the file's mode and owner.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Container, Mapping
    from typing import Any, TypeAlias

    from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import JSONDict

    Indent: TypeAlias = int | str
    """json.dumps indentation: a number of spaces, or a tab character."""

DEFAULT_PATH = "/etc/docker/daemon.json"
DEFAULT_INDENT = 2


class DaemonConfigError(Exception):
    """daemon.json cannot be used as it is; the message says what is wrong and what to do."""


class DaemonConfig:
    """One daemon.json as found on disk."""

    def __init__(self, path: str, real_path: str, exists: bool, text: str, data: JSONDict, indent: Indent) -> None:
        self.path = path
        self.real_path = real_path
        self.exists = exists
        self.text = text
        self.data = data
        self.indent = indent

    def with_changes(self, updates: Mapping[str, Any] | None = None, removals: Container[str] = ()) -> JSONDict:
        """Return the data with `updates` set and `removals` taken out: a new dict, order preserved."""
        return apply_changes(self.data, updates or {}, removals)

    def render(self, data: Mapping[str, Any]) -> str:
        """The file's text for `data`: the original text when nothing changed, else JSON in the file's indentation."""
        if self.exists and data == self.data:
            return self.text
        return render(data, self.indent)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> JSONDict:
    seen: JSONDict = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def parse(text: str, path: str = DEFAULT_PATH) -> JSONDict:
    """Parse daemon.json text into an ordered dict. Empty or blank text is {}."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise DaemonConfigError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
            "dockerd would refuse to start with it. Fix or remove the file, then run again: it was not changed."
        ) from exc
    except ValueError as exc:
        raise DaemonConfigError(
            f"{path} has a {exc}: dockerd would refuse to start with it. "
            "Keep one of the two entries, then run again: the file was not changed."
        ) from exc
    if not isinstance(data, dict):
        raise DaemonConfigError(
            f"{path} holds a JSON {type(data).__name__}, not an object ({{...}}): dockerd needs an object at the top "
            "level. Fix the file, then run again: it was not changed."
        )
    return data


def detect_indent(text: str) -> Indent:
    """The indentation of the first indented line (a number of spaces, or a tab), else DEFAULT_INDENT."""
    match = re.search(r"^([ \t]+)\S", text, re.MULTILINE)
    if not match:
        return DEFAULT_INDENT
    prefix = match.group(1)
    if "\t" in prefix:
        return "\t"
    return len(prefix)


def render(data: Mapping[str, Any], indent: Indent = DEFAULT_INDENT) -> str:
    """JSON text for daemon.json with a trailing newline."""
    return json.dumps(data, indent=indent, ensure_ascii=False) + "\n"


def apply_changes(data: Mapping[str, Any], updates: Mapping[str, Any], removals: Container[str] = ()) -> JSONDict:
    """A new dict: keys in `removals` dropped, `updates` set in place (or appended when new)."""
    result = {key: value for key, value in data.items() if key not in removals}
    for key, value in updates.items():
        result[key] = value
    return result


def read(path: str = DEFAULT_PATH) -> DaemonConfig:
    """Read daemon.json at `path` (following symlinks). A missing file reads as an empty object."""
    real_path = os.path.realpath(path)
    if os.path.isdir(real_path):
        raise DaemonConfigError(f"{path} is a directory, not a file: give the path of daemon.json itself.")
    try:
        with open(real_path, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        return DaemonConfig(path, real_path, False, "", {}, DEFAULT_INDENT)
    except OSError as exc:
        raise DaemonConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DaemonConfigError(f"{path} is not UTF-8 text (byte {exc.start}): fix the file; it was not changed.") from exc
    return DaemonConfig(path, real_path, True, text, parse(text, path), detect_indent(text))


def write_atomic(real_path: str, text: str, default_mode: int = 0o644) -> None:
    """Write `text` to `real_path` atomically, keeping an existing file's mode and owner.

    The directory is created (0755) when missing. A new file gets `default_mode`, owned by the caller.
    """
    directory = os.path.dirname(real_path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    uid: int | None
    gid: int | None
    try:
        current = os.stat(real_path)
        mode, uid, gid = stat.S_IMODE(current.st_mode), current.st_uid, current.st_gid
    except FileNotFoundError:
        mode, uid, gid = default_mode, None, None
    fd, tmp_path = tempfile.mkstemp(prefix=".daemon.json.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_path, mode)
        if uid is not None and gid is not None and (uid, gid) != (os.getuid(), os.getgid()):  # both known or neither
            os.chown(tmp_path, uid, gid)
        os.replace(tmp_path, real_path)
    except BaseException:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def restore(config: DaemonConfig) -> None:
    """Put daemon.json back as `config` found it: same text, or no file when there was none."""
    if config.exists:
        write_atomic(config.real_path, config.text)
    elif os.path.exists(config.real_path):
        os.unlink(config.real_path)


def wanted_changes(state: str, live_restore: bool | str) -> tuple[JSONDict, list[str]]:
    """The (updates, removals) for daemon.json that the docker_experimental options ask for.

    state 'enabled' sets "experimental": true; 'disabled' removes the key (false is dockerd's default).
    live_restore True/False sets "live-restore"; 'keep' leaves it as it is.
    """
    updates: JSONDict
    removals: list[str]
    updates, removals = {}, []
    if state == "enabled":
        updates["experimental"] = True
    elif state == "disabled":
        removals.append("experimental")
    else:
        raise ValueError(f"state must be enabled or disabled, not {state!r}")
    if live_restore is True:
        updates["live-restore"] = True
    elif live_restore is False:
        updates["live-restore"] = False
    elif live_restore != "keep":
        raise ValueError(f"live_restore must be true, false or keep, not {live_restore!r}")
    return updates, removals
