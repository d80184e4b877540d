# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The receiving end of a streamed checkpoint (state=restored with receive_timeout, see stream.py): wait for the
stream, create the container from its manifest if asked to, unpack and check the checkpoint beside its final place
and install it; the restore then goes on as from an imported archive (restore.py)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, TypedDict

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_apply
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_index
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import lazy_restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream_receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import (
    HostContext,
    Inspect,
    Result,
    new_result,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError, carrying
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import ArchiveError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.import_ import install
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import ManifestError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import (
    PreflightError,
    check_free_space,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import lazy_pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import precopy_rounds
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.container_create import HostAccess
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.commands import which
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import private_files

MARGIN = 64 * 1024 * 1024  # free space kept beyond the received checkpoint


@dataclass(frozen=True)
class ReceiveOptions:
    """The options a receive reads: the checkpoint's name, the directory its FIFO waits in (archive_dir), how long to
    wait for the first byte (receive_timeout)."""

    name: str
    directory: str
    timeout: int
    force: bool = False  # restore into a running container (stopping it), replace a different checkpoint
    create: bool = False  # create a missing container from the stream's manifest
    rename: dict[str, str] = field(default_factory=dict)  # a stream's container (sender's name) -> its name here
    allowed: HostAccess = field(default_factory=HostAccess)  # what of the host a container created here may reach
    # A group's receive (group_receive.py): called with the stream's name and its manifest's volumes_from before
    # its container is made, to wait for the volumes other members carry.
    await_volumes: Optional[Callable[[str, Dict[str, str]], None]] = None

    def here(self, ref: str) -> str:
        """The name here of the container whose stream is `ref`'s."""
        return self.rename.get(ref, ref)


class Received(TypedDict):
    """What arrived: the container it went to (created for it or not), the bytes, the wait before the first byte,
    the seconds from the first byte to the checkpoint checked and in place, when that was."""

    inspect: Inspect
    created: bool
    bytes: int
    waited_seconds: float
    seconds: float
    finished_at: float
    disk: dict[str, Any] | None
    lazy: lazy_restore.LazyRestore | None  # a post-copy move's restore, under way once the images are installed


def describe(result: dict[str, Any], received: Received) -> None:
    """What arrived, in a restore's result (`received`, and its `import_seconds`)."""
    result["received"] = {"bytes": received["bytes"], "waited_seconds": received["waited_seconds"],
                          "seconds": received["seconds"], "finished_at": received["finished_at"]}
    if received.get("disk"):
        result["received"]["disk"] = received["disk"]
    result["import_seconds"] = received["seconds"]


def inspect_or_create(ctx: HostContext, ref: str, config: dict[str, Any], origin: str,
                      create: bool, allowed: HostAccess | None = None,
                      annotations: dict[str, str] | None = None) -> tuple[Inspect, bool]:
    """The container's inspect, and whether it was created from the stream's manifest (it did not exist and
    create=true)."""
    try:
        return container.inspect(ctx, ref), False
    except OpError:
        if not create:
            raise
    return container.create_from(ctx, ref, config, origin, allowed, annotations), True


def _lazy(ctx: HostContext, ref: str, here: str, opts: ReceiveOptions, origin: str) -> lazy_restore.LazyRestore:
    """A post-copy move's restore: only into a container this receive creates (its CRIU configuration is set when
    it is created), on a host that can restore lazily."""
    try:
        container.inspect(ctx, here)
    except OpError:
        if not opts.create:
            raise OpError(f"container {here} does not exist here and create=false: {origin} is a post-copy move, "
                          "which goes only into a container this receive creates (create=true)") from None
    else:
        raise OpError(f"container {here} exists here already: {origin} is a post-copy move, which goes only into a "
                      "container this receive creates. Remove or rename it here")
    criu = which("criu")
    if not criu:
        raise OpError(f"{origin} is a post-copy move and the criu command is missing here")
    status, pipe_max = lazy_pages.read_host_facts()
    problems = lazy_pages.lazy_problems(ctx.run, criu, status, pipe_max)
    too_old = lazy_pages.annotation_problem(str((ctx.api.get("/version") or {}).get("ApiVersion") or "0"))
    problems += [too_old] if too_old else []
    if problems:
        raise OpError(f"{origin} is a post-copy move and this host cannot restore lazily: {'; '.join(problems)}")
    lazy_restore.sweep_configs(ctx.api)  # those of containers removed since their lazy restore
    return lazy_restore.LazyRestore(ref, opts.name, criu)


def _refuse_existing(ctx: HostContext, ref: str, create: bool) -> None:
    """Disk state goes only into a container this receive creates: refuse one that exists (before anything)."""
    try:
        container.inspect(ctx, ref)
    except OpError:
        if create:
            return
        raise OpError(f"container {ref} does not exist here and create=false: the checkpoint came with its disk "
                      "state, which goes into a container this receive creates (create=true)") from None
    raise OpError(f"container {ref} exists here already: the checkpoint came with its disk state (writable layer, "
                  "volumes), which goes only into a container this receive creates. Remove or rename it here, or "
                  "send with writable_layer=false and volumes=none")


def _refuse_running(ctx: HostContext, found: Inspect, name: str, force: bool) -> None:
    if not force and container.is_running(ctx, found):
        raise OpError(f"container {name} is running: a received checkpoint is restored into a stopped or new "
                      "container (stop it, or use force=true to stop it and restore)")


def predict(ctx: HostContext, ref: str, opts: ReceiveOptions) -> Result:
    """Check mode: what a receive and its restore would do (nothing is waited for)."""
    here = opts.here(ref)
    try:
        found, created = container.inspect(ctx, here), False
    except OpError:
        if not opts.create:
            raise
        found, created = {"Id": "0" * 64, "Name": f"/{here}", "State": {}}, True
    result = new_result(found, opts.name, created)
    if here != ref:
        result["renamed_from"] = ref
    with carrying(result):
        _refuse_running(ctx, found, result["container"], opts.force)
        result.update(changed=True, action="restored",
                      msg=f"would wait up to {opts.timeout}s for the checkpoint to arrive in "
                          f"{opts.directory}, then restore it")
    return result


def _drop_created(ctx: HostContext, place: dict[str, Any]) -> str:
    """Remove the container this receive created (from the manifest), and the volumes it made for it, when its
    checkpoint did not arrive whole or could not be put in place; what was removed, in words ('' for nothing)."""
    dropped = []
    if place.get("created"):
        try:
            ctx.api.delete(f"/containers/{place['inspect']['Id']}", force=1)
            place["created"] = False
            dropped.append("the container created for it")
        except DockerAPIError:
            pass
    volumes = disk_apply.drop_volumes(ctx, place.setdefault("volumes_made", []))
    if volumes:
        dropped.append(f"the volumes made for it ({', '.join(volumes)})")
    return " and ".join(dropped)


def _made(place: dict[str, Any]) -> dict[str, Any]:
    """The volumes this receive made: the only ones its disk state may fill."""
    return {name: {} for name in place.get("volumes_made") or []}


def _read_index(place: dict[str, Any], disk: dict[str, Any]) -> dict[str, Any]:
    with open(os.path.join(place["tmp"], "disk", "index.json"), "rb") as handle:
        return disk_index.decode(handle.read(disk_index.MAX_INDEX_BYTES + 1), disk["files"])


def _stage(ctx: HostContext, place: dict[str, Any], manifest: dict[str, Any], damaged: set[str]) -> dict[str, Any]:
    """Put a pre-copy's files aside beside their places (the container and its volumes exist now); what came."""
    disk = manifest["disk"]
    place["precopy_disk"] = disk
    index = _read_index(place, disk)
    place["staged"] = disk_apply.stage(ctx, container.inspect(ctx, place["inspect"]["Id"]), index,
                                       _made(place), os.path.join(place["tmp"], "disk"), damaged)
    shutil.rmtree(place["tmp"])
    return {"bytes": disk["size"], "files": len(disk["files"]) - 1, "damaged": len(damaged)}


def _apply_disk(ctx: HostContext, place: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Put the disk state that came with the checkpoint in place (the container is created, not started)."""
    disk = manifest.get("disk")
    if not disk:
        disk_apply.drop_staged(place.pop("staged", None) or {})
        return None
    index = _read_index(place, disk)
    applied = disk_apply.apply(ctx, container.inspect(ctx, place["inspect"]["Id"]), index, _made(place),
                               os.path.join(place["tmp"], "disk"), place.pop("staged", None))
    shutil.rmtree(os.path.join(place["tmp"], "disk"))
    return applied


def _label(ref: str, here: str) -> str:
    return ref if here == ref else f"{here} (sent as {ref})"


_MADE_DIRS: set[str] = set()  # the FIFOs' directories this run made (removed again when the last FIFO goes)


def receive(ctx: HostContext, ref: str, opts: ReceiveOptions) -> Received:
    """Wait for the stream of checkpoint opts.name for container `ref`, create the container from the stream's
    manifest if needed (create=true; named opts.rename[ref] if given), unpack and check the checkpoint beside its
    final place and install it."""
    fifo_path = os.path.join(opts.directory, stream.stream_name(ref, opts.name))  # the sender's name for it
    here = opts.here(ref)
    if not os.path.isdir(opts.directory):
        _MADE_DIRS.add(opts.directory)
    private_files.ensure_private_dir(opts.directory)
    begin = time.monotonic()
    place: dict[str, Any] = {}

    def destination(manifest: dict[str, Any]) -> str:
        # Called with the manifest, the stream's first entry: the rest is unpacked where it will stay.
        if manifest["checkpoint"] != opts.name:
            raise OpError(f"the stream at {fifo_path} holds checkpoint {manifest['checkpoint']!r}, not {opts.name!r}")
        try:
            check_free_space(ctx.root_dir, sum(item["size"] for item in stream.members(manifest).values()) + MARGIN)
        except PreflightError as exc:
            raise OpError(str(exc).replace("for the dump", "for the received checkpoint")) from exc
        if "tmp" in place:  # a later segment (after a pre-copy, a memory round): the container is there already
            if manifest.get("phase") == "precopy":
                raise OpError(f"the stream at {fifo_path} sent two pre-copies")
            if manifest.get("phase") == "memory" or "memory_rounds" in manifest or place.get("rounds"):
                if place.get("precopy_disk") or manifest.get("disk") or manifest.get("lazy"):
                    raise OpError(f"the stream at {fifo_path} mixes memory rounds with disk state or a post-copy "
                                  "move: not supported")
                return _round_dir(place, manifest, fifo_path)
            disk, ahead = manifest.get("disk") or {}, place["precopy_disk"]
            if (sorted(disk.get("volumes") or {}) != sorted(ahead.get("volumes") or {})
                    or bool(disk.get("rootfs")) != bool(ahead.get("rootfs"))):
                raise OpError(f"the stream at {fifo_path} names other disk state (writable layer, volumes) in its "
                              "checkpoint than in its pre-copy")
            shutil.rmtree(place["tmp"], ignore_errors=True)
            return str(place["tmp"])
        if manifest.get("phase") == "memory" and (manifest.get("disk") or manifest.get("lazy")):
            raise OpError(f"the stream at {fifo_path} mixes memory rounds with disk state or a post-copy move: not "
                          "supported")
        if opts.await_volumes is not None and manifest.get("volumes_from"):
            opts.await_volumes(ref, manifest["volumes_from"])
        if manifest.get("disk"):
            _refuse_existing(ctx, here, opts.create)
            container.refuse_host_access(here, manifest["container"], f"the stream at {fifo_path}", opts.allowed)
            disk_apply.make_volumes(ctx, manifest["disk"].get("volumes") or {}, place.setdefault("volumes_made", []))
        annotations = None
        if manifest.get("lazy") is True:
            if manifest.get("disk"):
                raise OpError(f"the stream at {fifo_path} is a post-copy move with disk state: not supported")
            place["lazy"] = _lazy(ctx, ref, here, opts, f"the stream at {fifo_path}")
            annotations = place["lazy"].prepare()
        found, created = inspect_or_create(ctx, here, manifest["container"], f"the stream at {fifo_path}", opts.create,
                                           opts.allowed, annotations)
        place["created"] = created
        place["inspect"] = found
        _refuse_running(ctx, found, (found.get("Name") or here).lstrip("/"), opts.force)
        path = store.checkpoint_path(ctx.root_dir, found["Id"], opts.name, put_back_pages=not ctx.check_mode)
        parent = os.path.dirname(path)
        place["created_parent"] = not os.path.isdir(parent)
        private_files.make_private_dir(parent)
        place["path"], place["tmp"] = path, os.path.join(parent, f".{opts.name}.fleet-import")
        shutil.rmtree(place["tmp"], ignore_errors=True)
        if manifest.get("phase") == "memory":
            return _round_dir(place, manifest, fifo_path)
        return str(place["tmp"])

    try:
        reader = stream_receive.FifoReader(fifo_path)
    except OSError as exc:
        raise OpError(f"cannot wait for the checkpoint at {fifo_path}: {exc}") from exc
    done = False
    try:
        try:
            reader.wait(opts.timeout)
            waited = time.monotonic() - begin
            damaged: set[str] = set()
            manifest = stream_receive.receive(reader, destination, damaged)
            precopy = None
            if manifest.get("phase") == "precopy":
                precopy = _stage(ctx, place, manifest, damaged)
                # The checkpoint comes once the source's dump is done: as long as the first byte may take.
                reader.idle_timeout = max(reader.idle_timeout, opts.timeout)
                manifest = stream_receive.receive(reader, destination)
            while manifest.get("phase") == "memory":  # a pre-copy move's rounds, then its final dump
                reader.idle_timeout = max(reader.idle_timeout, opts.timeout)
                manifest = stream_receive.receive(reader, destination)
            _nest_rounds(place, manifest, fifo_path)
            disk = _apply_disk(ctx, place, manifest)
            if disk is not None and precopy is not None:
                disk["precopy"] = precopy
        except (stream.StreamError, ArchiveError, ManifestError, OSError, disk_index.DiskIndexError,
                disk_apply.DiskApplyError) as exc:
            disk_apply.drop_staged(place.pop("staged", None) or {})
            _drop_lazy(place)
            dropped = _drop_created(ctx, place)
            raise OpError(f"receiving checkpoint {opts.name!r} for {_label(ref, here)} failed, nothing was restored"
                          + (f" and {dropped} {'were' if ' and ' in dropped else 'was'} removed" if dropped else "")
                          + f": {exc}") from exc
        except BaseException:  # OpError, or anything unforeseen: nothing made for this receive stays
            disk_apply.drop_staged(place.pop("staged", None) or {})
            _drop_lazy(place)
            _drop_created(ctx, place)
            raise
        path = place["path"]
        if os.path.isdir(path) and store.read_metadata(path).get("files") != manifest["files"] and not opts.force:
            raise OpError(f"container {here} already has a checkpoint {opts.name!r} that differs from the one received: "
                          "use force=true to replace it, or another name")
        try:
            install(place["tmp"], manifest, path, f"stream at {fifo_path}")
        except BaseException:
            _drop_lazy(place)
            raise
        done = True
    finally:
        reader.close()
        if opts.directory in _MADE_DIRS:
            try:
                os.rmdir(opts.directory)  # made for this run's FIFOs: gone with the last of them
            except OSError:
                pass
        for round_dir in place.get("rounds") or []:
            shutil.rmtree(round_dir, ignore_errors=True)
        if place.get("tmp"):
            shutil.rmtree(place["tmp"], ignore_errors=True)
            if place.get("created_parent") and not done:
                shutil.rmtree(os.path.dirname(place["path"]), ignore_errors=True)
    return {"inspect": place["inspect"], "created": bool(place.get("created")), "bytes": reader.count,
            "waited_seconds": round(waited, 3), "seconds": round(time.monotonic() - begin - waited, 3),
            "finished_at": round(time.time(), 3), "disk": disk, "lazy": place.get("lazy")}


def _round_dir(place: dict[str, Any], manifest: dict[str, Any], fifo_path: str) -> str:
    """Where a pre-copy move's memory round goes (beside the checkpoint's place, until the final dump comes); the
    final dump itself goes to place['tmp'] once every round it names has come."""
    rounds = place.setdefault("rounds", [])
    place.setdefault("round_files", [])
    if manifest.get("phase") != "memory":
        if manifest.get("memory_rounds") != len(rounds):
            raise OpError(f"the stream at {fifo_path} sent {len(rounds)} memory rounds, and its checkpoint builds on "
                          f"{manifest.get('memory_rounds')}")
        shutil.rmtree(place["tmp"], ignore_errors=True)
        return str(place["tmp"])
    if manifest["round"] != len(rounds) + 1:
        raise OpError(f"the stream at {fifo_path} sent memory round {manifest['round']} after {len(rounds)} rounds")
    where = os.path.join(os.path.dirname(place["path"]), f".{manifest['checkpoint']}.fleet-round-{manifest['round']}")
    shutil.rmtree(where, ignore_errors=True)
    rounds.append(where)
    place["round_files"].append(manifest["files"])
    return where


def _nest_rounds(place: dict[str, Any], manifest: dict[str, Any], fifo_path: str) -> None:
    """A pre-copy move's final dump builds on its rounds: they become its parent directories (CRIU follows them)."""
    rounds = place.get("rounds") or []
    if manifest.get("memory_rounds", 0) != len(rounds):
        raise OpError(f"the stream at {fifo_path} sent {len(rounds)} memory rounds, and its checkpoint builds on "
                      f"{manifest.get('memory_rounds', 0)}")
    if rounds:
        precopy_rounds.nest(place["tmp"], rounds)
        place["rounds"] = []
        # The checkpoint's metadata lists every file of the chain (what a later restore checks it against).
        manifest["files"] = precopy_rounds.chain_files(manifest["files"], place["round_files"])


def _drop_lazy(place: dict[str, Any]) -> None:
    lazy = place.pop("lazy", None)
    if lazy is not None:
        lazy.cleanup(keep_config=False)
