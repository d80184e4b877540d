# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint consistent=true, state=restored: a group's checkpoints restored together, none let run before
all are restored.

Every member's restore runs at once (restore.py, as for any container); CRIU holds each at the end of its restore,
processes rebuilt and network still locked (_criu/restore_barrier.py), until every member got there; then all resume.
When one member's restore fails before that, the others are released with an error: CRIU kills what it rebuilt, so
no member ran, and each keeps its checkpoint for another attempt."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import results as results_mod
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Inspect, Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import (
    OpError,
    daemon_gone,
    message_of,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.restore_barrier import RestoreBarrier
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import fleet_barrier
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.fleet_barrier import FleetBarrier

Group = Dict[str, Any]
HELD_AT_MOST = 120  # seconds a member waits, restored and held, for the others (then its restore fails)


def _refuse(refs: list[str], why: str) -> list[Result]:
    return [results_mod.failure(ref, f"not restored: {why}; nothing was touched") for ref in refs]


def _fleet_go(barrier: FleetBarrier, group: Group) -> str:
    """Every member here is restored and held: say so, and wait for the other hosts' parts."""
    arrived = time.monotonic()
    barrier.arrive("ready", members=group["members"])
    outcome = barrier.wait()
    group["barrier"] = outcome
    group["barrier_waited_seconds"] = round(time.monotonic() - arrived, 3)
    return outcome


def _missing_members(ctx: HostContext, found: dict[str, Inspect], name: str) -> list[str]:
    """Members of the recorded group (consistent=true checkpoints) that this call does not restore and that are not
    running either (a member restored already, by an earlier run that failed for another, is not missing)."""
    selected = {inspect["Id"] for inspect in found.values()}
    missing: list[str] = []
    for inspect in found.values():
        metadata = store.read_metadata(store.checkpoint_dir(ctx.root_dir, inspect["Id"], name))
        recorded = metadata.get("group") or {}
        for cid, member in zip(recorded.get("ids") or [], recorded.get("members") or []):
            if cid in selected or member in missing:
                continue
            try:
                if ((ctx.api.get(f"/containers/{cid}/json") or {}).get("State") or {}).get("Running"):
                    continue
            except DockerAPIError:
                pass  # gone: missing
            missing.append(member)
    return missing


def restored_group(ctx: HostContext, refs: list[str], opts: restore.RestoreOptions,
                   held_at_most: Optional[float] = None,
                   barrier: Optional[FleetBarrier] = None) -> tuple[List[Result], Group]:
    """Restore `refs` from checkpoint opts.name as one group; a result per member, in order, and the group's answer.
    With `barrier`, the group is one host's part of a group across hosts: its members are let run only when every
    host's part is restored and held."""
    if barrier is not None and not ctx.check_mode:
        barrier.prepare()
        try:
            return _restored_group(ctx, refs, opts, held_at_most, barrier)
        finally:
            barrier.end()
    return _restored_group(ctx, refs, opts, held_at_most, None)


def _restored_group(ctx: HostContext, refs: list[str], opts: restore.RestoreOptions, held_at_most: Optional[float],
                    barrier: Optional[FleetBarrier]) -> tuple[List[Result], Group]:
    group: Group = {"members": list(refs), "consistent": True}
    if not refs:
        return [], group  # nothing to restore (a host manifest whose group was undone)
    found: dict[str, Inspect] = {}
    for ref in refs:
        try:
            found[ref] = container.settled(ctx, container.inspect(ctx, ref))
        except OpError as exc:
            return _refuse(refs, f"{ref}: {exc}"), group
    group["members"] = [(found[ref].get("Name") or ref).lstrip("/") for ref in refs]
    lacking = [ref for ref in refs
               if not os.path.isdir(store.checkpoint_dir(ctx.root_dir, found[ref]["Id"], opts.name))]
    if lacking:
        return _refuse(refs, f"{', '.join(lacking)} {'has' if len(lacking) == 1 else 'have'} no checkpoint "
                             f"{opts.name!r}: a group is restored together or not at all"), group
    missing = _missing_members(ctx, found, opts.name)
    if missing:
        return _refuse(refs, f"checkpoint {opts.name!r} was made as one group with {', '.join(missing)}, which "
                             "this call does not restore: select the whole group (or restore without "
                             "consistent=true)"), group
    running = [ref for ref in refs if (found[ref].get("State") or {}).get("Running")]
    if running and not opts.force:
        if len(running) == len(refs):  # all running: each says whether it runs from this checkpoint (unchanged)
            return [restore.restored(ctx, ref, opts) for ref in refs], group
        return _refuse(refs, f"{', '.join(running)} {'is' if len(running) == 1 else 'are'} running and the others "
                             "are not: a group is restored together. Stop them, or use force=true to restore every "
                             "member from the checkpoint"), group
    if ctx.check_mode:
        return [restore.restored(ctx, ref, opts) for ref in refs], group
    held = held_at_most or min(HELD_AT_MOST, opts.timeout)
    if barrier is not None:
        held += barrier.timeout
    return _together(ctx, refs, found, opts, held, group, barrier), group


def _together(ctx: HostContext, refs: list[str], found: dict[str, Inspect], opts: restore.RestoreOptions,
              held_at_most: float, group: Group, barrier: Optional[FleetBarrier] = None) -> List[Result]:
    ids = {ref: found[ref]["Id"] for ref in refs}
    outcomes: dict[str, Result] = {}
    started = time.monotonic()

    def member(ref: str) -> None:
        try:
            outcomes[ref] = restore.restored(ctx, ref, opts)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            partial = exc.partial if isinstance(exc, OpError) else None
            outcomes[ref] = results_mod.failure(ref, message_of(exc), partial)
            if daemon_gone(exc):
                outcomes[ref]["daemon_unavailable"] = True  # no conclusion about the checkpoint: no fallback

    released = None
    aborted_for: list[str] = []
    with RestoreBarrier(ids.values(), held_at_most) as held:
        with ThreadPoolExecutor(max_workers=len(refs)) as pool:
            futures = {ref: pool.submit(member, ref) for ref in refs}
            deadline = time.monotonic() + opts.timeout + held_at_most  # the restores themselves, then the wait
            while released is None and not aborted_for:
                # A member restored without being held (its restore did not read runc.conf) runs already: holding
                # the others would only widen the gap, so it counts as arrived, and is named.
                unheld = {ids[ref] for ref, future in futures.items()
                          if future.done() and not (outcomes.get(ref) or {}).get("failed")}
                if held.ready() | unheld == set(ids.values()):
                    if unheld:
                        group["not_held"] = sorted(ref for ref in refs if ids[ref] in unheld)
                    outcome = _fleet_go(barrier, group) if barrier is not None else fleet_barrier.GO
                    if outcome == fleet_barrier.GO:
                        held.go()
                        released = time.monotonic()
                        break
                    held.abort()
                    aborted_for = [fleet_barrier.explain(outcome, barrier.timeout, barrier.reason())
                                   if barrier else outcome]
                    break
                aborted_for = [ref for ref, future in futures.items()
                               if future.done() and (outcomes.get(ref) or {}).get("failed")]
                if aborted_for or time.monotonic() > deadline:
                    held.abort()
                    aborted_for = aborted_for or [
                        f"not every member was restored within {round(deadline - started)}s"]
                    break
                time.sleep(0.01)
    results = [outcomes.get(ref) or results_mod.failure(ref, "no result") for ref in refs]
    if released is not None:
        group["held_seconds"] = round(released - started, 3)
        for ref, result in zip(refs, results):
            if not result.get("failed"):
                result["group"] = {"members": group["members"], "released_after_seconds": group["held_seconds"]}
            if ref in group.get("not_held", []):
                result["warnings"].append(f"{result['container']} ran as soon as it was restored, before the other "
                                          "members (its restore did not read /etc/criu/runc.conf: a CRIU "
                                          "configuration of its own?)")
        return results
    group["aborted"] = True
    why = ", ".join(aborted_for)
    if aborted_for and aborted_for[0] not in refs:  # the fleet's barrier, or the deadline: no member to blame
        for result in results:
            result["msg"] = (f"not restored: {why}; no member ran (CRIU killed what it had rebuilt) "
                             f"({result.get('msg', 'restored')})")
            result.update(failed=True, action="failed")
        return results
    for ref, result in zip(refs, results):
        if result.get("failed") and ref not in aborted_for:
            result["msg"] = (f"not restored: the group's restore was stopped before any member ran, because "
                             f"{why} could not be restored ({result['msg']})")
    return results
