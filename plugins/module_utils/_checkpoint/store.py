# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Where Docker keeps checkpoints on disk, and the metadata fleet.checkpoint keeps beside the CRIU images.

Docker stores a checkpoint as the directory <DockerRootDir>/containers/<id>/checkpoints/<name> and lists every
directory there as a checkpoint. fleet.checkpoint adds one file to it, METADATA_NAME, holding what Docker does not
record: the container's restart policy before the checkpoint, the dump path used, the process tree, versions.
CRIU and Docker ignore the extra file when restoring (seen on Docker 26.1.5 / CRIU 4.2.1).
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import linked_pages as pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.names import validate_checkpoint_name
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.private_files import (
    make_private_dir,
    write_private_json,
)

METADATA_NAME = "fleet-checkpoint.json"
METADATA_FORMAT = "fleet.checkpoint/checkpoint"


def checkpoints_dir(root_dir: str, container_id: str) -> str:
    return os.path.join(root_dir, "containers", container_id, "checkpoints")


def checkpoint_dir(root_dir: str, container_id: str, name: str) -> str:
    validate_checkpoint_name(name)
    return os.path.join(checkpoints_dir(root_dir, container_id), name)


def checkpoint_path(root_dir: str, container_id: str, name: str, put_back_pages: bool = True) -> str:
    """checkpoint_dir; with put_back_pages, the memory pages that a run interrupted during a fast restore left
    linked (see linked_pages) are put back first."""
    path = checkpoint_dir(root_dir, container_id, name)
    if put_back_pages:
        pages.put_back(path)
    return path


def in_doubt_marker(path: str) -> str:
    """The file that marks the checkpoint at path as in doubt: a dump whose end was not seen."""
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.fleet-in-doubt")


def is_managed(metadata: Any) -> bool:
    """Whether fleet.checkpoint made (or imported) the checkpoint with this metadata."""
    return isinstance(metadata, dict) and metadata.get("format") == METADATA_FORMAT


def read_metadata(directory: str) -> dict[str, Any]:
    """The metadata of a checkpoint directory ({} when there is none or it cannot be read)."""
    try:
        with open(os.path.join(directory, METADATA_NAME), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_metadata(directory: str, data: dict[str, Any]) -> None:
    """Write the metadata atomically, root-only."""
    write_private_json(os.path.join(directory, METADATA_NAME), data)


def secure_tree(directory: str) -> None:
    """Make a checkpoint root-only: directories 0700, files 0600 (CRIU writes its images 0644)."""
    os.chmod(directory, 0o700)
    for root, dirs, files in os.walk(directory):
        for name in dirs:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o700)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o600)


def tree_size(directory: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def list_checkpoints(root_dir: str, container_id: str) -> list[dict[str, Any]]:
    """Checkpoints of a container as a list of dicts (name, path, size, created, metadata), oldest first."""
    base = checkpoints_dir(root_dir, container_id)
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        path = os.path.join(base, name)
        if name.startswith(".") or not os.path.isdir(path) or os.path.islink(path):
            continue
        metadata = read_metadata(path)
        created = metadata.get("created")
        if not isinstance(created, (int, float)):
            created = os.path.getmtime(path)
        size = tree_size(path) + sum(os.path.getsize(real) for real in pages.aside(path).values())
        found.append({"name": name, "path": path, "size": size, "created": created, "metadata": metadata})
    found.sort(key=lambda item: (item["created"], item["name"]))
    return found


def copy_checkpoint(source: str, destination: str) -> None:
    """Copy a checkpoint directory (regular files only) to destination, root-only; destination must not exist."""
    if os.path.exists(destination):
        raise FileExistsError(f"{destination} already exists")
    parent = os.path.dirname(destination)
    make_private_dir(parent)
    tmp = os.path.join(parent, f".{os.path.basename(destination)}.fleet-copy")
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    try:
        os.makedirs(tmp, mode=0o700)
        for root, dirs, files in os.walk(source):
            relative = os.path.relpath(root, source)
            target_root = tmp if relative == "." else os.path.join(tmp, relative)
            for name in dirs:
                if os.path.islink(os.path.join(root, name)):
                    raise ValueError(f"{os.path.join(root, name)} is a link, not a regular file: "
                                     "checkpoints hold only regular files")
                os.makedirs(os.path.join(target_root, name), mode=0o700, exist_ok=True)
            for name in files:
                src = os.path.join(root, name)
                if os.path.islink(src) or not os.path.isfile(src):
                    raise ValueError(f"{src} is not a regular file: checkpoints hold only regular files")
                shutil.copyfile(src, os.path.join(target_root, name))
        secure_tree(tmp)
        os.rename(tmp, destination)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_names(root_dir: str, container_id: str) -> list[str]:
    """The names of the container's checkpoints, oldest first."""
    return [item["name"] for item in list_checkpoints(root_dir, container_id)]
