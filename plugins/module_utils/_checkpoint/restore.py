# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""state=restored: make sure the container runs from its checkpoint - in place, into another container (target),
from an archive (imported first, import_.py) or from a stream (received first, receive.py) - and prove it resumed.

The Docker traps handled here (see the project's LAB-FACTS):
- `start?checkpoint=` on a running container does nothing: restores only ever start a stopped container (force=true
  stops a running one first);
- restores into another container: the checkpoint is copied into that container's checkpoint directory;
- a container started afresh instead of restored is caught: its recorded process tree must be back, in its own time
  namespace (verify);
- the restart policy parked at `no` by the dump is put back once the container runs;
- a checkpoint dumped from another container names that container's cgroup, where runc before 1.2 has CRIU put the
  processes on cgroup v2: its cgroup image is pointed at this container's first (_criu/cgroup_image.py);
- the restore call itself: start_from_checkpoint.py.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_apply
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import import_
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import lazy_restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import start_from_checkpoint
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.archive import ArchiveOptions
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import sha256_file
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
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.integrity import check_intact, images
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.retention import Retention, prune
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import cgroup_image
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.log import explain
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.container_create import HostAccess
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import orphan_shims as shims
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import processes as procs


@dataclass(frozen=True)
class RestoreOptions:
    """The options a restore reads. At most one of archive (import first) and receive (receive first)."""

    name: str
    force: bool = False  # stop a running container and restore it (rewind)
    method: str = "auto"  # auto, containerd (linked pages) or api (Docker's copy)
    timeout: int = 600
    verify: bool = True
    target: str | None = None  # restore the checkpoint of `ref` into this stopped container
    archive: ArchiveOptions | None = None
    create: bool = False  # create a missing container from the archive's manifest
    receive: receive.ReceiveOptions | None = None
    retention: Retention = field(default_factory=Retention)
    allowed: HostAccess = field(default_factory=HostAccess)  # what of the host a container created here may reach
    checked: bool = False  # the checkpoint was just received and checked (a group's receive, group_receive.py)

    def import_options(self, archive: ArchiveOptions) -> import_.ImportOptions:
        return import_.ImportOptions(self.name, archive, force=self.force, create=self.create, allowed=self.allowed)


def restored(ctx: HostContext, ref: str, opts: RestoreOptions) -> Result:
    """Make sure the container runs from checkpoint opts.name."""
    received: receive.Received | None = None
    if opts.receive:
        if ctx.check_mode:
            return receive.predict(ctx, ref, opts.receive)
        received = receive.receive(ctx, ref, opts.receive)
        source, created = received["inspect"], received["created"]
    elif opts.archive:
        source, created = import_.inspect_or_create(ctx, ref, opts.import_options(opts.archive))
    else:
        source, created = container.inspect(ctx, ref), False
    target = container.inspect(ctx, opts.target) if opts.target else source
    target = container.settled(ctx, target)
    result = new_result(target, opts.name, created)
    if opts.receive and opts.receive.here(ref) != ref:
        result["renamed_from"] = ref
    lazy = received.get("lazy") if received else None
    try:
        with carrying(result):
            _restore(ctx, source, target, opts, received, result)
        if lazy is not None:
            lazy.cleanup(keep_config=True)  # the container stays: its configuration (now runc.conf's) with it
    except OpError as exc:
        if lazy is not None and lazy.complete:
            # Every page arrived, so the source's copy has ended: this one is the only one left - it stays.
            lazy.cleanup(keep_config=True)
            raise
        if lazy is not None:
            lazy.cleanup(keep_config=False)
        # A container this restore created (from a stream's or an archive's manifest) is not left behind.
        if created and (received or opts.archive) and not ctx.check_mode:
            volumes = ((received.get("disk") if received else None) or {}).get("volumes") or []
            removed = abandon_received(ctx, target["Id"], volumes)
            if removed:
                result["created"] = False
                result["removed"] = removed
                raise type(exc)(f"{exc}; {', '.join(removed)} removed again", exc.partial) from exc
        raise
    return result


DAEMON_BACK_WITHIN = 60  # seconds a killed Docker daemon is given to come back (systemd restarts it)


def abandon_received(ctx: HostContext, container_id: str, volumes: list[str]) -> list[str]:
    """A container created from a received stream that did not restore: remove it and the volumes made for it, so
    that the sending side can bring it back there with nothing left here. A Docker daemon killed mid-restore is
    waited for, and a copy containerd finished behind it (a shim Docker does not know of) is stopped first. What was
    removed, in words; nothing when the daemon did not come back in time."""
    deadline = time.monotonic() + DAEMON_BACK_WITHIN
    while True:
        try:
            ctx.api.get("/version")
            break
        except DockerAPIError as exc:
            if exc.status is not None:
                break  # it answers
            if time.monotonic() > deadline:
                return []
            time.sleep(1)
    removed = []
    orphans = shims.lingering_shims(container_id)
    if orphans and not shims.stop_shims(orphans):
        removed.append("the copy containerd restored behind the killed Docker daemon")
    try:
        ctx.api.delete(f"/containers/{container_id}", force=1)
        removed.append("the container created for it")
    except DockerAPIError:
        pass
    removed += [f"volume {name}" for name in disk_apply.drop_volumes(ctx, list(volumes))]
    return removed


def _restore(ctx: HostContext, source: Inspect, target: Inspect, opts: RestoreOptions,
             received: receive.Received | None, result: Result) -> None:
    tid = target["Id"]
    result["source"] = (source.get("Name") or "").lstrip("/")
    put_back = not ctx.check_mode
    src_path = store.checkpoint_path(ctx.root_dir, source["Id"], opts.name, put_back_pages=put_back)
    path = store.checkpoint_path(ctx.root_dir, tid, opts.name, put_back_pages=put_back)
    result["path"] = path
    state = target.get("State") or {}
    running = bool(state.get("Running"))
    result["was_running"] = running
    archive = opts.archive
    if running and not opts.force:
        if tid == source["Id"] and not archive and not received and not os.path.isdir(src_path):
            # A checkpoint that does not exist is an error, running container or not (it used to read as ok).
            raise checkpoint_not_found(opts.name, result["source"], store.checkpoint_names(ctx.root_dir, source["Id"]))
        _already_running(path, state, same=tid == source["Id"] and not archive, result=result)
        return
    if archive:
        import_started = time.monotonic()
        imported = import_.import_into(ctx, target, opts.import_options(archive))
        result["imported"] = imported["changed"]
        if imported["changed"] and not ctx.check_mode:
            result["import_seconds"] = round(time.monotonic() - import_started, 3)
        src_path = path
    elif received:
        receive.describe(result, received)
    elif not os.path.isdir(src_path):
        raise checkpoint_not_found(opts.name, result["source"], store.checkpoint_names(ctx.root_dir, source["Id"]))
    if not (archive or received or opts.checked):  # an imported archive or a received stream was just checked
        check_intact(src_path, store.read_metadata(src_path), opts.name, result["source"])
    result["changed"] = True
    result["action"] = "restored"
    orphans = {} if running else shims.lingering_shims(tid)
    if orphans:
        result["warnings"].append(
            f"{result['container']}: a copy Docker does not know of was running (containerd shim "
            f"{', '.join(map(str, orphans))}, left by a restore the Docker daemon was killed in the middle of)"
            + ("; it would be stopped before the restore" if ctx.check_mode else "; stopped it first"))
    if ctx.check_mode:
        return
    if orphans:
        alive = shims.stop_shims(orphans)
        if alive:
            raise OpError(f"{result['container']}: the copy Docker does not know of (pids "
                          f"{', '.join(map(str, alive))}) could not be stopped, so it was not restored again: "
                          "kill those processes, then run the restore again")
    started = time.time()
    if running:
        # Its current state is being replaced by the checkpoint's: a short grace period is enough.
        ctx.api.post(f"/containers/{tid}/stop", t=3, timeout=opts.timeout)
    if src_path != path:
        if os.path.isdir(path) and not _same_copy(path, src_path):
            shutil.rmtree(path)  # an older copy: the source's checkpoint was made again since
        if not os.path.isdir(path):
            store.copy_checkpoint(src_path, path)
            result["copied_from"] = src_path
    metadata = store.read_metadata(path)
    metadata.pop("failed_restore", None)
    _retarget_cgroups(ctx, target, path, metadata, result)
    lazy = received.get("lazy") if received else None
    if lazy is not None:
        lazy.start(path, opts.timeout)  # the source's page connection taken, criu lazy-pages up
    try:
        start_from_checkpoint.start(ctx, start_from_checkpoint.Start(tid, opts.name, path,
                                                                     "api" if lazy else opts.method, opts.timeout,
                                                                     started), result)
    except OpError as exc:
        if running:
            result["modified"] = True
            raise OpError(f"{exc}. {result['container']} was running before and force=true stopped it for the "
                          "restore: it is stopped now") from exc
        raise
    state = container.wait_state(ctx, tid, running=True, seconds=5)
    result["resumed_at"] = round(time.time(), 3)
    if lazy is not None:
        lazy.resumed()
    if not state.get("Running"):
        result.pop("resumed_at")
        raise OpError(explain(ctx.criu_log, f"{result['container']} stopped right after its restore (exit code "
                                            f"{state.get('ExitCode')})", state.get("Error") or "", started))
    try:
        _verify(ctx, tid, state, metadata, opts.verify, result)
    except OpError as exc:
        result["modified"] = True
        _put_back_policy(ctx, tid, metadata, result)
        metadata["failed_restore"] = {"started_at": state.get("StartedAt"), "at": time.time(), "reason": str(exc)}
        store.write_metadata(path, metadata)
        raise
    _put_back_policy(ctx, tid, metadata, result)
    if lazy is not None:
        _last_page(ctx, tid, lazy, opts.timeout, result)
    result["started_at"] = state.get("StartedAt")
    metadata["last_restore"] = {"started_at": state.get("StartedAt"), "at": time.time()}
    store.write_metadata(path, metadata)
    result["pruned"] = prune(ctx, tid, opts.name, opts.retention, time.time())
    result["duration"] = round(time.time() - started, 3)


def _same_copy(path: str, src_path: str) -> bool:
    """Is the checkpoint copy at path still the source's (but for the cgroup image pointed at its container)?"""
    copy, original = images(path), images(src_path)
    if store.read_metadata(path).get("cgroup_moved"):
        copy.pop(cgroup_image.IMAGE_NAME, None)
        original.pop(cgroup_image.IMAGE_NAME, None)
    return copy == original


def _retarget_cgroups(ctx: HostContext, target: Inspect, path: str, metadata: dict[str, Any], result: Result) -> None:
    """Point the checkpoint's cgroup paths at this container's cgroup when they name another container's; the
    checkpoint's recorded inventory follows the rewritten file, and the result says what moved."""
    driver = str((ctx.api.info() or {}).get("CgroupDriver") or "cgroupfs")
    parent = str((target.get("HostConfig") or {}).get("CgroupParent") or "")
    try:
        moved = cgroup_image.retarget_file(path, target["Id"], driver, parent)
    except (cgroup_image.CgroupImageError, OSError) as exc:
        raise OpError(f"the cgroup image of the checkpoint for {result['container']} cannot be read ({exc}), so it "
                      "was not restored: the checkpoint is damaged; restore an older one, or start the container "
                      "afresh") from exc
    if moved is None:
        return
    files = metadata.get("files")
    if isinstance(files, dict) and cgroup_image.IMAGE_NAME in files:
        full = os.path.join(path, cgroup_image.IMAGE_NAME)
        files[cgroup_image.IMAGE_NAME] = {"size": os.path.getsize(full), "sha256": sha256_file(full)}
    metadata["cgroup_moved"] = result["cgroup_moved"] = moved
    store.write_metadata(path, metadata)


def _last_page(ctx: HostContext, tid: str, lazy: lazy_restore.LazyRestore, timeout: int, result: Result) -> None:
    """A post-copy restore runs before its memory is all here: wait for the last page. When the pages stop coming,
    the container is killed here (its memory is incomplete); the source's copy runs on."""
    complete, seconds = lazy.wait(timeout)
    result["lazy"] = {"complete": complete, "pages_seconds": seconds}
    if complete:
        return
    reason = lazy.log_tail()
    try:
        ctx.api.post(f"/containers/{tid}/kill")
    except DockerAPIError:
        pass
    result["modified"] = True
    raise OpError(f"the memory pages of {result['container']} stopped coming from the source {seconds}s after it "
                  f"resumed here ({reason}): it was killed here, its memory being incomplete, and what it did since "
                  "its resume is lost; the source's copy runs on")


def _already_running(path: str, state: dict[str, Any], same: bool, result: Result) -> None:
    """A running container without force: nothing to do when it runs from this checkpoint (or is the checkpoint's own
    container), else OpError (Docker's start?checkpoint= would silently do nothing)."""
    failed = store.read_metadata(path).get("failed_restore") or {}
    if failed.get("started_at") and failed.get("started_at") == state.get("StartedAt"):
        raise OpError(f"{result['container']} runs since a restore that did not resume from the checkpoint "
                      f"({failed.get('reason')}): its memory state is not the checkpoint's. Use force=true to "
                      "stop it and restore again")
    if same:
        result["msg"] = "already running; use force=true to stop it and restore from the checkpoint"
        return
    last = store.read_metadata(path).get("last_restore") or {}
    if last.get("started_at") and last.get("started_at") == state.get("StartedAt"):
        result["msg"] = "already running from this checkpoint"
        result["resumed"] = True
        return
    raise OpError(f"target container {result['container']} is already running: a restore needs a stopped "
                  "container (stop it, or use force=true to stop it and restore)")


def _put_back_policy(ctx: HostContext, tid: str, metadata: dict[str, Any], result: Result) -> None:
    recorded = metadata.get("restart_policy")
    current = container.policy(container.inspect(ctx, tid))
    if isinstance(recorded, dict) and recorded.get("Name") != current.get("Name"):
        container.set_policy(ctx, tid, recorded)
        result["restart_policy_restored"] = recorded


def _verify(ctx: HostContext, tid: str, state: dict[str, Any], metadata: dict[str, Any], verify: bool,
            result: Result) -> None:
    """Did the container resume from the checkpoint: its recorded process tree back, in its own time namespace?"""
    if not verify:
        result["resumed"] = None
        return
    current = procs.process_tree(container.host_pids(ctx, tid))
    init_ns = procs.time_namespace(state["Pid"]) if state.get("Pid") else None
    check = procs.compare(metadata.get("processes") or [], current, init_ns, ctx.host_time_ns)
    result["processes"] = {"recorded": check["recorded"], "back": check["matched"]}
    if not metadata.get("processes"):
        result["resumed"] = None
        result["warnings"].append("no process tree recorded with this checkpoint (not made by fleet.checkpoint):"
                                  " the restore could not be verified beyond the container running")
        return
    if not check["resumed"]:
        raise OpError(f"{result['container']} is running but did not resume from the checkpoint: "
                      f"{check['reason']}")
    if not (init_ns and ctx.host_time_ns):
        result["resumed"] = None
        result["warnings"].append(f"{result['container']}: its processes are back, but time namespaces cannot be "
                                  "read on this host, so a cold start cannot be ruled out")
        return
    result["resumed"] = True
