# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sending end of a pre-copy move (state=present with send_to.memory_rounds): the container's memory is sent in
rounds while it runs (runc pre-dumps, see _criu/precopy_rounds.py), each round only what changed since the one
before, until little changes or the rounds run out; then the container is frozen and dumped, and only what changed
since the last round travels during the freeze. The target restores the whole chain through Docker."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Result, new_result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.dump import keep_stats, record_cpu
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError, carrying
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.export import portable_manifest
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import file_inventory
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.import_ import install
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import (
    PreflightError,
    check_free_space,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import lazy_pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import precopy_rounds
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.commands import which
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import private_files
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import processes as procs


def problems(ctx: HostContext) -> list[str]:
    """What keeps this host from sending memory in pre-copy rounds (empty: nothing)."""
    runc, criu = which("runc"), which("criu")
    found = [] if runc else ["the runc command is missing (pre-copy rounds run it directly)"]
    found += [] if criu else ["the criu command is missing"]
    if criu:
        problem = lazy_pages.feature_problem(ctx.run, criu, "mem_dirty_track")
        found += [problem] if problem else []
    return found


def check_room(ctx: HostContext, cid: str, path: str, refusal: str, expected: int | None = None) -> None:
    """Refuse to go on when the filesystem of `path`'s directory (the host's checkpoint area) cannot hold the next
    dump: `expected` bytes of images (a later round or the final dump: about what the round before wrote), or, for
    the first round, the container's whole resident memory; plus slack. The rounds before stay until the end."""
    if expected is None:
        expected = procs.rss_bytes(container.host_pids(ctx, cid))
    try:
        check_free_space(os.path.dirname(path), procs.dump_estimate(expected))
    except PreflightError as exc:
        raise OpError(f"{refusal}: {exc}") from exc


def dump_in_time(ctx: HostContext, runc: str, cid: str, argv: list[str], timeout: int) -> tuple[int, str, str]:
    """Run a pre-dump round or the final dump under a time limit: (rc, stdout, stderr). A dump that ran out of time is
    stopped with its CRIU, and the container it left frozen is thawed (runc resume)."""
    rc, out, err = ctx.run(precopy_rounds.bounded(argv, which("timeout"), timeout))
    if rc not in precopy_rounds.TIMED_OUT:
        return rc, out, err
    thawed, thaw_out, thaw_err = ctx.run(precopy_rounds.resume_argv(runc, cid))
    if thawed != 0 and "not paused" not in f"{thaw_out} {thaw_err}":
        err = f"{err} (thawing the container failed too: {' '.join((thaw_err or thaw_out).split())})"
    ended = "did not end within" if rc == 124 else "was killed (after its time limit, or by the kernel) within"
    return rc, out, (f"it {ended} {timeout} s and was stopped; CRIU could not tidy up behind it, so the "
                     f"container's TCP connections may not survive. {err}").strip()


def send_precopied(ctx: HostContext, ref: str, name: str, send_to: send.SendTo, timeout: int) -> Result:
    """Move container `ref` to send_to's waiting restore, pre-copy; the result says how it went."""
    found = container.settled(ctx, container.inspect(ctx, ref))
    cid = found["Id"]
    result = new_result(found, name)
    where = send.remote(send_to, result["container"], name)[1]
    path = store.checkpoint_path(ctx.root_dir, cid, name, put_back_pages=False)
    with carrying(result):
        container.refuse_unmovable(found, result["container"], "pre-copy", "final dump ends it here, with the "
                                   "checkpoint that could bring it back if the move broke")
        if os.path.lexists(path):
            raise OpError(f"container {result['container']} already has a checkpoint {name!r}: a pre-copy move makes "
                          "a new one. Remove it (state=absent) or use another name")
        found_problems = problems(ctx)
        if found_problems:
            raise OpError(f"{result['container']} cannot be moved with pre-copy rounds from this host, so nothing "
                          "was touched: " + "; ".join(found_problems))
        check_room(ctx, cid, path, f"{result['container']} cannot be moved with pre-copy rounds, so nothing was "
                   "touched")
        policy = container.policy(found)
        result.update(changed=True, action="sent", method="precopy", restart_policy=policy)
        if ctx.check_mode:
            result["sent"] = {"to": where, "mode": "precopy"}
            return result
        sender = send.connect(send_to, result, name)
        if not isinstance(sender, stream.Sender):  # (refused by the options already: via=relay)
            sender.abort()
            raise OpError("pre-copy rounds go straight to the target over SSH (send_to.via=ssh)")
    work = os.path.join(os.path.dirname(path), f".{name}.fleet-precopy")
    made_parent = not os.path.isdir(os.path.dirname(path))
    try:
        with carrying(result):
            _move(ctx, found, name, send_to, timeout, sender, work, path, result, where)
    finally:
        if not os.path.isdir(os.path.join(work, "final")):  # (left only when keeping it failed: the error says so)
            shutil.rmtree(work, ignore_errors=True)
        if made_parent and os.path.isdir(os.path.dirname(path)) and not os.listdir(os.path.dirname(path)):
            os.rmdir(os.path.dirname(path))
    return result


def _rounds(ctx: HostContext, found: dict[str, Any], name: str, send_to: send.SendTo, timeout: int,
            sender: stream.Sender, work: str, runc: str, result: Result) -> tuple[list[str], list[dict[str, Any]]]:
    """Pre-dump and send rounds while the container runs; their directories and what each moved."""
    cid, shell_job = found["Id"], bool((found.get("Config") or {}).get("Tty"))
    max_rounds, goal = int(send_to.get("memory_rounds") or 0), int(send_to.get("memory_goal") or 70)
    dirs: list[str] = []
    moved: list[dict[str, Any]] = []
    while precopy_rounds.another_round([item["images_bytes"] for item in moved], max_rounds, goal):
        number = len(dirs) + 1
        images, criu_work = os.path.join(work, f"round-{number}"), os.path.join(work, f"work-{number}")
        private_files.make_private_dir(criu_work)
        begin = time.monotonic()
        if dirs:
            check_room(ctx, cid, work, f"pre-copy round {number} of {result['container']} was not begun, and the "
                       "container runs on here (nothing was restored on the target)", moved[-1]["images_bytes"])
        rc, out, err = dump_in_time(ctx, runc, cid, precopy_rounds.dump_argv(
            runc, cid, images, criu_work, dirs[-1] if dirs else None, pre_dump=True, shell_job=shell_job), timeout)
        if rc != 0:
            sender.abort()
            where_now = ("runs on here" if container.is_running(ctx, container.inspect(ctx, cid))
                         else "is not running here (look at it: CRIU's log is in the message)")
            raise OpError(f"pre-copy round {number} of {result['container']} failed, and the container {where_now} "
                          f"(nothing was restored on the target): {' '.join((err or out).split())[-2000:]}")
        dumped = time.monotonic() - begin
        size = precopy_rounds.images_bytes(images)
        precopy_rounds.unlink_parent(images)
        manifest = portable_manifest(ctx, name, found, images, {"method": "api", "created": time.time()},
                                     file_inventory(images))
        manifest.update(phase="memory", round=number)
        try:
            sent = sender.send_more(manifest, {}, timeout, source_dir=images)
        except stream.StreamError as exc:
            raise OpError(f"sending pre-copy round {number} of {result['container']} failed, and the container runs "
                          f"on here: {exc}") from exc
        dirs.append(images)
        moved.append({"round": number, "images_bytes": size, "bytes": sent["bytes"], "dump_seconds": round(dumped, 3),
                      "seconds": sent["seconds"]})
    return dirs, moved


def _move(ctx: HostContext, found: dict[str, Any], name: str, send_to: send.SendTo, timeout: int,
          sender: stream.Sender, work: str, path: str, result: Result, where: str) -> None:
    cid, policy = found["Id"], result["restart_policy"]
    runc = which("runc") or "runc"
    try:
        shutil.rmtree(work, ignore_errors=True)
        private_files.make_private_dir(os.path.dirname(work))
        private_files.make_private_dir(work)
        dirs, moved = _rounds(ctx, found, name, send_to, timeout, sender, work, runc, result)
        final, criu_work = os.path.join(work, "final"), os.path.join(work, "work-final")
        private_files.make_private_dir(criu_work)
        check_room(ctx, cid, work, f"the final dump of {result['container']} after {len(dirs)} pre-copy rounds was "
                   "not begun, and the container runs on here", moved[-1]["images_bytes"] if moved else None)
        if not container.is_no(policy):
            container.set_policy(ctx, cid, {"Name": "no"})  # the final dump ends the container: no cold start
    except BaseException:
        sender.abort()
        if container.is_running(ctx, container.inspect(ctx, cid)):
            _give_back(ctx, cid, policy)
        raise
    processes = procs.process_tree(container.host_pids(ctx, cid))  # (what the target's check finds again)
    started = time.time()
    rc, out, err = dump_in_time(ctx, runc, cid, precopy_rounds.dump_argv(
        runc, cid, final, criu_work, dirs[-1] if dirs else None, pre_dump=False,
        shell_job=bool((found.get("Config") or {}).get("Tty"))), timeout)
    dumped = time.time()
    result["dump_started_at"] = round(started, 3)
    result["duration"] = round(dumped - started, 3)
    if rc != 0:
        sender.abort()
        running = container.is_running(ctx, container.inspect(ctx, cid))
        if running:
            _give_back(ctx, cid, policy)
        raise OpError(f"the final dump of {result['container']} after {len(dirs)} pre-copy rounds failed"
                      + (", and the container runs on here" if running else ", and the container is not running "
                         "here (look at it: CRIU's log is in the message)")
                      + f": {' '.join((err or out).split())[-2000:]}")
    result["stopped"] = True
    metadata = {"method": "api", "created": dumped, "restart_policy": policy, "processes": processes}
    manifest: dict[str, Any] | None = None
    try:
        precopy_rounds.unlink_parent(final)
        final_bytes = precopy_rounds.images_bytes(final)
        keep_stats(criu_work, final)  # (the final dump's statistics: docker_checkpoint_info details=true)
        record_cpu(ctx, final)
        manifest = portable_manifest(ctx, name, found, final, metadata, file_inventory(final))
        manifest["memory_rounds"] = len(dirs)
        container.wait_state(ctx, cid, running=False, seconds=10)
        sent = sender.send(final, manifest, timeout)
    except BaseException as exc:
        sender.abort()
        result["modified"] = True
        kept = _keep_here(ctx, found, final, dirs, manifest, metadata, path, where)
        raise OpError(f"the container {result['container']} was dumped after {len(dirs)} pre-copy rounds and is "
                      f"stopped, but sending the last of it to {where} failed: {str(exc).rstrip('.')}. {kept}"
                      ) from exc
    # As after a stop-and-copy, the container's checkpoint stays here until the move is known to have worked (the
    # playbook restores it here if the target's restore fails, then removes it).
    _keep_here(ctx, found, final, dirs, manifest, metadata, path, where)
    result["path"] = path
    result["sent"] = dict(sent, to=where, mode="precopy", rounds=moved,
                          before_bytes=sum(item["bytes"] for item in moved), during_bytes=sent["bytes"],
                          final_images_bytes=final_bytes)


def _keep_here(ctx: HostContext, found: dict[str, Any], final: str, dirs: list[str],
               manifest: dict[str, Any] | None, metadata: dict[str, Any], path: str, where: str) -> str:
    """The whole chain made into this container's checkpoint here (restorable with state=restored), its metadata
    listing every file of the chain; in words. The images stay in the work directory if this fails too."""
    try:
        rounds = [file_inventory(round_dir) for round_dir in dirs]
        if manifest is None:
            manifest = portable_manifest(ctx, str(metadata.get("name") or os.path.basename(path)), found, final,
                                         metadata, file_inventory(final))
        precopy_rounds.nest(final, dirs)
        install(final, dict(manifest, files=precopy_rounds.chain_files(manifest["files"], rounds)), path,
                f"the pre-copy move to {where}")
    except (OSError, ValueError) as exc:
        return f"Keeping its checkpoint here failed too ({exc}): its images stay in {os.path.dirname(final)}"
    return f"Its checkpoint {os.path.basename(path)!r} is kept here: restore it with state=restored"


def _give_back(ctx: HostContext, cid: str, policy: container.Policy) -> None:
    if not container.is_no(policy):
        try:
            container.set_policy(ctx, cid, policy)
        except Exception:  # pylint: disable=broad-exception-caught  # (the error said what matters)
            pass
