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
import re
import shutil

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import linked_pages as pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.names import validate_checkpoint_name

METADATA_NAME = "fleet-checkpoint.json"
METADATA_FORMAT = "fleet.checkpoint/checkpoint"
_AGE = re.compile(r"(\d+)\s*([smhdw]?)")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def checkpoints_dir(root_dir, container_id):
    return os.path.join(root_dir, "containers", container_id, "checkpoints")


def checkpoint_dir(root_dir, container_id, name):
    validate_checkpoint_name(name)
    return os.path.join(checkpoints_dir(root_dir, container_id), name)


def is_managed(metadata):
    """Whether fleet.checkpoint made (or imported) the checkpoint with this metadata."""
    return isinstance(metadata, dict) and metadata.get("format") == METADATA_FORMAT


def read_metadata(directory):
    """The metadata of a checkpoint directory ({} when there is none or it cannot be read)."""
    try:
        with open(os.path.join(directory, METADATA_NAME), encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_private_json(path, data):
    """Write JSON atomically, root-only (0600)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def write_metadata(directory, data):
    """Write the metadata atomically, root-only."""
    write_private_json(os.path.join(directory, METADATA_NAME), data)


def secure_tree(directory):
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


def ensure_private_dir(path):
    """Create path (and parents) 0700 when missing; make an existing one 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def tree_size(directory):
    total = 0
    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


def list_checkpoints(root_dir, container_id):
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


def copy_checkpoint(source, destination):
    """Copy a checkpoint directory (regular files only) to destination, root-only; destination must not exist."""
    if os.path.exists(destination):
        raise FileExistsError(f"{destination} already exists")
    parent = os.path.dirname(destination)
    ensure_private_dir(parent)
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


def parse_age(value):
    """'7d', '12h', '30m', '90s', '2w' or a number of seconds -> seconds. Raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"max_age {value!r} is not a duration")
    if isinstance(value, int):
        seconds = value
    else:
        match = _AGE.fullmatch(str(value).strip())
        if not match:
            raise ValueError(f"max_age {value!r} is not a duration: use a number of seconds or e.g. 90m, 12h, 7d, 2w")
        seconds = int(match.group(1)) * _AGE_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"max_age {value!r} must be longer than zero")
    return seconds


def select_pruned(checkpoints, keep, keep_last=None, max_age=None, now=None):
    """Names of checkpoints to prune after a new one, `keep`, was made.

    Only checkpoints made by fleet.checkpoint (metadata with its format) are candidates; `keep` never is. keep_last counts the
    new checkpoint; max_age is in seconds. Either limit alone prunes; with both, a checkpoint goes when either says so.
    """
    candidates = [item for item in checkpoints if is_managed(item["metadata"]) and item["name"] != keep]
    candidates.sort(key=lambda item: (item["created"], item["name"]), reverse=True)  # newest first
    pruned = set()
    if keep_last is not None:
        for item in candidates[max(keep_last - 1, 0):]:
            pruned.add(item["name"])
    if max_age is not None and now is not None:
        for item in candidates:
            if now - item["created"] > max_age:
                pruned.add(item["name"])
    return [item["name"] for item in sorted(candidates, key=lambda item: (item["created"], item["name"]))
            if item["name"] in pruned]
