# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""state=imported: place the checkpoint from an archive into the container's checkpoint directory (the container
created first from the archive's manifest with create=true). Also the import step of a restore from an archive.

Nothing from an archive is trusted: its manifest is validated, every entry checked before anything is written, every
file's size and sha256 compared, and the checkpoint unpacked beside its final place, then moved in whole.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import archive as archive_format
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_apply
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import (
    HostContext,
    Inspect,
    Result,
    new_result,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError, carrying
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import (
    MANIFEST_NAME,
    ArchiveError,
    safe_extract,
    verify_inventory,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.integrity import images
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import ManifestError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import (
    PreflightError,
    check_free_space,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.container_create import HostAccess
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import private_files


IMPORT_MARGIN = 64 * 1024 * 1024  # free space kept beyond an imported checkpoint


@dataclass(frozen=True)
class ImportOptions:
    """The options an import reads."""

    name: str
    archive: archive_format.ArchiveOptions
    force: bool = False  # replace a different checkpoint of the same name
    create: bool = False  # create a missing container from the archive's manifest
    allowed: HostAccess = field(default_factory=HostAccess)  # what of the host that container may reach


def _tarball(ctx: HostContext, archive: str, secret: bytes | None,
             bound_to: tuple[str, str] | None = None, force: bool = False) -> archive_format.Tarball:
    """The archive as a readable tar; decrypted and decompressed in the host's local scratch, never beside it."""
    return archive_format.Tarball(archive, ctx.run, ctx.zstd, ctx.scratch, secret, bound_to=bound_to, force=force)


def inspect_or_create(ctx: HostContext, ref: str, opts: ImportOptions) -> tuple[Inspect, bool]:
    """The container's inspect, and whether it was created (or would be, in check mode) from the archive's manifest
    because it did not exist and create=true."""
    try:
        return container.inspect(ctx, ref), False
    except OpError:
        if not opts.create:
            raise
    archive = opts.archive.to_read(ref, opts.name)
    try:
        with _tarball(ctx, archive, opts.archive.secret, (ref, opts.name), opts.force) as tar_path:
            config = archive_format.importable(archive_format.read_manifest(tar_path))["container"]
    except (ArchiveError, ManifestError) as exc:
        raise OpError(f"{archive}: {exc}") from exc
    return container.create_from(ctx, ref, config, archive, opts.allowed), True


def imported(ctx: HostContext, ref: str, opts: ImportOptions) -> Result:
    """Make sure the container has the archive's checkpoint, under opts.name."""
    found, created = inspect_or_create(ctx, ref, opts)
    try:
        return import_into(ctx, found, opts, created)
    except OpError as exc:
        if created and not ctx.check_mode:  # made for this import, which did not happen: not left behind
            removed = container.remove_created(ctx, found["Id"])
            raise type(exc)(f"{exc}; the container created for it was {'removed' if removed else 'NOT removed'}",
                            exc.partial) from exc
        raise


def shown_config(config: dict[str, Any]) -> dict[str, Any]:
    """A manifest's container configuration as a result may show it: environment variables, command lines and labels
    often hold secrets, so only the variables' and labels' names and the command lines' lengths are shown (the
    archive keeps the values), and of the mounts only their kind and place in the container."""
    shown = dict(config)
    shown["env"] = [str(item).split("=", 1)[0] for item in config.get("env") or []]
    shown["labels"] = sorted(str(key) for key in (config.get("labels") or {}))
    for key in ("cmd", "entrypoint"):
        if config.get(key):
            shown[key] = f"({len(config[key])} arguments, not shown)"
    shown["mounts"] = [{"type": (mount or {}).get("type"), "destination": (mount or {}).get("destination")}
                       for mount in config.get("mounts") or []]
    return shown


def import_into(ctx: HostContext, found: Inspect, opts: ImportOptions, created: bool = False) -> Result:
    """imported() into a container already inspected (a restore from an archive imports first)."""
    result = new_result(found, opts.name, created)
    with carrying(result):
        _import(ctx, found, opts, result)
    return result


def _import(ctx: HostContext, found: Inspect, opts: ImportOptions, result: Result) -> None:
    name = opts.name
    path = store.checkpoint_path(ctx.root_dir, found["Id"], name, put_back_pages=not ctx.check_mode)
    archive = opts.archive.to_read(result["container"], name)
    result.update(archive=archive, path=path)
    try:
        with _tarball(ctx, archive, opts.archive.secret, (result["container"], name), opts.force) as tar_path:
            manifest = archive_format.importable(archive_format.read_manifest(tar_path))
            result["manifest"] = {key: manifest[key] for key in ("checkpoint", "created", "method", "size",
                                                                 "versions")}
            result["manifest"]["container"] = shown_config(manifest["container"])
            if manifest["checkpoint"] != name:
                result["warnings"].append(f"{archive} holds checkpoint {manifest['checkpoint']!r}; it is placed "
                                          f"as {name!r}")
            image = (manifest["container"].get("image") or {}).get("id")
            if image and found.get("Image") and image != found.get("Image"):
                result["warnings"].append(f"{result['container']} runs image {found.get('Image')}, the "
                                          f"checkpoint was made from {image}: the restore may fail")
            if os.path.isdir(path):
                if images(path) == manifest["files"]:
                    return
                if not opts.force:
                    raise OpError(f"container {result['container']} already has a checkpoint {name!r} "
                                  f"that differs from {archive}: use force=true to replace it, or another name")
            result.update(changed=True, action="imported")
            if ctx.check_mode:
                problems = archive_format.verify_stream(tar_path, manifest)
                if problems:
                    raise OpError(f"{archive} fails its checksums: {'; '.join(problems[:5])}")
                return
            _unpack(tar_path, manifest, path, archive)
    except (ArchiveError, ManifestError) as exc:
        raise OpError(f"{archive}: {exc}") from exc


def _unpack(tar_path: str, manifest: dict[str, Any], path: str, archive: str) -> None:
    """Check the tar against the manifest, unpack it beside path, check every file, then install it."""
    parent = os.path.dirname(path)
    created_parent = not os.path.isdir(parent)
    private_files.make_private_dir(parent)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.fleet-import")
    shutil.rmtree(tmp, ignore_errors=True)
    done = False
    try:
        problems = archive_format.check_members(tar_path, manifest)
        if problems:
            raise OpError(f"{archive} does not match its manifest, nothing imported: {'; '.join(problems[:5])}")
        try:  # the manifest's size, checked entry by entry above, is what unpacking writes
            check_free_space(parent, int(manifest["size"]) + IMPORT_MARGIN)
        except PreflightError as exc:
            raise OpError(f"{archive} cannot be imported: " + str(exc).replace("for the dump", "for the import")
                          .replace("the container's resident memory plus margin", "the archive's files plus margin")
                          ) from exc
        safe_extract(tar_path, tmp)
        os.remove(os.path.join(tmp, MANIFEST_NAME))
        problems = verify_inventory(tmp, manifest["files"])
        if problems:
            raise OpError(f"{archive} fails its checksums, nothing imported: {'; '.join(problems[:5])}")
        install(tmp, manifest, path, archive)
        done = True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created_parent and not done:
            shutil.rmtree(parent, ignore_errors=True)


def install(tmp: str, manifest: dict[str, Any], path: str, source: str) -> None:
    """Put a checked, unpacked checkpoint (tmp, beside path) in place, with its metadata from the manifest."""
    metadata = dict(manifest.get("metadata") or {})
    metadata.setdefault("format", store.METADATA_FORMAT)
    metadata.setdefault("restart_policy", manifest["container"]["restart_policy"])
    metadata.setdefault("method", manifest["method"])
    metadata.setdefault("created", manifest.get("created"))
    metadata.pop("last_restore", None)
    metadata["files"] = manifest["files"]
    metadata["imported"] = {"from": source, "at": time.time()}
    store.write_metadata(tmp, metadata)
    store.secure_tree(tmp)
    if not os.path.isdir(path):
        os.rename(tmp, path)
        return
    # Replacing a checkpoint (force): the old one goes aside (hidden from `docker checkpoint ls`) and is removed only
    # once the new one is in place, so a crash in between leaves one of them (it used to be deleted first).
    disk_apply.swap(tmp, path, aside=os.path.join(os.path.dirname(path), f".{os.path.basename(path)}{disk_apply.OLD}"))
