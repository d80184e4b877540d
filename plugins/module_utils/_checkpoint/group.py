# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint consistent=true: the selected containers as one group (group_dump.py checkpoints them at one
instant, group_restore.py restores them together)."""

from __future__ import annotations

from typing import Any, List, Mapping, Tuple

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.options import (
    dump_options_of,
    receive_options_of,
    restore_options_of,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.fleet_barrier import FleetBarrier


def run_group(ctx: HostContext, params: Mapping[str, Any], name: str,
              refs: List[str]) -> Tuple[List[Result], dict[str, Any]]:
    """A result per member, in order, and the answer's `group` (with barrier_dir: this host's part of a group across
    hosts, see _host/fleet_barrier.py; with send_to or receive_timeout: the two ends of a group moved together)."""
    barrier = FleetBarrier(params["barrier_dir"], params["barrier_timeout"]) if params.get("barrier_dir") else None
    if params["state"] == "present":
        if params.get("send_to"):
            return group_send.present_group_and_send(ctx, refs, dump_options_of(params, name), params["send_to"],
                                                     workers=params["parallel"], barrier=barrier)
        return group_dump.present_group(ctx, refs, dump_options_of(params, name), workers=params["parallel"],
                                        barrier=barrier)
    receiving = receive_options_of(params, name)
    if receiving is not None:
        return group_receive.received_group(ctx, refs, restore_options_of(params, name, receiving=receiving))
    return group_restore.restored_group(ctx, refs, restore_options_of(params, name), barrier=barrier)
