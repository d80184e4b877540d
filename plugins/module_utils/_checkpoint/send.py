# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sending end of a streamed checkpoint (state=present with send_to, see stream.py): connect to the target and
see its restore waiting before the container is touched, make the checkpoint (dump.py), stream it over SSH."""

from __future__ import annotations

import os
import time
from typing import Any, Collection, Mapping, Union

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_walk
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import relayed_send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Inspect, Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError, carrying
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.export import portable_manifest
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import ArchiveError, file_inventory
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import build as build_manifest
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.private_files import ensure_private_dir

SendTo = Mapping[str, Any]  # the module's send_to: via, host, user, port, directory, known_hosts_file, ... ready_timeout
Sender = Union[stream.Sender, relayed_send.SocketSender]


def _relayed(send_to: SendTo) -> bool:
    return send_to.get("via") == "relay"


def remote(send_to: SendTo, container_name: str, name: str) -> tuple[str, str]:
    """The FIFO's path on the target (the socket's path here with via=relay), and where it goes in words."""
    if _relayed(send_to):
        local = os.path.join(send_to["directory"], relayed_send.socket_name(container_name, name))
        return local, f"the controller's relay (at {local})"
    remote = os.path.join(send_to["directory"], stream.stream_name(container_name, name))
    return remote, f"{send_to.get('user') or 'root'}@{send_to['host']}:{remote}"


def connect(send_to: SendTo, result: Result, name: str, made: bool = False) -> Sender:
    """Connect to the target (or wait for the controller's relay to connect here) and wait until its restore is seen
    waiting (before the dump: a target that is not ready stops the operation with nothing changed)."""
    path, where = remote(send_to, result["container"], name)
    sender: Sender
    try:
        if _relayed(send_to):
            ensure_private_dir(send_to["directory"])
            sender = relayed_send.SocketSender(path)
        else:
            sender = stream.Sender(stream.ssh_argv(send_to, path))
        sender.wait_ready(send_to.get("ready_timeout") or 30)
    except (stream.StreamError, OSError) as exc:
        raise OpError(f"{where} is not ready to receive {name!r} of {result['container']}, so "
                      + ("it was not sent" if made else "nothing was checkpointed and the container was not touched")
                      + f": {str(exc).rstrip('.')}. Start the receiving restore there first (state=restored with "
                      "receive_timeout), and "
                      + ("then the controller's relay (fleet.checkpoint.stream_relay)" if _relayed(send_to)
                         else "check that this host can log in to it over SSH")) from exc
    return sender


def disk_trees(ctx: HostContext, found: Inspect, send_to: SendTo, leave_running: bool,
               together: Collection[str] = ()) -> list[disk_walk.Tree]:
    """The disk state that travels with the checkpoint (send_to.writable_layer, send_to.volumes); OpError before
    anything is touched when it cannot. `together`: the ids of a group's members, which stop with this one."""
    trees = disk_walk.plan(ctx.api, found, bool(send_to.get("writable_layer")), send_to.get("volumes") or "none",
                           together)
    if trees and leave_running:
        raise OpError(f"{(found.get('Name') or '').lstrip('/')} would keep running while its disk state is copied: "
                      "disk state travels only with a checkpoint that stops the container. Use leave_running=false, "
                      "or writable_layer=false and volumes=none to send the memory alone")
    return trees


def present_and_send(ctx: HostContext, ref: str, opts: dump.DumpOptions, send_to: SendTo) -> Result:
    """state=present with send_to: the checkpoint made (or found), then sent."""
    result, planned = dump.plan(ctx, ref, opts)
    sender = None
    with carrying(result):
        trees = disk_trees(ctx, planned.inspect if planned else container.inspect(ctx, result["id"]), send_to,
                           opts.leave_running and planned is not None)
    precopied = None
    if planned is not None and not ctx.check_mode:
        # Connected, and the target's restore seen waiting, before the container is touched.
        with carrying(result):
            sender = connect(send_to, result, opts.name)
        try:
            if trees and send_to.get("precopy", True):
                with carrying(result):
                    precopied = precopy(ctx, planned, opts.name, trees, sender, opts.timeout)
            result = dump.execute(ctx, planned, opts)
        except BaseException:
            sender.abort()
            raise
    with carrying(result):
        send_checkpoint(ctx, result, opts.name, send_to, opts.timeout, sender, trees, precopied)
    return result


PRECOPY_MIN_BYTES = 1024 * 1024


def precopy(ctx: HostContext, planned: dump.DumpPlan, name: str, trees: list[disk_walk.Tree], sender: Sender,
            timeout: int) -> tuple[disk_walk.DiskState, dict[str, Any]] | None:
    """The first of two passes, while the container still runs: the disk state's files as they are now, sent ahead
    on the same connection (the final pass, during the freeze, sends only what changed since); None when there is
    less than PRECOPY_MIN_BYTES of it."""
    try:
        state = disk_walk.collect(trees, precopy=True, mapped=disk_walk.shared_writable_inodes(
            container.host_pids(ctx, planned.inspect["Id"])))
    except disk_walk.DiskStateError as exc:
        raise OpError(f"the disk state of {planned.result['container']} cannot be read, so nothing was "
                      f"checkpointed and the container was not touched: {exc}") from exc
    if state.size - state.files[disk_walk.INDEX_MEMBER]["size"] < PRECOPY_MIN_BYTES:
        return None  # too little to be worth a pass of its own: all of it goes with the checkpoint
    ahead = build_manifest(name, planned.inspect, {}, ctx.versions, planned.method, time.time())
    ahead["phase"] = "precopy"
    ahead["disk"] = state.manifest_section(_volume_labels(trees), any(tree.kind == "rootfs" for tree in trees))
    try:
        sent = sender.send_more(ahead, state.sources, timeout)
    except stream.StreamError as exc:
        raise OpError(f"sending the disk state of {planned.result['container']} ahead failed, so nothing was "
                      f"checkpointed and the container was not touched: {exc}") from exc
    return state, dict(sent, entries=state.entries, walk_seconds=state.seconds, files_bytes=state.size)


def _volume_labels(trees: list[disk_walk.Tree]) -> dict[str, dict[str, str]]:
    return {tree.name: tree.labels for tree in trees if tree.kind == "volume"}


def send_checkpoint(ctx: HostContext, result: Result, name: str, send_to: SendTo, timeout: int,
                    sender: Sender | None = None, trees: list[disk_walk.Tree] | None = None,
                    precopied: tuple[disk_walk.DiskState, dict[str, Any]] | None = None,
                    volumes_from: Mapping[str, str] | None = None) -> None:
    """Send the checkpoint that state=present just made (or found) to send_to, with the disk state of `trees`;
    fills result['sent']. `volumes_from`: the volumes it mounts that another member of its group carries (the
    receive makes its container only once they are there)."""
    where = remote(send_to, result["container"], name)[1]
    if result["action"] == "unchanged" and container.is_running(ctx, container.inspect(ctx, result["id"])):
        raise OpError(f"container {result['container']} is running and already has a checkpoint {name!r}: sending "
                      "that older state would start a second copy on the target while this one runs. Use force=true "
                      "to make a new checkpoint (it stops the container), or another name")
    result["changed"] = True
    if result["action"] == "unchanged":
        result["action"] = "sent"
    if ctx.check_mode:
        result["sent"] = {"to": where}
        return
    path = result["path"]
    metadata = store.read_metadata(path)
    files = metadata.get("files")
    disk = None
    try:
        if not files:  # a checkpoint made by Docker itself, without our metadata: inventory it now
            files = file_inventory(path)
        found = container.inspect(ctx, result["id"])
        manifest = portable_manifest(ctx, name, found, path, metadata, files)
        if volumes_from:
            manifest["volumes_from"] = dict(volumes_from)
        if trees:
            if container.is_running(ctx, found):
                raise disk_walk.DiskStateError("the container runs again: its disk state would change as it is read")
            disk = disk_walk.collect(trees, previous=precopied[0] if precopied else None)
            manifest["disk"] = disk.manifest_section(_volume_labels(trees),
                                                     any(tree.kind == "rootfs" for tree in trees))
    except (ArchiveError, disk_walk.DiskStateError, OSError, ValueError) as exc:
        if sender:
            sender.abort()
        result["modified"] = result.get("stopped", False) or result.get("modified", False)
        raise OpError(f"checkpoint {name!r} of {result['container']} at {path} cannot be sent: {exc}") from exc
    sender = sender or connect(send_to, result, name, made=True)
    try:
        sent = sender.send(path, manifest, timeout, disk.sources if disk else None)
    except stream.StreamError as exc:
        result["modified"] = result.get("stopped", False) or result.get("modified", False)
        raise OpError(f"checkpoint {name!r} of {result['container']} was made at {path}"
                      + (" and the container is stopped" if result.get("stopped") else "")
                      + f", but sending it to {where} failed: {str(exc).rstrip('.')}. Restore it here with "
                      "state=restored, or send it again once a restore waits there") from exc
    result["sent"] = dict(sent, to=where)
    if disk:
        result["sent"]["disk"] = {"entries": disk.entries, "bytes": disk.size, "walk_seconds": disk.seconds,
                                  "unchanged_files": disk.unchanged,
                                  "trees": [tree.name or "writable layer" for tree in trees or []]}
        if precopied:
            result["sent"]["disk"]["precopy"] = precopied[1]
