# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint consistent=true, state=present: several containers checkpointed at one instant.

Every member is planned first (nothing touched; one refusal refuses the group). Then all are frozen at once (Docker's
pause: their cgroups' freezer), then dumped - all at once, each by CRIU from its frozen state - and only when every dump is
done are they thawed together (leave_running) or, stopping, each ends with its dump while the others are still frozen.
No member runs between the first freeze and the last dump, so every checkpoint shows the same instant: a message one
has sent and the other not yet received is in the sender's socket queue or the receiver's, never lost in between.

A dump that fails undoes the group: the members already dumped with exit are restored from the checkpoint just made
(the same instant the others are frozen at), everyone is thawed, and the group's checkpoints are removed."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import remove
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import results as results_mod
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError, message_of
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import fleet_barrier
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.fleet_barrier import FleetBarrier

Group = Dict[str, Any]  # the answer's `group`: its members, its timings, whether it was undone
Prepare = Callable[[List[dump.DumpPlan]], None]  # run once every member is planned, before any is frozen


def _fail_all(refs: list[str], found: dict[str, Result], why: str) -> list[Result]:
    """Every member's result when the group is refused before anything was touched."""
    return [found.get(ref) or results_mod.failure(ref, f"not checkpointed: {why}") for ref in refs]


def present_group(ctx: HostContext, refs: list[str], opts: dump.DumpOptions, workers: Optional[int] = None,
                  barrier: Optional[FleetBarrier] = None,
                  prepare: Optional[Prepare] = None) -> tuple[List[Result], Group]:
    """Checkpoint `refs` as one group; a result per member, in order, and the group's answer. With `barrier`, the
    group is one host's part of a group across hosts: once frozen it waits there for every other host's part.
    `prepare` (not in check mode) gets the members' plans before any is frozen; an OpError from it refuses the
    group with nothing touched. With both, the part says `prepared` once `prepare` is done and freezes only when
    the playbook says `freeze` (fleet_barrier.py)."""
    if barrier is not None and not ctx.check_mode:
        barrier.prepare()
        try:
            return _present_group(ctx, refs, opts, workers, barrier, prepare)
        finally:
            barrier.end()
    return _present_group(ctx, refs, opts, workers, None, prepare)


def _present_group(ctx: HostContext, refs: list[str], opts: dump.DumpOptions, workers: Optional[int],
                   barrier: Optional[FleetBarrier], prepare: Optional[Prepare]) -> tuple[List[Result], Group]:
    group: Group = {"members": [], "consistent": True}
    plans: list[dump.DumpPlan] = []
    refused: dict[str, Result] = {}
    made_already: list[Result] = []
    for ref in refs:
        try:
            result, planned = dump.plan(ctx, ref, opts)
        except OpError as exc:
            refused[ref] = results_mod.failure(ref, message_of(exc), exc.partial)
            continue
        group["members"].append(result["container"])
        if planned is None:
            made_already.append(result)
        else:
            plans.append(planned)
    if refused:
        why = "; ".join(f"{result['container']}: {result['msg']}" for result in refused.values())
        return _fail_all(refs, refused, f"the group was refused, nothing was touched ({why})"), group
    if made_already and plans:
        have = ", ".join(result["container"] for result in made_already)
        lack = ", ".join(planned.result["container"] for planned in plans)
        why = (f"{have} already {'has' if len(made_already) == 1 else 'have'} checkpoint {opts.name!r} and {lack} "
               f"{'does' if len(plans) == 1 else 'do'} not: a group's checkpoints are made together. Use force=true "
               "to make them all again, or another name; nothing was touched")
        return _fail_all(refs, {}, why), group
    if not plans:
        return made_already, group  # the whole group has it: nothing to do
    if ctx.check_mode:
        return [planned.result for planned in plans], group
    if prepare is not None:
        try:
            prepare(plans)
        except OpError as exc:
            return _fail_all(refs, {}, f"the group was refused, nothing was touched ({message_of(exc)})"), group
        if barrier is not None:  # moved from several hosts: none freezes before every host is prepared
            barrier.arrive("prepared", members=group["members"])
            # The others may still be pre-copying their disk state (as long as a transfer may take): nothing is
            # frozen while this waits, so it waits that long.
            outcome = barrier.wait(fleet_barrier.FREEZE, timeout=max(barrier.timeout, opts.timeout))
            if outcome != fleet_barrier.GO:
                group["barrier"] = outcome
                why = f"{fleet_barrier.explain(outcome, barrier.timeout, barrier.reason())}; nothing was frozen"
                return _fail_all(refs, {}, why), group
    ids = [planned.inspect["Id"] for planned in plans]
    record = {"members": group["members"], "ids": ids, "at": round(time.time(), 3)}
    member_opts = dataclasses.replace(opts, group=record, keep_replaced=True)
    return _run(ctx, plans, member_opts, workers or len(plans), group, barrier)


def _freeze(ctx: HostContext, ids: list[str]) -> list[tuple[str, DockerAPIError]]:
    """Pause every member at once (Docker's pause returns once the cgroup is frozen: one after the other, the first
    would wait frozen for every other's round trip); those that would not, with why."""
    def pause(cid: str) -> Optional[DockerAPIError]:
        try:
            ctx.api.post(f"/containers/{cid}/pause")
        except DockerAPIError as exc:
            return exc
        return None

    with ThreadPoolExecutor(max_workers=len(ids)) as pool:
        errors = list(pool.map(pause, ids))
    return [(cid, exc) for cid, exc in zip(ids, errors) if exc is not None]


def _thaw(ctx: HostContext, ids: list[str]) -> list[str]:
    """Unpause every container of `ids` Docker says is paused; the ones that would not (with why)."""
    problems = []
    for cid in ids:
        try:
            state = (ctx.api.get(f"/containers/{cid}/json") or {}).get("State") or {}
            if state.get("Paused"):
                ctx.api.post(f"/containers/{cid}/unpause")
        except DockerAPIError as exc:
            problems.append(f"{cid[:12]}: {exc}")
    return problems


def _run(ctx: HostContext, plans: list[dump.DumpPlan], opts: dump.DumpOptions, workers: int,
         group: Group, barrier: Optional[FleetBarrier] = None) -> tuple[List[Result], Group]:
    ids = [planned.inspect["Id"] for planned in plans]
    first = time.monotonic()
    refused = _freeze(ctx, ids) if ids else []
    if refused:
        # Thawed: what this froze, and what may have frozen all the same (a pause that timed out). Not a member Docker
        # refused (409: paused already, by someone else, or not running).
        kept = {cid for cid, exc in refused if exc.status == 409}
        problems = _thaw(ctx, [cid for cid in ids if cid not in kept])
        names = ", ".join(f"{plans[ids.index(cid)].result['container']} ({exc})" for cid, exc in refused)
        why = f"could not be frozen: {names}; the others were thawed, nothing was checkpointed"
        if problems:
            why += f" (but could not thaw {', '.join(problems)})"
        return _fail_all([planned.result["container"] for planned in plans], {}, why), group
    all_frozen = time.monotonic()
    try:
        return _frozen(ctx, plans, opts, workers, group, barrier, first, all_frozen)
    except BaseException:
        _thaw(ctx, ids)  # nothing that went wrong here may leave a member frozen
        raise


def _frozen(ctx: HostContext, plans: list[dump.DumpPlan], opts: dump.DumpOptions, workers: int, group: Group,
            barrier: Optional[FleetBarrier], first: float, all_frozen: float) -> tuple[List[Result], Group]:
    """Every member is frozen: meet the other hosts (barrier), dump all, thaw together."""
    ids = [planned.inspect["Id"] for planned in plans]
    group["frozen_at"] = round(time.time(), 3)
    if barrier is not None:
        barrier.arrive("frozen", members=group["members"])
        outcome = barrier.wait()
        group["barrier_waited_seconds"] = round(time.monotonic() - all_frozen, 3)
        if outcome != fleet_barrier.GO:
            problems = _thaw(ctx, ids)
            why = (f"{fleet_barrier.explain(outcome, barrier.timeout, barrier.reason())}; thawed, nothing was "
                   "checkpointed")
            if problems:
                why += f" (but could not thaw {', '.join(problems)})"
            group["barrier"] = outcome
            return _fail_all([planned.result["container"] for planned in plans], {}, why), group
        group["barrier"] = outcome
    done = [threading.Event() for index in range(len(plans))]
    dumped = [False] * len(plans)
    outcomes: list[Optional[Result]] = [None] * len(plans)

    def member(index: int) -> None:
        def said_dumped() -> None:
            dumped[index] = True
            done[index].set()
        try:
            outcomes[index] = dump.execute(ctx, plans[index], opts, dumped=said_dumped)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            partial = exc.partial if isinstance(exc, OpError) else None
            outcomes[index] = results_mod.failure(plans[index].result["container"], message_of(exc), partial)
        finally:
            done[index].set()

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(plans)))) as pool:
        for index in range(len(plans)):
            pool.submit(member, index)
        for event in done:
            event.wait()  # every dump done (CRIU's part), before the checkpoints are recorded
        last_dump = time.monotonic()
        ok = all(dumped)
        if ok and opts.leave_running:
            problems = _thaw(ctx, ids)
            if problems:
                group["thaw_problems"] = problems
        thawed = time.monotonic()
    group.update(frozen_seconds=round(last_dump - first, 3), freeze_seconds=round(all_frozen - first, 3),
                 thawed_after_seconds=round(thawed - first, 3) if opts.leave_running else None)
    results: list[Result] = [outcome or results_mod.failure(planned.result["container"], "no result")
                             for outcome, planned in zip(outcomes, plans)]
    if ok and not any(result.get("failed") for result in results):
        for planned, result in zip(plans, results):
            result["group"] = {"members": group["members"], "frozen_seconds": group["frozen_seconds"]}
            if planned.replaced:
                shutil.rmtree(planned.replaced, ignore_errors=True)  # the group's new checkpoints all exist
        return results, group
    return _undo(ctx, plans, opts, results, dumped, group), group


