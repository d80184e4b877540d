# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Names of checkpoints and containers, checked before anything is touched.

A checkpoint name becomes a directory under <DockerRootDir>/containers/<id>/checkpoints/, so it is validated like
Docker validates it (^[a-zA-Z0-9][a-zA-Z0-9_.-]+$) and, beyond Docker, refused when it contains '..' or is too long.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

CHECKPOINT_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
CONTAINER_NAME = re.compile(r"^/?[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
CONTAINER_ID = re.compile(r"^[0-9a-f]{12,64}$")
MAX_NAME_LENGTH = 128
NEW_CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")  # what Docker accepts when it creates one


def validate_checkpoint_name(name: object) -> str:
    """Return the name when it is a safe checkpoint name; raise ValueError saying what is wrong and what to do."""
    if not isinstance(name, str) or not name:
        raise ValueError("checkpoint name is empty: give a name like pre-reboot-2026-11-23")
    if len(name) > MAX_NAME_LENGTH:
        raise ValueError(f"checkpoint name is {len(name)} characters long; use at most {MAX_NAME_LENGTH}")
    if "/" in name or "\\" in name:
        raise ValueError(f"checkpoint name {name!r} contains a path separator: use letters, digits, '_', '.' and '-'")
    if ".." in name:
        raise ValueError(f"checkpoint name {name!r} contains '..': use letters, digits, '_', '.' and '-' without '..'")
    if not CHECKPOINT_NAME.fullmatch(name):
        raise ValueError(
            f"checkpoint name {name!r} is not valid: it must start with a letter or digit, be at least 2 characters "
            "long and use only letters, digits, '_', '.' and '-' (like Docker)"
        )
    return name


def validate_container_ref(ref: object) -> str:
    """A container name or id as given by the user ('/name' accepted); raise ValueError when it cannot be one."""
    if not isinstance(ref, str) or not ref.strip():
        raise ValueError("container is empty: give a container name or id")
    if CONTAINER_ID.fullmatch(ref) or CONTAINER_NAME.fullmatch(ref):
        return ref.lstrip("/")
    raise ValueError(
        f"container {ref!r} is not a container name or id: names use letters, digits, '_', '.' and '-', ids are hex"
    )


def rename_problems(rename: Mapping[str, object], names: Sequence[str]) -> list[str]:
    """What is wrong with `rename` ({name of a moving container: its new name}) for the containers `names`: a key
    that is not one of them, a value that is not a container name, two containers ending with one name."""
    problems = []
    for old, new in rename.items():
        if old not in names:
            problems.append(f"rename names {old!r}, which is not one of the containers that move "
                            f"({', '.join(names) or 'none'}): rename only those")
        if not isinstance(new, str) or not NEW_CONTAINER_NAME.fullmatch(new):
            problems.append(f"rename.{old} must be a container name (at least 2 of letters, digits, '_', '.', '-', "
                            f"starting with a letter or digit), not {new!r}")
    here = [str(rename.get(name, name)) for name in names]
    twice = sorted({name for name in here if here.count(name) > 1})
    if twice:
        problems.append(f"rename gives two moving containers the same name ({', '.join(twice)}): give each its own")
    return problems
