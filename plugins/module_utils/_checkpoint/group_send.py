# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint consistent=true with send_to: a group checkpointed at one instant (group_dump.py, the members
stop with their dumps), then every member's checkpoint sent into the target's waiting receive (send.py), which
restores them together (group_receive.py).

Over SSH every member's connection is made, and the target's receive seen waiting, before any member is frozen (and
the disk state pre-copied on it while the members run); the checkpoints go once the whole group is dumped, all at
once. Through the controller's relay (via=relay) the relay takes one stream after the other, so the group is dumped
first and each checkpoint waits for its turn."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import threading
from typing import Any, Dict, List, Optional, Set

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import results as results_mod
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Inspect, Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError, carrying, message_of
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.fleet_barrier import FleetBarrier


class _Links:
    """Each member's connection to the target, disk trees and disk pre-copy, by container name; the volumes it
    mounts that another member carries ({volume: carrier}: its send begins once the carriers' have ended, and its
    stream names them, so that the target makes its container only once they are there)."""

    def __init__(self) -> None:
        self.senders: Dict[str, send.Sender] = {}
        self.trees: Dict[str, list] = {}
        self.precopied: Dict[str, Any] = {}
        self.volumes_from: Dict[str, Dict[str, str]] = {}

    def after(self, name: str) -> Set[str]:
        return set((self.volumes_from.get(name) or {}).values())

    def plan_disk(self, ctx: HostContext, members: List[tuple[str, Inspect]], send_to: send.SendTo) -> None:
        """Every member's disk trees (OpError naming what cannot travel); a volume several members share travels
        once, with the first of them (in the group's order, which is also the relay's)."""
        together = [inspect["Id"] for unused, inspect in members]
        carriers: Dict[str, str] = {}
        for name, inspect in members:
            if name not in self.trees:
                self.trees[name] = send.disk_trees(ctx, inspect, send_to, False, together)
            kept = []
            for tree in self.trees[name]:
                carrier = carriers.setdefault(tree.name, name) if tree.kind == "volume" else name
                if carrier == name:
                    kept.append(tree)
                else:
                    self.volumes_from.setdefault(name, {})[tree.name] = carrier
            self.trees[name] = kept

    def abort(self) -> None:
        for sender in self.senders.values():
            sender.abort()
        self.senders.clear()


def present_group_and_send(ctx: HostContext, refs: List[str], opts: dump.DumpOptions, send_to: send.SendTo,
                           workers: Optional[int] = None,
                           barrier: Optional[FleetBarrier] = None) -> tuple[List[Result], group_dump.Group]:
    """Checkpoint `refs` as one group and send each checkpoint to send_to; a result per member, in order, and the
    group's answer. With `barrier`, this host's members are one part of a group moved from several hosts: once
    connected and frozen they wait there for the other hosts' parts (group_dump.py); an abort thaws them and aborts
    their streams, so that the target's receive of the whole group fails and restores nothing."""
    links = _Links()
    relayed = send_to.get("via") == "relay"

    def prepare(plans: List[dump.DumpPlan]) -> None:
        try:
            # Every member's disk state can travel, before any connection is made.
            links.plan_disk(ctx, [(planned.result["container"], planned.inspect) for planned in plans], send_to)
            if relayed:
                return  # the relay connects to one member after the other: each waits for its turn once dumped
            for planned in plans:
                name = planned.result["container"]
                links.senders[name] = send.connect(send_to, planned.result, opts.name)
            for planned in plans:
                name = planned.result["container"]
                # Not for a member that mounts a volume another carries: its first bytes would make its container
                # on the target, which must wait for that volume (all of its disk state goes with its checkpoint).
                if links.trees[name] and send_to.get("precopy", True) and not links.after(name):
                    links.precopied[name] = send.precopy(ctx, planned, opts.name, links.trees[name],
                                                         links.senders[name], opts.timeout)
        except BaseException:
            links.abort()
            raise

    try:
        # Through the relay only the sends go one at a time (parallel=1, as the relay takes them): the dumps, all
        # members frozen, go at once.
        results, group = group_dump.present_group(ctx, refs, opts, None if relayed else workers, barrier=barrier,
                                                  prepare=prepare)
    except BaseException:
        links.abort()
        raise
    if any(result.get("failed") for result in results):
        links.abort()  # refused or undone: every member runs as before, nothing is sent
        return results, group
    if group.get("frozen_at") is not None:
        for result in results:  # a member's downtime begins with the group's first freeze, before its own dump
            result["frozen_at"] = round(group["frozen_at"] - (group.get("freeze_seconds") or 0), 3)
    sent = _send_all(ctx, results, opts, send_to, links, 1 if relayed else (workers or len(results)))
    return sent, group


def _send_all(ctx: HostContext, results: List[Result], opts: dump.DumpOptions, send_to: send.SendTo, links: _Links,
              workers: int) -> List[Result]:
    """Send every member's checkpoint (made just now, or found: the whole group had it already). A member that
    shares a volume another carries is sent once that one's send has ended."""
    try:
        links.plan_disk(ctx, [(result["container"], container.inspect(ctx, result["id"])) for result in results],
                        send_to)
    except OpError as exc:
        links.abort()
        return [_failed(result, f"not sent: {message_of(exc)}") for result in results]
    ended = {result["container"]: threading.Event() for result in results}

    def one(result: Result) -> Result:
        name = result["container"]
        try:
            return _one(result)
        finally:
            ended[name].set()

    def _one(result: Result) -> Result:
        name = result["container"]
        sender = links.senders.pop(name, None)
        try:
            with carrying(result):
                for carrier in sorted(links.after(name)):
                    if not ended[carrier].wait(opts.timeout):
                        raise OpError(f"not sent: {carrier}, which carries a volume {name} shares, was not sent "
                                      f"within {opts.timeout}s")
                if sender is None and not ctx.check_mode and send_to.get("via") == "relay":
                    # Met first, so that whatever fails below ends the relay's turn at once (an aborted stream)
                    # rather than leaving the relay waiting for this member until its connect_timeout.
                    sender = send.connect(send_to, result, opts.name, made=True)
                send.send_checkpoint(ctx, result, opts.name, send_to, opts.timeout, sender, links.trees[name],
                                     links.precopied.get(name), links.volumes_from.get(name))
            return result
        except OpError as exc:
            if sender is not None:
                sender.abort()  # the far side stops waiting (again: an abort is idempotent)
            return _failed(result, message_of(exc))

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(results)))) as pool:
        sent = list(pool.map(one, results))
    links.abort()  # none is left when every send took its own
    return sent


def _failed(result: Result, message: str) -> Result:
    """A member checkpointed with the group (stopped by its dump, unless leave_running) that was not sent."""
    partial = dict(result, modified=bool(result.get("stopped") or result.get("modified")))
    failed = results_mod.failure(result["container"], message, partial)
    failed["msg"] += (" (the group's other checkpoints were made at the same instant: restore the group here "
                      "together with consistent=true)")
    return failed