def _undo(ctx: HostContext, plans: list[dump.DumpPlan], opts: dump.DumpOptions, results: list[Result],
          dumped: list[bool], group: Group) -> list[Result]:
    """A member's dump failed: the group has no consistent checkpoint. The members dumped with exit are restored
    from theirs (the instant the others are still frozen at), everyone is thawed, the group's checkpoints removed."""
    failed = [result["container"] for result in results if result.get("failed")]
    group["undone"] = True
    brought_back: list[str] = []
    for planned, result, made in zip(plans, results, dumped):
        if not made or result.get("failed"):
            continue
        ref = planned.inspect["Id"]
        if not opts.leave_running:
            try:
                restore.restored(ctx, ref, restore.RestoreOptions(opts.name, timeout=opts.timeout))
                brought_back.append(result["container"])
            except Exception as exc:  # pylint: disable=broad-exception-caught
                result.update(failed=True, action="failed", changed=True,
                              msg=f"the group's checkpoint failed ({', '.join(failed)}) and this container, "
                                  f"stopped by its dump, could not be restored from it: {message_of(exc)}. Its "
                                  f"checkpoint {opts.name!r} is kept: restore it with state=restored")
                continue
        _drop(ctx, planned, opts.name, result)
    problems = _thaw(ctx, [planned.inspect["Id"] for planned in plans])
    for result in results:
        if result.get("failed"):
            continue
        result.update(failed=True, action="failed", changed=False,
                      msg=f"not checkpointed: the group's checkpoint failed ({', '.join(failed)}), so it was "
                          "undone" + (" (restored from the group's instant, the others thawed: running as before)"
                                      if result["container"] in brought_back else " (thawed: running as before)"))
    if problems:
        group["thaw_problems"] = problems
    return results


def _drop(ctx: HostContext, planned: dump.DumpPlan, name: str, result: Result) -> None:
    """Remove the group's new checkpoint of this member, and put back the one it replaced (force)."""
    try:
        remove.absent(ctx, planned.inspect["Id"], name)
        if planned.replaced and os.path.isdir(planned.replaced):
            os.rename(planned.replaced, planned.path)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        result["warnings"].append(f"the group's checkpoint {name!r} of {result['container']} could not be removed: "
                                  f"{message_of(exc)}")
