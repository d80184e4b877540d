# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint's two ends of a streamed checkpoint (see _checkpoint_stream): state=present with send_to sends the
checkpoint it made (or found) to a receiver on another host; state=restored with receive_timeout receives one there,
creates the container from its manifest if asked to, and the restore goes on as from an imported archive."""

from __future__ import annotations

import os
import shutil
import time

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store as store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream as stream
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import ArchiveError, file_inventory
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import PreflightError, check_free_space
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import ManifestError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError

MARGIN = 64 * 1024 * 1024  # free space kept beyond the received checkpoint


def _remote(ops, container):
    """The FIFO's path on the target, and user@host:path in words."""
    send_to = ops.opts["send_to"]
    remote = os.path.join(send_to["directory"], stream.stream_name(container, ops.name))
    return remote, f"{send_to.get('user') or 'root'}@{send_to['host']}:{remote}"


def connect(ops, result, made=False):
    """Connect to the target and wait until its restore is seen waiting (before the dump: a target that is not ready
    stops the operation with nothing changed)."""
    remote, where = _remote(ops, result["container"])
    try:
        sender = stream.Sender(stream.ssh_argv(ops.opts["send_to"], remote))
        sender.wait_ready(30)
    except stream.StreamError as exc:
        raise OpError(f"{where} is not ready to receive {ops.name!r} of {result['container']}, so "
                      + ("it was not sent" if made else "nothing was checkpointed and the container was not touched")
                      + f": {str(exc).rstrip('.')}. Start the receiving restore there first (state=restored with receive_timeout), "
                      "and check that this host can log in to it over SSH") from exc
    return sender


def send_checkpoint(ops, result, sender=None):
    """Send the checkpoint that state=present just made (or found) to send_to; fills result['sent']."""
    where = _remote(ops, result["container"])[1]
    if result["action"] == "unchanged" and (ops.settled(ops.inspect(result["id"])).get("State") or {}).get("Running"):
        raise OpError(f"container {result['container']} is running and already has a checkpoint {ops.name!r}: sending "
                      "that older state would start a second copy on the target while this one runs. Use force=true "
                      "to make a new checkpoint (it stops the container), or another name")
    result["changed"] = True
    if result["action"] == "unchanged":
        result["action"] = "sent"
    if ops.ctx.check_mode:
        result["sent"] = {"to": where}
        return
    path = result["path"]
    metadata = store.read_metadata(path)
    files = metadata.get("files")
    try:
        if not files:  # a checkpoint made by Docker itself, without our metadata: inventory it now
            files = file_inventory(path)
        manifest = ops.manifest(ops.inspect(result["id"]), path, metadata, files)
    except (ArchiveError, OSError, ValueError) as exc:
        if sender:
            sender.abort()
        raise OpError(f"checkpoint {ops.name!r} of {result['container']} at {path} cannot be sent: {exc}") from exc
    sender = sender or connect(ops, result, made=True)
    try:
        sent = sender.send(path, manifest, ops.opts["timeout"])
    except stream.StreamError as exc:
        result["modified"] = result.get("stopped", False) or result.get("modified", False)
        raise OpError(f"checkpoint {ops.name!r} of {result['container']} was made at {path}"
                      + (" and the container is stopped" if result.get("stopped") else "")
                      + f", but sending it to {where} failed: {str(exc).rstrip('.')}. Restore it here with state=restored, or send it "
                      "again once a restore waits there") from exc
    result["sent"] = dict(sent, to=where)


def _drop_created(ops, place):
    """Remove the container this receive created (from the manifest) when its checkpoint did not arrive whole."""
    if not place.get("created"):
        return False
    try:
        ops.api.delete(f"/containers/{place['inspect']['Id']}", force=1)
    except DockerAPIError:
        return False
    ops._local.created = False  # pylint: disable=protected-access
    return True


