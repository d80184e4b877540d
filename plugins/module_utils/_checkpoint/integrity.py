# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Is a checkpoint still what was dumped? Its files against the size and sha256 of each recorded at dump time.

A damaged checkpoint (disk fault, full disk, tampering) is refused before a restore or an export, instead of being
restored into a process with corrupted memory.
"""

from __future__ import annotations

import os
from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import linked_pages as pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import (
    ArchiveError,
    Inventory,
    file_inventory,
    sha256_file,
)


def images(path: str) -> Inventory:
    """The checkpoint's files without fleet.checkpoint's metadata (pages left aside by an interrupted fast restore
    counted where they wait)."""
    moved = pages.aside(path)
    inventory: Inventory = file_inventory(path, skip=moved)
    for name, real in moved.items():
        inventory[name] = {"size": os.path.getsize(real), "sha256": sha256_file(real)}
    inventory.pop(store.METADATA_NAME, None)
    inventory.pop(store.METADATA_NAME + ".tmp", None)  # left by a metadata write that was interrupted
    return inventory


def damage(metadata: dict[str, Any], actual: Inventory) -> list[str]:
    """What differs between the files recorded at dump time (size, sha256) and the files there now."""
    recorded = metadata.get("files")
    if not isinstance(recorded, dict):
        return []  # not made by this version of fleet.checkpoint: nothing to compare with
    problems = []
    for name, info in sorted(recorded.items()):
        found = actual.get(name)
        if found is None:
            problems.append(f"{name} is missing")
        elif found["size"] != info.get("size"):
            problems.append(f"{name} has {found['size']} bytes, {info.get('size')} at dump time (truncated?)")
        elif found["sha256"] != info.get("sha256"):
            problems.append(f"{name} does not match its sha256 from dump time (corrupted)")
    problems.extend(f"{name} was added after the dump" for name in sorted(set(actual) - set(recorded)))
    return problems


def check_intact(path: str, metadata: dict[str, Any], checkpoint: str, container: str,
                 actual: Inventory | None = None) -> None:
    """Raise OpError when the checkpoint at path no longer matches its metadata (`actual`: its files, when known)."""
    try:
        problems = damage(metadata, images(path) if actual is None else actual)
    except ArchiveError as exc:
        problems = [str(exc)]
    if problems:
        raise OpError(f"checkpoint {checkpoint!r} of {container} is damaged since its dump, so it was not used: "
                      f"{'; '.join(problems[:5])}. Its files changed on disk (disk fault, full disk or tampering): "
                      "restore an older checkpoint, or start the container afresh")
