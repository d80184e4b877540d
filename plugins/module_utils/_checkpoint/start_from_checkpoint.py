# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Docker's restore call (POST /containers/{id}/start?checkpoint=) and the ways around its traps.

- Docker copies a checkpoint through containerd's content store and unpacks it again (most of a restore's time):
  the memory pages are linked instead (see linked_pages), so that CRIU reads them in place; method=auto falls back to
  Docker's own copy when that restore fails.
- containerd never removes its unpacked copy of a checkpoint (a whole checkpoint in /tmp per restore): removed here.
- containerd's transient `content ... already exists` on restore (the identical blob of an earlier restore still in
  its content store): the blob is removed and the restore retried once.
- A daemon that does not answer during the restore: nothing is concluded (DaemonUnavailable), the links stay.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import linked_pages as pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import DaemonUnavailable, OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.log import explain
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError

STALE_BLOB = re.compile(r"content (sha256:[0-9a-f]{64}): already exists")


@dataclass(frozen=True)
class Start:
    """One restore call: into which container, from which checkpoint (name and directory), through which path
    (method auto, containerd or api, as the module's option), with which timeout, since when (CRIU's log lines
    written after `since` are this restore's)."""

    container_id: str
    name: str
    path: str
    method: str
    timeout: int
    since: float


def start(ctx: HostContext, how: Start, result: Result) -> None:
    """Restore with the pages linked (see linked_pages), unless method=api; method=auto falls back to Docker's
    own copy when that restore fails (Docker leaves the container stopped after a failed restore)."""
    linked = []
    if how.method != "api":
        if pages.auto_dedup():
            result["warnings"].append(f"{result['container']}: CRIU is configured with auto-dedup, which would "
                                      "punch holes in the checkpoint's own pages through links; Docker copies them")
        else:
            try:
                linked = pages.link(how.path)  # undoes itself when it fails
            except OSError as exc:
                result["warnings"].append(f"{result['container']}: the pages could not be linked for the fast "
                                          f"restore ({exc}); Docker copies them instead")
    if not linked:
        result["restore_path"] = "copied"
        _start_copied(ctx, how, result)
        return
    first = None
    try:
        _call(ctx, how, result)
    except DaemonUnavailable:
        # Docker may still be restoring through the links: they stay, the next operation on this checkpoint
        # puts the pages back.
        raise
    except OpError as exc:
        first = exc
    _unlink_pages(how.path, result)
    if first is None:
        result["restore_path"] = "linked"
        return
    if how.method == "containerd" or (container.inspect(ctx, how.container_id).get("State") or {}).get("Running"):
        raise first
    result["warnings"].append(f"{result['container']}: the restore with linked pages failed ({first}); restored "
                              "through Docker's own copy instead")
    result["restore_path"] = "copied"
    _start_copied(ctx, how, result)


def _start_copied(ctx: HostContext, how: Start, result: Result) -> None:
    """Docker's own restore (it copies the checkpoint); then containerd's unpacked copy of it, which containerd
    never removes (a whole checkpoint in /tmp per restore), is removed."""
    try:
        _call(ctx, how, result)
    except DaemonUnavailable:
        raise  # Docker may still be restoring from its copy: it stays
    except OpError:
        _drop_copies(how.path)
        raise
    _drop_copies(how.path)


def _drop_copies(path: str) -> None:
    try:
        for leftover in pages.copies(pages.containerd_temp_dirs(), path, unchecked=(store.METADATA_NAME,)):
            shutil.rmtree(leftover, ignore_errors=True)
    except OSError:
        pass


def _unlink_pages(path: str, result: Result) -> None:
    """After a linked restore: remove containerd's unpacked copy (links, by now) and put the pages back."""
    try:
        for leftover in pages.leftovers(pages.containerd_temp_dirs(), pages.side_dir(path)):
            shutil.rmtree(leftover, ignore_errors=True)
        pages.put_back(path)
    except OSError as exc:
        result["warnings"].append(f"{result['container']}: the pages of {path} could not be put back in place "
                                  f"({exc}); the next operation on this checkpoint tries again")


def _call(ctx: HostContext, how: Start, result: Result) -> None:
    """Docker's restore call; retried once after containerd's stale-blob trap. restore_call_seconds adds up."""
    for attempt in (1, 2):
        call_started = time.monotonic()
        try:
            ctx.api.post(f"/containers/{how.container_id}/start", timeout=how.timeout, checkpoint=how.name)
            return
        except DockerAPIError as exc:
            if exc.status is None:
                raise DaemonUnavailable(f"the Docker daemon did not answer during the restore of "
                                        f"{result['container']} ({exc}): run the restore again once it is up") from exc
            if attempt == 1 and "already exists" in str(exc):
                # Moby's known trap (LAB-FACTS): the checkpoint's blob, byte for byte the same, is still in
                # containerd's content store from an earlier restore, and the upload refuses to commit over it.
                _drop_stale_blob(ctx, str(exc), result)
                continue
            raise OpError(explain(ctx.criu_log, f"restore of {result['container']} failed", str(exc),
                                  how.since)) from exc
        finally:
            result["restore_call_seconds"] = round(result.get("restore_call_seconds", 0)
                                                   + time.monotonic() - call_started, 3)


def _drop_stale_blob(ctx: HostContext, message: str, result: Result) -> None:
    digest = STALE_BLOB.search(message)
    why_not = ctx.containerd.remove_content(digest.group(1)) if digest and ctx.containerd else \
        "no digest in the message, or ctr is not installed"
    if why_not:
        time.sleep(2)  # containerd's garbage collector may remove it meanwhile
    result["warnings"].append(f"containerd reported {message}; "
                              + (f"retried after 2s ({why_not})" if why_not else
                                 "removed that stale blob (identical content) and retried"))
