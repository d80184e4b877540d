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
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, List, Optional, Set

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
    receiving = dataclasses.replace(receiving, await_volumes=_awaiting(ctx, refs, receiving.timeout))

    def one(ref: str) -> None:
        try:
            got[ref] = receive.receive(ctx, ref, receiving)
            if got[ref].get("lazy") is not None:
                raise OpError(f"the stream of {ref} is a post-copy move, which a group does not take (its memory "
                              "would follow after the group's instant)")
        except Exception as exc:  # pylint: disable=broad-exception-caught
            failed[ref] = message_of(exc)

    with ThreadPoolExecutor(max_workers=len(refs)) as pool:
        list(pool.map(one, refs))
    if failed:
        for arrived in got.values():
            lazy = arrived.get("lazy")
            if lazy is not None:
                lazy.cleanup(keep_config=False)
        return _stream_failed(ctx, refs, got, failed, opts.name, before), group
    try:
        _adopt_group(ctx, refs, got, receiving, opts.name)
        names = [(got[ref]["inspect"].get("Name") or receiving.here(ref)).lstrip("/") for ref in refs]
        # Every checkpoint was checked as it arrived: not hashed again during the group's downtime.
        results, group = group_restore.restored_group(ctx, names, dataclasses.replace(opts, receive=None,
                                                                                      checked=True))
    except Exception as exc:  # pylint: disable=broad-exception-caught
        return _stream_failed(ctx, refs, got, {}, opts.name, before, why=message_of(exc)), group
    removed: Dict[str, List[str]] = {}
    if any(result.get("failed") for result in results):
        removed = _remove_created(ctx, {ref: got[ref] for ref in refs}, before)  # in the group's order
    for ref, result in zip(refs, results):
        _describe(ref, got[ref], receiving, result, removed)
    return results, group


def _awaiting(ctx: HostContext, refs: List[str], timeout: float) -> Callable[[str, Dict[str, str]], None]:
    """What a member's receive calls before it makes its container: wait until the volumes it mounts that another
    member carries are here (made by that member's receive; Docker would make an empty one for the mount)."""

    def wait(ref: str, volumes_from: Dict[str, str]) -> None:
        strangers = sorted(member for member in volumes_from.values() if member not in refs)
        if strangers:
            raise OpError(f"the stream of {ref} waits for volumes carried by {', '.join(strangers)}, which this "
                          "call does not receive: select the whole group")
        deadline = time.monotonic() + timeout
        for volume, member in sorted(volumes_from.items()):
            while True:
                try:
                    ctx.api.get(f"/volumes/{volume}")
                    break
                except DockerAPIError as exc:
                    if exc.status != 404 or time.monotonic() > deadline:
                        raise OpError(f"volume {volume}, which {member} carries for {ref}, is not here "
                                      f"after {round(timeout)}s ({exc})") from exc
                time.sleep(0.05)

    return wait


def _predicted(ctx: HostContext, ref: str, receiving: receive.ReceiveOptions) -> Result:
    try:
        return receive.predict(ctx, ref, receiving)
    except OpError as exc:
        return results_mod.failure(receiving.here(ref), message_of(exc), exc.partial)


def _stream_failed(ctx: HostContext, refs: List[str], got: Dict[str, receive.Received], failed: Dict[str, str],
                   name: str, before: Optional[Set[str]], why: str = "") -> List[Result]:
    """Some members' streams failed (or, `why`, the group's restore could not begin): nothing of the group is
    restored, and what this call created for the members that did arrive is removed again."""
    why = why or f"the stream of {', '.join(failed)} (of the same group) failed"
    removed = _remove_created(ctx, {ref: got[ref] for ref in refs if ref in got}, before)
    results: List[Result] = []
    for ref in refs:
        if ref in failed:
            results.append(results_mod.failure(ref, failed[ref]))
            continue
        arrived = got[ref]
        result = results_mod.failure(
            (arrived["inspect"].get("Name") or ref).lstrip("/"),
            f"not restored: checkpoint {name!r} arrived, but {why}, and a group is restored together or not at all"
            + (f"; {', '.join(removed[ref])} removed again" if removed.get(ref) else ""))
        result["received"] = {"bytes": arrived["bytes"]}
        results.append(result)
    return results


def _volumes_here(ctx: HostContext) -> Optional[Set[str]]:
    """The volumes here now; None when Docker does not list them."""
    try:
        return {str(volume.get("Name")) for volume in (ctx.api.get("/volumes") or {}).get("Volumes") or []}
    except DockerAPIError:
        return None


def _remove_created(ctx: HostContext, arrivals: Dict[str, receive.Received],
                    before: Optional[Set[str]]) -> Dict[str, List[str]]:
    """Remove the containers the group's receives created, then the volumes made for them: those their streams
    carried, and those Docker made for their mounts (a volume one member carries, another mounts) - never one that
    was here before the group's receive began (without that list, only the carried ones). What was removed, in
    words, by member."""
    removed: Dict[str, List[str]] = {}
    volumes: Dict[str, List[str]] = {}
    for ref, arrived in arrivals.items():
        if not arrived["created"]:
            continue
        removed[ref] = restore.abandon_received(ctx, arrived["inspect"]["Id"], [])
        mounted = [str(mount.get("Name")) for mount in arrived["inspect"].get("Mounts") or []
                   if mount.get("Type") == "volume" and mount.get("Name")]
        carried = list(((arrived.get("disk") or {}).get("volumes")) or [])
        if before is None:
            volumes[ref] = carried
        else:
            volumes[ref] = [volume for volume in dict.fromkeys(carried + mounted) if volume not in before]
    done: Set[str] = set(before or ())
    for ref, names in volumes.items():
        gone = disk_apply.drop_volumes(ctx, [volume for volume in names if volume not in done])
        done.update(gone)  # (removed once, named once)
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
    receive.describe(result, arrived)
    if not arrived["created"]:
        return
    if ref in removed and "the container created for it" in removed[ref]:
        if not result.get("failed"):  # restored, but the group was not: gone again with the others
            result.update(failed=True, action="failed", changed=False,
                          msg="restored, but the group's restore failed for another member")
        result["msg"] = f"{result.get('msg', 'not restored')}; {', '.join(removed[ref])} removed again"
        return
    result["created"] = True  # here (restored), or still here after a failure: the caller removes it
    result["changed"] = True
