# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint consistent=true, state=restored with receive_timeout: the receiving end of a group moved
together (group_send.py). Every member's stream is waited for at once; only when all have arrived, each container
created and each checkpoint checked and in place (receive.py), are they restored together (group_restore.py). A
member whose stream fails, or a group whose restore fails, leaves nothing of the group here that this call created:
the sending side then restores the group where it was."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, Set

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_apply
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import results as results_mod
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError, message_of
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError


def received_group(ctx: HostContext, refs: List[str], opts: restore.RestoreOptions) -> tuple[List[Result], dict]:
    """Receive the streams of `refs` (the sender's names) and restore them here as one group; a result per member,
    in order, and the group's answer."""
    receiving = opts.receive
    if receiving is None:  # not reached: the caller passes receive options
        raise ValueError("received_group needs receive options")
    group: dict = {"members": [receiving.here(ref) for ref in refs], "consistent": True}
    if ctx.check_mode:
        return [_predicted(ctx, ref, receiving) for ref in refs], group
    got: Dict[str, receive.Received] = {}
    failed: Dict[str, str] = {}
    before = _volumes_here(ctx)

    def one(ref: str) -> None:
        try:
            got[ref] = receive.receive(ctx, ref, receiving)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            failed[ref] = message_of(exc)

    with ThreadPoolExecutor(max_workers=len(refs)) as pool:
        list(pool.map(one, refs))
    if failed:
        return _stream_failed(ctx, refs, got, failed, opts.name, before), group
    _adopt_group(ctx, refs, got, receiving, opts.name)
    names = [(got[ref]["inspect"].get("Name") or receiving.here(ref)).lstrip("/") for ref in refs]
    results, group = group_restore.restored_group(ctx, names, dataclasses.replace(opts, receive=None))
    removed: Dict[str, List[str]] = {}
    if any(result.get("failed") for result in results):
        removed = _remove_created(ctx, got, before)
    for ref, result in zip(refs, results):
        _describe(ref, got[ref], receiving, result, removed)
    return results, group


def _predicted(ctx: HostContext, ref: str, receiving: receive.ReceiveOptions) -> Result:
    try:
        return receive.predict(ctx, ref, receiving)
    except OpError as exc:
        return results_mod.failure(receiving.here(ref), message_of(exc), exc.partial)


def _stream_failed(ctx: HostContext, refs: List[str], got: Dict[str, receive.Received], failed: Dict[str, str],
                   name: str, before: Set[str]) -> List[Result]:
    """Some members' streams failed: nothing of the group is restored, and what this call created for the members
    that did arrive is removed again."""
    why = ", ".join(failed)
    removed = _remove_created(ctx, {ref: got[ref] for ref in refs if ref in got}, before)
    results: List[Result] = []
    for ref in refs:
        if ref in failed:
            results.append(results_mod.failure(ref, failed[ref]))
            continue
        arrived = got[ref]
        result = results_mod.failure(
            (arrived["inspect"].get("Name") or ref).lstrip("/"),
            f"not restored: checkpoint {name!r} arrived, but the stream of {why} (of the same group) failed, and a "
            "group is restored together or not at all"
            + (f"; {', '.join(removed[ref])} removed again" if removed.get(ref) else ""))
        result["received"] = {"bytes": arrived["bytes"]}
        results.append(result)
    return results


def _volumes_here(ctx: HostContext) -> Set[str]:
    try:
        return {str(volume.get("Name")) for volume in (ctx.api.get("/volumes") or {}).get("Volumes") or []}
    except DockerAPIError:
        return set()


def _remove_created(ctx: HostContext, arrivals: Dict[str, receive.Received], before: Set[str]) -> Dict[str, List[str]]:
    """Remove the containers the group's receives created, then the volumes made for them: those their streams
    carried, and those Docker made for their mounts (a volume one member carries, another mounts) - never one that
    was here before the group's receive began. What was removed, in words, by member."""
    removed: Dict[str, List[str]] = {}
    volumes: Dict[str, List[str]] = {}
    for ref, arrived in arrivals.items():
        if not arrived["created"]:
            continue
        removed[ref] = restore.abandon_received(ctx, arrived["inspect"]["Id"], [])
        mounted = [str(mount.get("Name")) for mount in arrived["inspect"].get("Mounts") or []
                   if mount.get("Type") == "volume" and mount.get("Name")]
        carried = list(((arrived.get("disk") or {}).get("volumes")) or [])
        volumes[ref] = [volume for volume in dict.fromkeys(carried + mounted) if volume not in before]
    for ref, names in volumes.items():
        gone = disk_apply.drop_volumes(ctx, [volume for volume in names if volume not in before])
        before.update(gone)  # (removed once, named once)
        removed[ref] += [f"volume {volume}" for volume in gone]
    return removed


def _adopt_group(ctx: HostContext, refs: List[str], got: Dict[str, receive.Received],
                 receiving: receive.ReceiveOptions, name: str) -> None:
    """The checkpoints record their group by the sender's names and container ids: name the members by their
    containers here, so that a later restore of the group here finds them all."""
    here = {ref: got[ref]["inspect"] for ref in refs}
    for ref in refs:
        path = store.checkpoint_dir(ctx.root_dir, here[ref]["Id"], name)
        metadata = store.read_metadata(path)
        recorded = metadata.get("group")
        if not isinstance(recorded, dict) or not os.path.isdir(path):
            continue
        members = list(recorded.get("members") or [])
        ids = list(recorded.get("ids") or [])
        for index, member in enumerate(members):
            if member in here:
                members[index] = (here[member].get("Name") or receiving.here(member)).lstrip("/")
                if index < len(ids):
                    ids[index] = here[member]["Id"]
        metadata["group"] = dict(recorded, members=members, ids=ids, moved_from=recorded.get("members"))
        store.write_metadata(path, metadata)


def _describe(ref: str, arrived: receive.Received, receiving: receive.ReceiveOptions, result: Result,
              removed: Dict[str, List[str]]) -> None:
    """What a member's receive adds to its restore's result: what arrived, whether its container was made for it
    (and, when the group's restore failed, what was removed again)."""
    if receiving.here(ref) != ref:
        result["renamed_from"] = ref
    result["received"] = {"bytes": arrived["bytes"], "waited_seconds": arrived["waited_seconds"],
                          "seconds": arrived["seconds"], "finished_at": arrived["finished_at"]}
    if arrived.get("disk"):
        result["received"]["disk"] = arrived["disk"]
    result["import_seconds"] = arrived["seconds"]
    if not arrived["created"]:
        return
    if not result.get("failed"):
        result["created"] = True
        result["changed"] = True
        return
    if ref in removed and "the container created for it" in removed[ref]:
        result["msg"] = f"{result.get('msg', 'not restored')}; {', '.join(removed[ref])} removed again"
    else:
        result["created"] = True  # still there: the caller removes it
