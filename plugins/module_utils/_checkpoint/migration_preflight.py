# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A migration's pre-flight on both hosts, before anything stops: every problem named at once, nothing changed.

The source side (`plan`) describes what will move: each container's configuration as a manifest records it, its
memory (the checkpoint's size, about), its image and the image's size, the source's CRIU, kernel and CPU (CRIU's
`cpuinfo dump`). The target side (`target_problems`) checks that plan against the target: the commands the transfer
path runs, the container names free, the published ports free, the user networks and bind-mount sources present,
the free disk for the images it lacks, the checkpoints and the disk state, Docker's experimental mode, CRIU present,
as new as the source's and new enough for the kernel, the kernel not older than the source's, the CPU features the processes use (`criu cpuinfo check`),
and, when disk state travels, the volumes not there yet and overlay2 for the writable layer.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Callable, Optional, Tuple

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_walk
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import migration_alongside
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import port_conflicts
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import container_config
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.names import rename_problems
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import (
    PreflightError,
    check_criu,
    check_experimental,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import lazy_pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.version import (
    at_least,
    kernel_version,
    parse_criu_version,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI, DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.container_create import missing_host_parts

Run = Callable[..., Tuple[int, str, str]]  # (typing's: collections.abc.Callable[...] fails on Python 3.8)
Which = Callable[[str], Optional[str]]
PLAN_KEYS = ("image", "port_bindings", "networks", "mounts", "network_mode")
MARGIN = 256 * 1024 * 1024  # free disk kept beyond the estimate (metadata, logs, the restore's own files)

# The commands each side runs, by transfer path (the playbook's own steps and the stream's ends).
COMMANDS = {
    ("source", "direct"): ("docker", "ssh", "scp"),
    ("source", "controller"): ("docker", "python3"),
    ("target", "direct"): ("docker", "python3"),
    ("target", "controller"): ("docker", "python3"),
}


def mode_problems(side: str, mode: str, run: Run, which: Which, api_version: str | None = None) -> list[str]:
    """What keeps this side from a move of this mode: for post-copy (V(lazy)), CRIU's lazy pages on both sides,
    runc on the source (which dumps through it) and, on the target, a Docker that takes container annotations
    (`api_version`, when known); for pre-copy (V(precopy)), the source kernel's dirty memory tracking and runc. Read
    from this host (its /proc)."""
    if mode not in ("lazy", "precopy"):
        return []
    criu = which("criu")
    if not criu:
        return []  # said by the CRIU checks already
    if mode == "precopy":
        if side != "source":
            return []  # the target restores an ordinary chain of images
        dirty = lazy_pages.feature_problem(run, criu, "mem_dirty_track")
        return ([f"pre-copy: {dirty}"] if dirty else []) + (
            [] if which("runc") else ["pre-copy: the runc command is missing on the source (the rounds run it)"])
    status, pipe_max = lazy_pages.read_host_facts()
    problems = [f"post-copy: {problem}" for problem in lazy_pages.lazy_problems(run, criu, status, pipe_max)]
    if side == "source" and not which("runc"):
        problems.append("post-copy: the runc command is missing on the source (the lazy dump runs it)")
    too_old = lazy_pages.annotation_problem(api_version) if side == "target" and api_version else None
    return problems + ([f"post-copy: {too_old}"] if too_old else [])


def missing_commands(side: str, transfer: str, which: Which) -> list[str]:
    """The commands this side of a `transfer` migration runs that this host lacks, as problems."""
    return [f"the {command} command is missing on the {side} (the {transfer} path runs it there): install it"
            for command in COMMANDS[(side, transfer)] if not which(command)]


def _criu(run: Run, which: Which) -> tuple[str | None, str | None]:
    """(CRIU's path, its version) on this host; (None, None) without CRIU."""
    path = which("criu")
    if not path:
        return None, None
    rc, out = run([path, "--version"])[:2]
    return path, parse_criu_version(out) if rc == 0 else None


def cpuinfo_dump(run: Run, criu_path: str | None) -> str | None:
    """CRIU's record of this CPU's features (`criu cpuinfo dump`), base64; None when CRIU cannot say."""
    if not criu_path:
        return None
    work = tempfile.mkdtemp(prefix="fleet-cpuinfo-")
    try:
        rc = run([criu_path, "cpuinfo", "dump", "-D", work])[0]
        image = os.path.join(work, "cpuinfo.img")
        if rc != 0 or not os.path.isfile(image):
            return None
        with open(image, "rb") as handle:
            return base64.b64encode(handle.read()).decode("ascii")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _memory(api: DockerAPI, cid: str) -> int:
    """The container's memory now (what its checkpoint's pages will about weigh), from Docker's stats."""
    try:
        stats = api.get(f"/containers/{cid}/stats", stream=0, **{"one-shot": 1}) or {}
    except DockerAPIError:
        return 0
    return int((stats.get("memory_stats") or {}).get("usage") or 0)


def disk_plan(api: DockerAPI, inspect: Mapping[str, Any], writable_layer: bool,
              volumes: str, together: Collection[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """The disk state of one container that travels ({'rootfs', 'volumes', 'bytes'}), and the problem that stops it
    (a volume another running container uses, one that is not a plain local volume, a storage driver other than overlay2)."""
    try:
        trees = disk_walk.plan(api, inspect, writable_layer, volumes, together)
    except OpError as exc:
        return {"rootfs": False, "volumes": [], "bytes": 0}, [str(exc)]
    size = 0
    for tree in trees:
        if tree.kind == "rootfs":
            try:
                found = api.get(f"/containers/{inspect['Id']}/json", size=1) or {}
                size += int(found.get("SizeRw") or 0)
            except DockerAPIError:
                size += disk_walk.tree_bytes(tree.path)
        else:
            size += disk_walk.tree_bytes(tree.path)
    return {"rootfs": any(tree.kind == "rootfs" for tree in trees),
            "volumes": [tree.name for tree in trees if tree.kind == "volume"], "bytes": size}, []


def host_local(inspect: Mapping[str, Any]) -> list[str]:
    """What stays on this host whatever moves: the bind mounts (their sources must exist on the target)."""
    name = (inspect.get("Name") or "").lstrip("/")
    return [f"{name}: bind mount {mount.get('Source')} -> {mount.get('Destination')} is host-local - its contents "
            f"do not move; the target's own {mount.get('Source')} is mounted there"
            for mount in inspect.get("Mounts") or [] if mount.get("Type") == "bind"]


def plan(api: DockerAPI, names: Iterable[str], run: Run, which: Which, kernel: str,
         writable_layer: bool = False, volumes: str = "none", group: bool = False) -> dict[str, Any]:
    """What moves, as the target's pre-flight needs it; containers that do not exist are left to the source's own
    pre-flight (docker_checkpoint in check mode), which names them. `problems` and `notices` are this side's.
    `group`: the containers move as one group (consistent=true), so a volume only they use travels, once."""
    containers = []
    problems: list[str] = []
    notices: list[str] = []
    found: dict[str, Any] = {}
    for name in names:
        try:
            found[name] = api.get(f"/containers/{name}/json") or {}
        except DockerAPIError:
            continue
    together = [str(inspect.get("Id")) for inspect in found.values()] if group else []
    carried: set[str] = set()
    for name, inspect in found.items():
        try:
            image_size = int((api.get(f"/images/{inspect.get('Image')}/json") or {}).get("Size") or 0)
        except DockerAPIError:
            image_size = 0
        # Only what the target's checks read: no environment, labels or command (secrets would show in the
        # task's result and in the target task's arguments).
        config = {key: value for key, value in container_config(inspect).items() if key in PLAN_KEYS}
        disk, trouble = disk_plan(api, inspect, writable_layer, volumes, together)
        disk["volumes"] = [volume for volume in disk["volumes"] if volume not in carried]  # (its bytes: counted twice)
        carried.update(disk["volumes"])
        problems += trouble
        notices += host_local(inspect)
        containers.append({"name": name, "config": config, "memory": _memory(api, inspect["Id"]),
                           "image_size": image_size, "disk": disk})
    criu_path, criu_version = _criu(run, which)
    return {"containers": containers, "criu": criu_version, "kernel": kernel,
            "cpuinfo": cpuinfo_dump(run, criu_path), "problems": problems, "notices": notices}


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as handle:
        return handle.read()


def target_problems(api: DockerAPI, the_plan: Mapping[str, Any], transfer: str, image_mode: str, run: Run,
                    which: Which, kernel: str, read: Callable[[str], str] = _read,
                    path_exists: Callable[[str], bool] = os.path.exists,
                    free_bytes: Callable[[str], int] | None = None,
                    replaced: list[str] | None = None, rename: Mapping[str, str] | None = None,
                    allow_older_kernel: bool = False, alongside: Mapping[str, Any] | None = None) -> list[str]:
    """Everything that would make the move fail on this host (the target), as messages; an empty list when it can
    take the containers. With `replaced` (a list), a stopped container of a moving one's name is not a problem: its
    name is added there (the playbook sets it aside, and removes it once the move is done). `rename` gives moving
    containers another name here ({name on the source: name here}). `alongside`: the plans of the other sources of
    a group that moves here together, by source host - what both bring, and the disk for all of them."""
    alongside = dict(alongside or {})
    rename = dict(rename or {})
    moving = [str(container["name"]) for container in the_plan.get("containers") or []]
    problems = missing_commands("target", transfer, which) + rename_problems(rename, moving)
    if not allow_older_kernel:
        problems += kernel_problems(str(the_plan.get("kernel") or ""), kernel)
    try:
        info = api.get("/info") or {}
        check_experimental(info)
    except PreflightError as exc:
        problems.append(str(exc))
    except DockerAPIError as exc:
        return problems + [f"Docker does not answer on the target: {exc}"]
    criu_path, criu_version = _criu(run, which)
    source_criu = the_plan.get("criu")
    if not criu_path:
        problems.append("CRIU is not installed on the target: run fleet.checkpoint.install there first")
    else:
        try:
            check_criu(run, criu_path, kernel_release=kernel, version=criu_version)
        except PreflightError as exc:
            problems.append(f"on the target: {exc}")
        if criu_version and source_criu and not at_least(criu_version, source_criu):
            problems.append(f"CRIU {criu_version} on the target is older than the source's {source_criu}, which makes "
                            "the checkpoint: install the same or a newer CRIU on the target")
        problems += cpu_problems(run, criu_path, the_plan.get("cpuinfo"))
    holders = port_conflicts.sockets(read)
    try:
        holders |= port_conflicts.published(api)
    except DockerAPIError as exc:
        problems.append(f"the target's published ports cannot be listed: {exc}")
    needed = MARGIN
    images: set[str | None] = set()
    for container in the_plan.get("containers") or []:
        config = container.get("config") or {}
        here = rename.get(container["name"], container["name"])
        name = here if here == container["name"] else f"{container['name']} (as {here})"
        try:
            there = api.get(f"/containers/{here}/json") or {}
            state = (there.get("State") or {}).get("Status") or "present"
            if replaced is not None and not (there.get("State") or {}).get("Running"):
                replaced.append(here)
            elif replaced is not None:
                problems.append(f"a container named {here} runs on the target: fleet_checkpoint_migrate_replace "
                                "replaces only a stopped one - stop it there first, or set fleet_checkpoint_migrate_"
                                "rename to give the moving one another name")
            else:
                problems.append(f"a container named {here} already exists on the target ({state}): remove or rename "
                                "it there first, set fleet_checkpoint_migrate_rename to give the moving one another "
                                "name, or fleet_checkpoint_migrate_replace to replace a stopped one")
        except DockerAPIError:
            pass
        for address, port, proto in port_conflicts.taken(port_conflicts.bindings(config), holders):
            problems.append(f"{name} publishes {address or '0.0.0.0'}:{port}/{proto}, which is taken on the "
                            "target: free it, or move the container that holds it first")
        problems += [f"{name}: {problem}" for problem in missing_host_parts(api, config, path_exists)]
        problems += disk_problems(api, info, name, container.get("disk") or {})
        needed += _bytes_needed(api, container, image_mode, images)
    problems += migration_alongside.clashes(the_plan, alongside)
    needed += sum(_bytes_needed(api, container, image_mode, images)
                  for container in migration_alongside.containers_of(alongside))
    root = info.get("DockerRootDir") or "/var/lib/docker"
    free = (free_bytes or _free_bytes)(root)
    if free < needed:
        together = "(with the group's other parts) " if alongside else ""
        problems.append(f"the target has {free // 2**20} MiB free in {root}, the images it lacks and the checkpoints "
                        f"{together}need about {needed // 2**20} MiB: free some space there")
    return problems


def _bytes_needed(api: DockerAPI, container: Mapping[str, Any], image_mode: str, images: set[str | None]) -> int:
    """The target's disk one moving container needs: its checkpoint (about its memory), its disk state, and its image
    when the target lacks it and it is not counted in `images` yet (an image is sent once)."""
    needed = int(container.get("memory") or 0) + int((container.get("disk") or {}).get("bytes") or 0)
    image_id = ((container.get("config") or {}).get("image") or {}).get("id")
    if image_mode == "load" and image_id and image_id not in images and not _has_image(api, image_id):
        needed += int(container.get("image_size") or 0)
    images.add(image_id)
    return needed


def kernel_problems(source: str, target: str) -> list[str]:
    """The target's kernel older (major.minor) than the source's, whose features the checkpointed processes may
    use (CRIU restores what the source's kernel gave them: namespaces, rseq, memfd seals, io_uring, ...)."""
    if not source or not target:
        return []
    older, newer = kernel_version(target)[:2], kernel_version(source)[:2]
    if older >= newer:
        return []
    return [f"the target's kernel {target} is older than the source's {source}: the processes may use what the "
            "newer kernel gave them, and CRIU cannot restore that here. Move to a host with the same or a newer "
            "kernel, or set fleet_checkpoint_migrate_allow_older_kernel to try anyway (a failed restore brings "
            "the containers back on the source)"]


def disk_problems(api: DockerAPI, info: Mapping[str, Any], name: str, disk: Mapping[str, Any]) -> list[str]:
    """What stops the container's disk state from landing here: its volumes existing already, a storage driver
    other than overlay2 for its writable layer."""
    problems = []
    if disk.get("rootfs") and info.get("Driver") != "overlay2":
        problems.append(f"{name}: its writable layer travels, but Docker on the target uses the {info.get('Driver')} "
                        "storage driver, not overlay2: set fleet_checkpoint_migrate_writable_layer to false to leave "
                        "it behind")
    for volume in disk.get("volumes") or []:
        try:
            api.get(f"/volumes/{volume}")
        except DockerAPIError as exc:
            if exc.status == 404:
                continue
            problems.append(f"{name}: volume {volume} cannot be looked up on the target: {exc}")
            continue
        problems.append(f"{name}: volume {volume} already exists on the target - its data would be replaced by the "
                        "source's: remove or rename it there, or set fleet_checkpoint_migrate_volumes to none")
    return problems


def _has_image(api: DockerAPI, image_id: str) -> bool:
    try:
        return (api.get(f"/images/{image_id}/json") or {}).get("Id") == image_id
    except DockerAPIError:
        return False


def _free_bytes(path: str) -> int:
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    stat = os.statvfs(probe)
    return stat.f_bavail * stat.f_frsize


def cpu_problems(run: Run, criu_path: str, cpuinfo: str | None) -> list[str]:
    """`criu cpuinfo check` of the source's CPU record on this host: the problem, or nothing."""
    if not cpuinfo:
        return []
    work = tempfile.mkdtemp(prefix="fleet-cpuinfo-")
    try:
        with open(os.path.join(work, "cpuinfo.img"), "wb") as handle:
            handle.write(base64.b64decode(cpuinfo))
        rc, out, err = run([criu_path, "cpuinfo", "check", "-D", work])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if rc == 0:
        return []
    detail = " / ".join(line.strip() for line in f"{out}\n{err}".splitlines() if line.strip())[-300:]
    return [f"the target's CPU lacks features the source's processes may use (`criu cpuinfo check`: "
            f"{detail or f'exit {rc}'}): move to a host with the same CPU features"]
