# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""state=present: checkpoint a running container, stopping it or leaving it running.

plan() checks everything and says what would be done (all check mode sees); execute() does it. The Docker traps
handled here (see the project's LAB-FACTS):
- a restart policy cold-starts a checkpointed container after a reboot: it is set to `no` before a stopping dump and
  recorded in the checkpoint's metadata (restore.py puts it back);
- a container live-restored across a daemon restart stays running after a stopping API checkpoint: detected, and the
  dump redone through containerd's task API, which stops it;
- Docker's own checkpoint copies the images through containerd's content store: the fast path dumps through
  containerd's Tasks.Checkpoint straight into Docker's checkpoint directory;
- a dump whose end was not seen is in doubt: marked, refused by later runs, and never costs the older checkpoint.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import (
    HostContext,
    Inspect,
    Result,
    new_result,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import DumpInDoubt, OpError, carrying
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.integrity import images
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import (
    PreflightError,
    check_free_space,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.retention import Retention, prune
from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd.task import DumpError, DumpTimedOut
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.log import explain
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.commands import which
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import private_files
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import processes as procs


STATS_FILE = "stats-dump"  # CRIU's dump statistics (CR_FD_STATS, a service image in its work directory)
CPUINFO_FILE = "cpuinfo.img"  # CRIU's record of the CPU's features (criu cpuinfo dump)


@dataclass(frozen=True)
class DumpOptions:
    """The options of state=present that the dump itself reads."""

    name: str
    leave_running: bool = False
    force: bool = False
    method: str = "auto"  # auto, api or containerd
    timeout: int = 600
    in_manifest: bool = False  # the run is recorded in a host manifest (an existing checkpoint is refused)
    retention: Retention = field(default_factory=Retention)
    group: Optional[Mapping[str, Any]] = None  # the group this checkpoint is one of (consistent=true), recorded
    keep_replaced: bool = False  # the checkpoint replaced (force) is kept aside: a group drops it when all succeeded


@dataclass(frozen=True)
class Dump:
    """One dump: of which container, into which directory, stopping it or not, and since when (CRIU's log lines
    written after `since` are this dump's). The main process (host PID, start time) tells when a stopping dump ended."""

    container_id: str
    name: str
    path: str
    stop: bool
    since: float
    timeout: int
    main_pid: int | None = None
    main_started: int | None = None


@dataclass
class DumpPlan:
    """What plan() found, for execute(): the container, its checkpoint directory, the dump path chosen."""

    inspect: Inspect
    result: Result
    path: str
    exists: bool
    method: str
    restart_policy: container.Policy
    pids: list[int]
    replaced: Optional[str] = None  # with keep_replaced: where the checkpoint this one replaced was kept


def plan(ctx: HostContext, ref: str, opts: DumpOptions) -> tuple[Result, DumpPlan | None]:
    """Check everything a checkpoint of `ref` needs; the result as it will be (or is, when the checkpoint exists
    already: then no plan). Nothing is changed."""
    found = container.settled(ctx, container.inspect(ctx, ref))
    cid = found["Id"]
    result = new_result(found, opts.name)
    with carrying(result):
        path = store.checkpoint_path(ctx.root_dir, cid, opts.name, put_back_pages=not ctx.check_mode)
        result["path"] = path
        exists = os.path.isdir(path)
        if exists and not opts.force:
            if os.path.exists(store.in_doubt_marker(path)):
                raise OpError(f"checkpoint {opts.name!r} of container {result['container']} is in doubt: an earlier "
                              f"run could not tell whether its dump finished ({path}). Check the container, then "
                              "remove the checkpoint with state=absent, or replace it with force=true")
            if opts.in_manifest:
                raise OpError(f"container {result['container']} already has a checkpoint {opts.name!r}: a run recorded "
                              "in a host manifest needs a new checkpoint name (an old checkpoint would be restored "
                              "instead of the state at this run), or force=true to replace it")
            result["method"] = store.read_metadata(path).get("method")
            return result, None
        state = found.get("State") or {}
        if not state.get("Running") or state.get("Paused") or state.get("Restarting"):
            raise OpError(f"container {result['container']} is {state.get('Status', 'not running')}: a checkpoint "
                          "needs a running container (start it, or restore it with state=restored)")
        if not opts.leave_running and (found.get("HostConfig") or {}).get("AutoRemove"):
            raise OpError(f"container {result['container']} was started with --rm: Docker would delete it, and its "
                          "checkpoint with it, as soon as the dump stops it. Use leave_running=true (then "
                          "state=exported to keep a copy elsewhere)")
        pids = container.host_pids(ctx, cid)
        try:
            check_free_space(store.checkpoints_dir(ctx.root_dir, cid), procs.dump_estimate(procs.rss_bytes(pids)))
        except PreflightError as exc:
            raise OpError(str(exc)) from exc
        method, why = _choose_method(ctx, opts.method, cid, state.get("Pid"))
        restart_policy = container.policy(found)
        result.update(method=method, leave_running=opts.leave_running, restart_policy=restart_policy)
        if why:
            result["method_reason"] = why
        result["changed"] = True
        result["action"] = "recreated" if exists else "created"
    return result, DumpPlan(found, result, path, exists, method, restart_policy, pids)


def present(ctx: HostContext, ref: str, opts: DumpOptions) -> Result:
    """Make sure the checkpoint exists (made now unless it exists and force is not set)."""
    result, planned = plan(ctx, ref, opts)
    if planned is None or ctx.check_mode:
        return result
    return execute(ctx, planned, opts)


def execute(ctx: HostContext, planned: DumpPlan, opts: DumpOptions,
            dumped: Callable[[], None] | None = None) -> Result:
    """Make the planned checkpoint. An existing checkpoint of that name is kept aside until the new one is made
    (put back if the dump fails); a dump in doubt is marked and its directory left as it is. `dumped` is called as
    soon as CRIU's dump succeeded, before the checkpoint is recorded (a group thaws its members then)."""
    result = planned.result
    with carrying(result):
        _execute(ctx, planned, opts, dumped)
    return result


def _execute(ctx: HostContext, planned: DumpPlan, opts: DumpOptions, dumped: Callable[[], None] | None) -> None:
    result, path, cid = planned.result, planned.path, planned.inspect["Id"]
    state = planned.inspect.get("State") or {}
    main_started = procs.start_time(state["Pid"]) if state.get("Pid") else None
    started = time.time()
    result["dump_started_at"] = round(started, 3)
    dump = Dump(cid, opts.name, path, stop=not opts.leave_running, since=started, timeout=opts.timeout,
                main_pid=state.get("Pid"), main_started=main_started[1] if main_started else None)
    processes = procs.process_tree(planned.pids)
    in_doubt = store.in_doubt_marker(path)
    created_parent = not os.path.isdir(os.path.dirname(path))
    private_files.make_private_dir(os.path.dirname(path))
    backup = None
    if planned.exists:
        backup = os.path.join(os.path.dirname(path), f".{opts.name}.fleet-old")
        if os.path.exists(in_doubt) and os.path.isdir(backup):
            shutil.rmtree(path)  # the dump in doubt goes; the checkpoint it was replacing stays the backup
        else:
            shutil.rmtree(backup, ignore_errors=True)
            os.rename(path, backup)
    if os.path.exists(in_doubt):
        os.unlink(in_doubt)
    recorded = planned.restart_policy
    policy_changed = False
    try:
        if dump.stop and not container.is_no(recorded):
            container.set_policy(ctx, cid, container.NO_POLICY)
            policy_changed = True
        method = run_dump(ctx, dump, planned.method, result)
        if dumped is not None:
            dumped()
    except DumpInDoubt as exc:
        result["modified"] = True
        private_files.write_private_json(in_doubt, {"since": round(time.time(), 3), "container": cid})
        kept = f" The checkpoint it was replacing is kept in {backup}." if backup else ""
        raise OpError(f"{exc}{kept} {container.aftermath(ctx, cid, recorded)}") from exc
    except BaseException as exc:
        shutil.rmtree(path, ignore_errors=True)
        if backup:
            os.rename(backup, path)
        elif created_parent:
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
        if policy_changed and container.inspect(ctx, cid).get("State", {}).get("Running"):
            container.set_policy(ctx, cid, recorded)
        aftermath = container.aftermath(ctx, cid, recorded)
        if aftermath and isinstance(exc, Exception):
            result["modified"] = True
            raise OpError(f"{exc} {aftermath}") from exc
        raise
    if backup and opts.keep_replaced:
        planned.replaced = backup
    elif backup:
        shutil.rmtree(backup, ignore_errors=True)
    try:
        _record(ctx, planned, opts, dump, processes, method)
    except (OSError, DockerAPIError, ValueError) as exc:
        result["modified"] = True
        raise OpError(f"the checkpoint was made at {path}, but finishing it failed: {exc}. "
                      f"{container.aftermath(ctx, cid, recorded)} The recorded restart policy was "
                      f"{recorded['Name']!r}; put it back by hand after restoring if the metadata is missing.") from exc


def _record(ctx: HostContext, planned: DumpPlan, opts: DumpOptions, dump: Dump, processes: list[procs.ProcessInfo],
            method: str) -> None:
    """The new checkpoint made root-only, its metadata written, older checkpoints pruned."""
    result = planned.result
    record_cpu(ctx, dump.path)
    store.secure_tree(dump.path)
    metadata = {
        "format": store.METADATA_FORMAT,
        "name": opts.name,
        "created": dump.since,
        "method": method,
        "leave_running": opts.leave_running,
        "container": {"id": dump.container_id, "name": result["container"], "image": planned.inspect.get("Image")},
        "restart_policy": planned.restart_policy,
        "processes": processes,
        "versions": dict(ctx.versions),
        # Size and sha256 of every file, checked before a restore or an export: a damaged checkpoint is
        # refused instead of restored into a process with corrupted memory.
        "files": images(dump.path),
    }
    if opts.group:
        metadata["group"] = dict(opts.group)
    store.write_metadata(dump.path, metadata)
    result["method"] = method
    result["size"] = store.tree_size(dump.path)
    result["stopped"] = dump.stop
    result["duration"] = round(time.time() - dump.since, 3)
    result["pruned"] = prune(ctx, dump.container_id, opts.name, opts.retention, dump.since)


def _choose_method(ctx: HostContext, wanted: str, cid: str, pid: int | None) -> tuple[str, str]:
    """The dump path (containerd or api) and, when auto did not choose containerd, why."""
    if wanted == "api":
        return "api", ""
    why = _containerd_unusable(ctx, cid, pid)
    if not why:
        return "containerd", ""
    if wanted == "containerd":
        raise OpError(f"method=containerd cannot be used for this container: {why}. Use method=auto or api")
    return "api", f"containerd path not used: {why}"


def _containerd_unusable(ctx: HostContext, cid: str, pid: int | None) -> str:
    """'' when containerd's task path can dump the container, else why not."""
    if ctx.containerd is None:
        return "ctr (containerd's client) is not installed"
    return ctx.containerd.check(cid, pid or 0)


def run_dump(ctx: HostContext, dump: Dump, method: str, result: Result) -> str:
    """Dump through `method` (containerd or api) and make sure a stopping dump really stopped the container; the
    path that made the checkpoint (Docker's API leaves a live-restored container running: then containerd's)."""
    if method == "containerd":
        dump_containerd(ctx, dump, result)
    else:
        _dump_api(ctx, dump, result)
    if not dump.stop:
        return method
    watched = method == "containerd" and dump.main_started is not None
    if watched and procs.wait_gone(dump.main_pid, dump.main_started, seconds=10):
        # containerd's dump with exit has ended the processes: stopped. Docker records the exit a moment later
        # (see container.settled); waiting for it here cost every checkpoint ~0.15 s.
        return method
    # Still alive after 10 s: running.
    state = container.wait_state(ctx, dump.container_id, running=False, seconds=0 if watched else 10)
    if not state.get("Running"):
        return method
    # Docker left it running: a container live-restored across a daemon restart (its runc options are lost).
    shutil.rmtree(dump.path, ignore_errors=True)
    why = _containerd_unusable(ctx, dump.container_id, state.get("Pid"))
    if method == "containerd" or why:
        raise OpError(
            f"container {result['container']} is still running after a stopping checkpoint through {method}, "
            "so the checkpoint was discarded (nothing is reported stopped that still runs). This happens to "
            "containers kept alive across a Docker daemon restart (live-restore). "
            + (f"The containerd path cannot be used: {why}. " if why else "")
            + "Remedy: install containerd's ctr and use method=auto, or restart the container once "
            "(`docker restart`) before checkpointing it."
        )
    result["warnings"].append(
        f"Docker's checkpoint API left {result['container']} running (it was live-restored across a daemon "
        "restart); the checkpoint was redone through containerd's task API, which stops it"
    )
    result["live_restored"] = True
    result.pop("method_reason", None)
    dump_containerd(ctx, dump, result)
    state = container.wait_state(ctx, dump.container_id, running=False, seconds=10)
    if state.get("Running"):
        shutil.rmtree(dump.path, ignore_errors=True)
        raise OpError(f"container {result['container']} is still running after the containerd checkpoint with "
                      "exit; the checkpoint was discarded. Restart the container and try again.")
    return "containerd"


def _dump_api(ctx: HostContext, dump: Dump, result: Result) -> None:
    """Docker's checkpoint API (POST /containers/{id}/checkpoints)."""
    try:
        dump_started = time.monotonic()
        ctx.api.post(f"/containers/{dump.container_id}/checkpoints",
                     body={"CheckpointID": dump.name, "Exit": dump.stop}, timeout=dump.timeout)
        result["dump_call_seconds"] = round(time.monotonic() - dump_started, 3)
    except DockerAPIError as exc:
        if exc.status is None:
            raise DumpInDoubt(
                f"the Docker Engine did not answer the checkpoint of {result['container']} ({exc}); the daemon "
                f"may still be dumping it into {dump.path}. Nothing was cleaned up: check `docker checkpoint ls` "
                "and the container, or raise timeout for large containers.") from exc
        raise OpError(explain(ctx.criu_log, f"checkpoint of {result['container']} failed", str(exc),
                              dump.since)) from exc


def dump_containerd(ctx: HostContext, dump: Dump, result: Result) -> None:
    """containerd's task checkpoint straight into the checkpoint directory. A failed dump leaves nothing; a dump in
    doubt leaves its directory as it is (DumpInDoubt)."""
    if ctx.containerd is None:  # not reached: the containerd path is chosen only with ctr (see _choose_method)
        raise OpError("checkpoint through containerd failed: ctr (containerd's client) is not installed")
    dump_started = time.monotonic()
    client: str | None = None
    work = criu_work_dir(dump.path)
    in_doubt = False
    try:
        shutil.rmtree(work, ignore_errors=True)
        private_files.make_private_dir(work)
        client = ctx.containerd.checkpoint(dump.container_id, dump.path, dump.stop, timeout=dump.timeout,
                                           work_path=work)
        keep_stats(work, dump.path)
    except DumpError as exc:
        client = exc.client
        in_doubt = isinstance(exc, DumpTimedOut) or exc.in_doubt
        if isinstance(exc, DumpTimedOut):
            raise DumpInDoubt(f"containerd did not finish the checkpoint within timeout={dump.timeout}s; it may "
                              f"still be dumping into {dump.path}. Nothing was cleaned up: check the container and "
                              "`docker checkpoint ls`, or raise timeout for large containers.") from exc
        if exc.in_doubt:
            raise DumpInDoubt(f"{exc}. containerd may still be dumping into {dump.path}, or may have finished. "
                              "Nothing was cleaned up: check the container and `docker checkpoint ls` before running "
                              "again.") from exc
        shutil.rmtree(dump.path, ignore_errors=True)
        raise OpError(explain(ctx.criu_log, "checkpoint through containerd failed", str(exc), dump.since)) from exc
    finally:
        result["dump_call_seconds"] = round(time.monotonic() - dump_started, 3)
        if client:
            result["containerd_client"] = client
        if not in_doubt:  # (a dump in doubt may still be writing there)
            shutil.rmtree(work, ignore_errors=True)


def record_cpu(ctx: HostContext, path: str) -> None:  # (run: never raises for a failing command)
    """CRIU's record of this host's CPU features (`criu cpuinfo dump`: cpuinfo.img) kept in the checkpoint, so that
    docker_checkpoint_info can tell whether another host's CPU can run its processes (`criu cpuinfo check`). A CRIU
    that cannot say leaves none: nothing else depends on it."""
    criu = which("criu")
    if criu and not os.path.exists(os.path.join(path, CPUINFO_FILE)):
        ctx.run([criu, "cpuinfo", "dump", "-D", path])


def criu_work_dir(path: str) -> str:
    """Where CRIU works for a dump into checkpoint directory `path`: beside the container's checkpoints directory, in
    the container's own directory (root-only, removed with the container), not among its checkpoints."""
    checkpoints = os.path.dirname(os.path.abspath(path))
    return os.path.join(os.path.dirname(checkpoints), f".fleet-criu-work-{os.path.basename(path)}")


def keep_stats(work: str, path: str) -> None:
    """CRIU's dump statistics (stats-dump, in its work directory) kept in the checkpoint, where
    docker_checkpoint_info details=true reads them."""
    stats = os.path.join(work, STATS_FILE)
    try:
        if os.path.isfile(stats) and not os.path.islink(stats) and os.path.isdir(path):
            shutil.copyfile(stats, os.path.join(path, STATS_FILE))
    except OSError:
        pass  # (statistics only: the checkpoint is whole without them)
