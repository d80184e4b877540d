# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Find dockerd command-line flags that clash with daemon.json.

dockerd refuses to start when a setting is given both as a flag and in its configuration file
("the following directives are specified both as a flag and in the configuration file"), and ignores
daemon.json entirely when --config-file points elsewhere. Before writing daemon.json we look at how dockerd is
really started: the systemd unit with its drop-ins (as `systemctl cat` prints them), the environment files the
unit reads (Debian's /etc/default/docker with DOCKER_OPTS), or, without systemd, the init script defaults.
"""

from __future__ import annotations

import os
import re
import shlex
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
    from typing import TypeAlias

    UnitFile: TypeAlias = tuple[str, list[str]]
    """One file of `systemctl cat` output: (its path, its lines)."""
    Word: TypeAlias = tuple[str, str | None]
    """A word of dockerd's command line and the file that supplied it (None: the command line's own file)."""

# daemon.json key -> the dockerd flag that sets the same thing.
FLAG_FOR_KEY = {
    "experimental": "--experimental",
    "live-restore": "--live-restore",
}

# Files read by SysV init scripts (no systemd) and the variable holding dockerd's options in each.
INIT_DEFAULTS = (("/etc/default/docker", "DOCKER_OPTS"), ("/etc/sysconfig/docker", "OPTIONS"))

_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


class Conflict:
    """A dockerd flag that makes a daemon.json change unsafe, and where it comes from."""

    def __init__(self, key: str, flag: str, source: str | None) -> None:
        self.key = key
        self.flag = flag
        self.source = source

    def as_dict(self) -> dict[str, str | None]:
        return {"key": self.key, "flag": self.flag, "source": self.source}

    def __repr__(self) -> str:
        return f"Conflict({self.key!r}, {self.flag!r}, {self.source!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Conflict) and self.as_dict() == other.as_dict()


def parse_systemctl_cat(text: str) -> list[UnitFile]:
    """Split `systemctl cat UNIT` output into [(file, [lines])], in the order systemd applies them."""
    files: list[UnitFile] = []
    for line in text.splitlines():
        if line.startswith("# /"):
            files.append((line[2:].strip(), []))
        elif files:
            files[-1][1].append(line)
    return files


def _logical_lines(lines: Iterable[str]) -> Iterator[str]:
    """Join backslash-continued lines."""
    pending = ""
    for line in lines:
        stripped = line.rstrip()
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        yield pending + stripped
        pending = ""
    if pending:
        yield pending


def exec_start(unit_files: Iterable[UnitFile]) -> tuple[str | None, str | None]:
    """The effective ExecStart command line and the file it comes from; an empty ExecStart= resets it."""
    command: str | None
    source: str | None
    command, source = None, None
    for path, lines in unit_files:
        for line in _logical_lines(lines):
            key, sep, value = line.strip().partition("=")
            if not sep or key.strip() != "ExecStart":
                continue
            value = value.strip()
            if not value:
                command, source = None, None
            else:
                command, source = value.lstrip("@-:+!"), path
    return command, source


def environment_files(unit_files: Iterable[UnitFile]) -> list[str]:
    """Paths named by EnvironmentFile= (a leading '-' means optional), in order."""
    paths: list[str] = []
    for _path, lines in unit_files:
        for line in _logical_lines(lines):
            key, sep, value = line.strip().partition("=")
            if sep and key.strip() == "EnvironmentFile":
                if not value.strip():
                    paths = []
                    continue
                paths.extend(item.lstrip("-") for item in value.split())
    return paths


def parse_env_file(text: str) -> dict[str, str]:
    """VAR=value assignments of a shell-style environment file (comments, `export` and quotes handled)."""
    env: dict[str, str] = {}
    for line in _logical_lines(text.splitlines()):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        name, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"\w+", name.strip()):
            continue
        try:
            parts = shlex.split(value, comments=True)
        except ValueError:
            parts = [value.strip().strip("\"'")]
        env[name.strip()] = " ".join(parts)
    return env


def expand(command: str, env: Mapping[str, str], env_sources: Mapping[str, str]) -> list[Word]:
    """Split a systemd command line into words with their origin: [(word, source or None)].

    `$VAR` expands into several words, `${VAR}` into one, as systemd does. `env_sources` maps VAR to the file
    that set it, so that a flag found there is reported with that file.
    """
    words: list[Word] = []
    for token in shlex.split(command):
        match = _VAR.fullmatch(token)
        if match and match.group(2):
            name = match.group(2)
            words.extend((word, env_sources.get(name)) for word in shlex.split(env.get(name, "")))
            continue

        def substitute(found: re.Match[str]) -> str:
            return env.get(found.group(1) or found.group(2), "")

        names = [m.group(1) or m.group(2) for m in _VAR.finditer(token)]
        origin = next((env_sources.get(name) for name in names if env.get(name)), None)
        words.append((_VAR.sub(substitute, token), origin))
    return words


def conflicts_in(
    words: Sequence[Word], keys: Collection[str], config_path: str, default_source: str | None
) -> list[Conflict]:
    """Conflicts among dockerd's words for the daemon.json `keys` we are about to set, and for --config-file."""
    found: list[Conflict] = []
    real_config = os.path.realpath(config_path)
    for index, (word, origin) in enumerate(words):
        source = origin or default_source
        name = word.split("=", 1)[0]
        for key in keys:
            if name == FLAG_FOR_KEY.get(key):
                found.append(Conflict(key, word, source))
        if name == "--config-file":
            if "=" in word:
                other = word.split("=", 1)[1]
            elif index + 1 < len(words):
                other = words[index + 1][0]
            else:
                continue
            if os.path.realpath(other) != real_config:
                found.append(Conflict("config-file", f"--config-file {other}", source))
    return found


def find_conflicts(
    keys: Collection[str],
    config_path: str,
    systemctl_cat_text: str | None = None,
    read_file: Callable[[str], str | None] | None = None,
) -> list[Conflict]:
    """Every dockerd flag that clashes with writing `keys` to `config_path`.

    `systemctl_cat_text` is the output of `systemctl cat docker.service` (None when systemd does not manage
    docker); `read_file(path)` returns a file's text or None when it does not exist.
    """
    read_file = read_file or _read_text
    if systemctl_cat_text:
        unit_files = parse_systemctl_cat(systemctl_cat_text)
        command, source = exec_start(unit_files)
        if not command:
            return []
        env: dict[str, str]
        env_sources: dict[str, str]
        env, env_sources = {}, {}
        for path in environment_files(unit_files):
            text = read_file(path)
            if text is None:
                continue
            for name, value in parse_env_file(text).items():
                env[name] = value
                env_sources[name] = f"{path} ({name})"
        return conflicts_in(expand(command, env, env_sources), keys, config_path, source)
    found: list[Conflict] = []
    for path, variable in INIT_DEFAULTS:
        text = read_file(path)
        if text is None:
            continue
        value = parse_env_file(text).get(variable, "")
        words = [(word, f"{path} ({variable})") for word in shlex.split(value)]
        found.extend(conflicts_in(words, keys, config_path, path))
    return found


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None
