# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""An exported archive in the layout of `podman container checkpoint --export` (archive_layout=podman), so that
checkpointctl (`show`, `inspect`) reads a Docker checkpoint: the CRIU images under checkpoint/ (a directory entry
first: checkpointctl looks for one), config.dump and spec.dump at the top, and CRIU's stats-dump when the dump kept
it. Our manifest.json stays the first entry (what an export compares to stay idempotent).

checkpointctl reads from config.dump: id, name, rootfsImage, rootfsImageRef, rootfsImageName, runtime, createdTime,
checkpointedTime; from spec.dump: the annotations (io.container.manager picks Podman or CRI-O; anything else is shown
as containerd - the engine Docker runs on - with its name from io.kubernetes.cri.container-name) and the mounts.
Both are written from `docker inspect` with those fields; they are not Podman's whole configuration, so Podman
cannot restore from such an archive, and neither can state=imported (it reads our own layout)."""

from __future__ import annotations

import datetime
import json
import os
from typing import Any, Dict, Mapping

CHECKPOINT_DIR = "checkpoint"
STATS = "stats-dump"
ENGINE = "docker"  # io.container.manager: neither libpod nor cri-o, so checkpointctl shows it as containerd


def _time(value: Any) -> str:
    """RFC 3339, as Go's time.Time unmarshals it (`docker inspect`'s Created already is; a Unix time is turned)."""
    if isinstance(value, (int, float)):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return str(value or "0001-01-01T00:00:00Z")


def config_dump(found: Mapping[str, Any], metadata: Mapping[str, Any]) -> Dict[str, Any]:
    config = found.get("Config") or {}
    return {
        "id": found.get("Id"),
        "name": (found.get("Name") or "").lstrip("/"),
        "rootfsImage": found.get("Image"),
        "rootfsImageRef": found.get("Image"),
        "rootfsImageName": config.get("Image"),
        "runtime": (found.get("HostConfig") or {}).get("Runtime") or "runc",
        "createdTime": _time(found.get("Created")),
        "checkpointedTime": _time(metadata.get("created")),
    }


def spec_dump(found: Mapping[str, Any]) -> Dict[str, Any]:
    config = found.get("Config") or {}
    mounts = [{"destination": item.get("Destination"), "type": "bind", "source": item.get("Source"),
               "options": ["rbind", "rw" if item.get("RW") else "ro"]}
              for item in found.get("Mounts") or []]
    return {
        "ociVersion": "1.0.2",
        "process": {"args": list(config.get("Entrypoint") or []) + list(config.get("Cmd") or []),
                    "cwd": config.get("WorkingDir") or "/"},
        "hostname": config.get("Hostname") or "",
        "annotations": {"io.container.manager": ENGINE,
                        "io.kubernetes.cri.container-name": (found.get("Name") or "").lstrip("/")},
        "mounts": mounts,
    }


def top_files(found: Mapping[str, Any], metadata: Mapping[str, Any], source_dir: str) -> Dict[str, bytes]:
    """The files at the archive's top besides our manifest: config.dump, spec.dump, and stats-dump when kept."""
    files = {"config.dump": json.dumps(config_dump(found, metadata), indent=2).encode("utf-8"),
             "spec.dump": json.dumps(spec_dump(found), indent=2).encode("utf-8")}
    stats = os.path.join(source_dir, STATS)
    if os.path.isfile(stats) and not os.path.islink(stats):
        with open(stats, "rb") as handle:
            files[STATS] = handle.read()
    return files