def predict_receive(ops, ref):
    """Check mode: what a receive would do (nothing is waited for)."""
    try:
        inspect = ops.inspect(ref)
    except OpError:
        if not ops.opts.get("create"):
            raise
        inspect = {"Id": "0" * 64, "Name": f"/{ref}", "State": {}}
        ops._local.created = True  # pylint: disable=protected-access
    result = ops._result(inspect)  # pylint: disable=protected-access
    _refuse_running(ops, inspect, result["container"])
    result.update(changed=True, action="restored",
                  msg=f"would wait up to {ops.opts['receive_timeout']}s for the checkpoint to arrive in "
                      f"{ops.opts['archive_dir']}, then restore it")
    return result


def _refuse_running(ops, inspect, name):
    if not ops.opts["force"] and (ops.settled(inspect).get("State") or {}).get("Running"):
        raise OpError(f"container {name} is running: a received checkpoint is restored into a stopped or new "
                      "container (stop it, or use force=true to stop it and restore)")


def receive_checkpoint(ops, ref):
    """Wait for the stream of checkpoint ops.name for container `ref`, create the container from the stream's
    manifest if needed (create=true), unpack and check the checkpoint beside its final place and install it.

    Returns {'inspect', 'bytes', 'seconds', 'waited_seconds', 'finished_at'}."""
    fifo_path = os.path.join(ops.opts["archive_dir"], stream.stream_name(ref, ops.name))
    store.ensure_private_dir(ops.opts["archive_dir"])
    begin = time.monotonic()
    place = {}

    def destination(manifest):
        # Called with the manifest, the stream's first entry: the rest is unpacked where it will stay.
        if manifest["checkpoint"] != ops.name:
            raise OpError(f"the stream at {fifo_path} holds checkpoint {manifest['checkpoint']!r}, not {ops.name!r}")
        try:
            check_free_space(ops.ctx.root_dir, sum(item["size"] for item in manifest["files"].values()) + MARGIN)
        except PreflightError as exc:
            raise OpError(str(exc).replace("for the dump", "for the received checkpoint")) from exc
        inspect = ops.inspect_or_create(ref, config=manifest["container"], origin=f"the stream at {fifo_path}")
        place["created"] = getattr(ops._local, "created", False)  # pylint: disable=protected-access
        place["inspect"] = inspect
        _refuse_running(ops, inspect, (inspect.get("Name") or ref).lstrip("/"))
        path = ops._path(inspect["Id"])  # pylint: disable=protected-access
        parent = os.path.dirname(path)
        place["created_parent"] = not os.path.isdir(parent)
        store.ensure_private_dir(parent)
        place["path"], place["tmp"] = path, os.path.join(parent, f".{ops.name}.fleet-import")
        shutil.rmtree(place["tmp"], ignore_errors=True)
        return place["tmp"]

    try:
        reader = stream.FifoReader(fifo_path)
    except OSError as exc:
        raise OpError(f"cannot wait for the checkpoint at {fifo_path}: {exc}") from exc
    done = False
    try:
        try:
            reader.wait(ops.opts["receive_timeout"])
            waited = time.monotonic() - begin
            manifest = stream.receive(reader, destination)
        except (stream.StreamError, ArchiveError, ManifestError, OSError) as exc:
            raise OpError(f"receiving checkpoint {ops.name!r} for {ref} failed, nothing was restored"
                          + (" and the container created for it was removed" if _drop_created(ops, place) else "")
                          + f": {exc}") from exc
        path = place["path"]
        if os.path.isdir(path) and store.read_metadata(path).get("files") != manifest["files"] \
                and not ops.opts["force"]:
            raise OpError(f"container {ref} already has a checkpoint {ops.name!r} that differs from the one received: "
                          "use force=true to replace it, or another name")
        ops.install(place["tmp"], manifest, path, f"stream at {fifo_path}")
        done = True
    finally:
        reader.close()
        if place.get("tmp"):
            shutil.rmtree(place["tmp"], ignore_errors=True)
            if place.get("created_parent") and not done:
                shutil.rmtree(os.path.dirname(place["path"]), ignore_errors=True)
    return {"inspect": place["inspect"], "bytes": reader.count, "waited_seconds": round(waited, 3),
            "seconds": round(time.monotonic() - begin - waited, 3), "finished_at": round(time.time(), 3)}
