# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""state=exported: write a checkpoint and its manifest into a portable archive (see archive.py for the format).

An archive that already holds exactly this checkpoint is left alone; a damaged checkpoint is refused.
"""

from __future__ import annotations

import os
import time
from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import archive as archive_format
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import podman_layout
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import (
    HostContext,
    Inspect,
    Result,
    new_result,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import (
    OpError,
    carrying,
    checkpoint_not_found,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import ArchiveError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.integrity import Inventory, check_intact, images
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import ManifestError, build


def portable_manifest(ctx: HostContext, name: str, found: Inspect, path: str, metadata: dict[str, Any],
                      files: Inventory) -> dict[str, Any]:
    """The manifest that travels with the checkpoint at path (in an archive or a stream)."""
    metadata = dict(metadata)
    metadata.pop("files", None)  # the manifest lists them
    versions = metadata.get("versions") or dict(ctx.versions)
    manifest = build(name, found, files, versions, metadata.get("method") or "api",
                     metadata.get("created") or os.path.getmtime(path))
    if metadata.get("restart_policy"):
        manifest["container"]["restart_policy"] = metadata["restart_policy"]
    manifest["metadata"] = metadata
    return manifest


def exported(ctx: HostContext, ref: str, name: str, where: archive_format.ArchiveOptions, force: bool = False) -> Result:
    """Make sure the archive `where` names holds checkpoint `name` of the container (force: overwrite an archive
    that holds something else or cannot be read)."""
    found = container.inspect(ctx, ref)
    cid = found["Id"]
    result = new_result(found, name)
    with carrying(result):
        path = store.checkpoint_path(ctx.root_dir, cid, name, put_back_pages=not ctx.check_mode)
        if not os.path.isdir(path):
            raise checkpoint_not_found(name, result["container"], store.checkpoint_names(ctx.root_dir, cid))
        archive = where.to_write(result["container"], name)
        result["archive"] = archive
        try:
            files = images(path)
        except ArchiveError as exc:
            raise OpError(f"checkpoint {path} cannot be archived: {exc}") from exc
        if os.path.exists(archive):
            try:
                with archive_format.Tarball(archive, ctx.run, ctx.zstd, ctx.scratch, where.secret) as tar_path:
                    existing = archive_format.read_manifest(tar_path)
            except (ArchiveError, ManifestError, OSError) as exc:
                if not archive_format.looks_like_an_archive(archive):
                    raise OpError(f"{archive} exists and is not an archive ({exc}): force does not overwrite other "
                                  "files - move it away, or choose another archive_path") from exc
                if not force:
                    raise OpError(f"{archive} exists and is not a readable fleet.checkpoint archive ({exc}): move it "
                                  "away or use force=true to overwrite it") from exc
                existing = None
            if existing and existing["checkpoint"] == name and existing["files"] == files \
                    and existing.get("layout", "fleet") == where.layout:
                result["size"] = os.path.getsize(archive)
                return result
        result.update(changed=True, action="exported")
        if ctx.check_mode:
            return result
        metadata = store.read_metadata(path)
        check_intact(path, metadata, name, result["container"], actual=files)
        manifest = portable_manifest(ctx, name, found, path, metadata, files)
        podman_top = None
        if where.layout == "podman":
            manifest["layout"] = "podman"
            podman_top = podman_layout.top_files(found, metadata, path)
        started = time.time()
        try:
            result["sha256"] = archive_format.write_archive(
                path, manifest, archive, where.compression, ctx.run, ctx.zstd, where.secret,
                context=archive_format.archive_context(result["container"], name), scratch=ctx.scratch,
                podman_top=podman_top)
            result["encrypted"] = where.secret is not None
        except (ArchiveError, OSError) as exc:
            raise OpError(f"writing {archive} failed: {exc}") from exc
        result["size"] = os.path.getsize(archive)
        result["duration"] = round(time.time() - started, 3)
    return result
