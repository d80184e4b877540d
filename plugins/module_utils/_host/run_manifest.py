# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The host manifest: what a checkpoint run found running, what became of each container, and what a restore did.

Written root-only on the host by docker_checkpoint (manifest_path) so that a restore after a reboot, or a re-run after
a partial failure, knows exactly which containers to bring back from which checkpoint, and with which restart policy.

A container's status moves:  checkpointed -> restored | cold_started | left_stopped | restore_failed | found_running
| skipped. left_stopped and restore_failed are tried again by the next restore; the others are final.
A container whose dump failed (checkpoint_failed) is settled by the restore: kept_running, or cold_started when the
failed dump left it stopped. A leave_running run records `snapshot`: nothing to restore.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._host.private_files import (
    ensure_private_dir,
    write_private_json,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Optional, Union

    Manifest = dict[str, Any]  # the JSON document: format, host, checkpoint, state, containers, ...
    Entry = dict[str, Any]  # one container of a manifest: container, checkpoint, status, ...
    Result = dict[str, Any]  # one of docker_checkpoint's per-container results
    ColdStart = tuple[bool, str]  # (started, message) of a cold start
    Settled = Union[str, ColdStart]  # 'kept_running', or the outcome of a cold start
    RunState = tuple[bool, Optional[str]]  # (running, started_at) as Docker reports them
    ExitState = tuple[bool, Optional[str], Optional[int]]  # (running, started_at, exit code) as Docker reports them

FORMAT = "fleet.checkpoint/host-manifest"
FORMAT_VERSION = 1
RETRY = ("checkpointed", "left_stopped", "restore_failed")
FINAL = ("restored", "cold_started", "found_running", "kept_running", "skipped", "snapshot")
FALLBACKS = ("cold_start", "leave_stopped", "fail")
_KEPT = ("id", "restart_policy", "method", "size", "leave_running", "path")


class HostManifestError(ValueError):
    """The manifest file cannot be used; the message says why."""


def new(host: str, checkpoint: str, created: str, results: Iterable[Result], leave_running: bool,
        consistent: bool = False) -> Manifest:
    """The manifest of a checkpoint run, from docker_checkpoint's per-container results (`consistent`: made as one
    group, restored as one)."""
    containers = []
    for result in results:
        entry: Entry = {"container": result.get("container"), "checkpoint": checkpoint}
        entry.update({key: result[key] for key in _KEPT if key in result})
        entry["dump_seconds"] = result.get("duration")
        if result.get("failed"):
            entry.update(status="checkpoint_failed", msg=result.get("msg", ""))
        elif leave_running:
            entry["status"] = "snapshot"
        else:
            entry["status"] = "checkpointed"
        containers.append(entry)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "host": host,
        "checkpoint": checkpoint,
        "created": created,
        "leave_running": bool(leave_running),
        "consistent": bool(consistent),
        "state": state_of(containers),
        "containers": containers,
    }


def state_of(containers: Iterable[Entry]) -> str:
    """'checkpointed' while some container still waits for its restore (or a failed dump is not settled yet),
    else 'restored'."""
    waiting = RETRY + ("checkpoint_failed",)
    return "checkpointed" if any(item.get("status") in waiting for item in containers) else "restored"


def failed_dumps(manifest: Manifest) -> list[str]:
    """Names of containers whose dump failed and that the restore has not settled yet."""
    return [item["container"] for item in manifest["containers"] if item.get("status") == "checkpoint_failed"]


def load(text: str) -> Manifest:
    """Parse and check a manifest file's text; raise HostManifestError naming the problem."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise HostManifestError(f"not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise HostManifestError(f"not a fleet.checkpoint host manifest (format must be {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise HostManifestError(f"format_version {data.get('format_version')!r} is not supported")
    if not isinstance(data.get("checkpoint"), str) or not isinstance(data.get("containers"), list):
        raise HostManifestError("it needs a checkpoint name and a list of containers")
    for item in data["containers"]:
        if not isinstance(item, dict) or not isinstance(item.get("container"), str) or "status" not in item:
            raise HostManifestError("every container entry needs a container name and a status")
    return data


def read(path: str) -> Manifest | None:
    """The manifest at path, or None when there is none."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise HostManifestError(f"{path} cannot be read: {exc}") from exc
    try:
        return load(text)
    except HostManifestError as exc:
        raise HostManifestError(f"{path}: {exc}") from exc


def write(path: str, manifest: Manifest) -> None:
    """Write atomically, root-only (directory 0700, file 0600)."""
    ensure_private_dir(os.path.dirname(os.path.abspath(path)))
    write_private_json(path, manifest)


def pending(manifest: Manifest) -> list[str]:
    """Names of the containers a restore still has to bring back."""
    return [item["container"] for item in manifest["containers"] if item.get("status") in RETRY]


def apply_restore(manifest: Manifest, results: Iterable[Result], fallback: str,
                  cold_starts: Mapping[str, ColdStart] | None = None,
                  failed_dumps_now: Mapping[str, Settled] | None = None) -> Manifest:
    """A new manifest after a restore run.

    results: docker_checkpoint's per-container results for state=restored. cold_starts: {container: (ok, message)}
    for the containers the cold_start fallback started afresh. failed_dumps_now: {container: 'kept_running' or
    (ok, message) of its cold start} for the containers whose dump had failed.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}")
    cold_starts = cold_starts or {}
    by_name = {result.get("container"): result for result in results}
    containers = []
    for item in manifest["containers"]:
        item = dict(item)
        result = by_name.get(item["container"])
        settled = (failed_dumps_now or {}).get(item["container"])
        if settled is not None and item.get("status") == "checkpoint_failed":
            if settled == "kept_running":
                item["status"] = "kept_running"
            elif settled[0]:
                item.update(status="cold_started", resumed=False,
                            restore_msg="its dump had failed and left it stopped: started afresh")
            else:
                item.update(status="restore_failed", restore_msg=f"its dump had failed; cold start failed: {settled[1]}")
        elif result is not None and item.get("status") in RETRY:
            item["restore_seconds"] = result.get("duration")
            item["resumed"] = result.get("resumed")
            if not result.get("failed") and result.get("action") == "unchanged" and result.get("resumed") is not True:
                # Running before the restore: started by hand or by Docker, not from this checkpoint.
                item.update(status="found_running", resumed=None,
                            restore_msg="it was already running (not restored from this checkpoint)")
            elif not result.get("failed"):
                item["status"] = "restored"
                item["started_at"] = result.get("started_at")
                item.pop("restore_msg", None)
            elif result.get("daemon_unavailable"):
                item.update(status="restore_failed", restore_msg=result.get("msg", ""))
            elif "not found on this host" in result.get("msg", ""):
                item.update(status="skipped", restore_msg=result.get("msg", ""))
            else:
                item["restore_msg"] = result.get("msg", "")
                started = cold_starts.get(item["container"])
                if fallback == "cold_start" and started and started[0]:
                    item["status"] = "cold_started"
                    item["resumed"] = False
                elif fallback == "cold_start" and started:
                    item["status"] = "restore_failed"
                    item["restore_msg"] += f" | cold start failed too: {started[1]}"
                elif fallback == "leave_stopped":
                    item["status"] = "left_stopped"
                else:
                    item["status"] = "restore_failed"
        containers.append(item)
    updated = dict(manifest, containers=containers)
    updated["state"] = state_of(containers)
    return updated


def confirm_restored(manifest: Manifest, states: Mapping[str, RunState | None]) -> tuple[Manifest, list[str]]:
    """After a restore run: states {container: (running, started_at) or None when Docker did not answer} for the
    containers this run restored. One no longer running as the restored process is set back to be restored again
    (checkpointed); one Docker could not be asked about is restore_failed (tried again). Returns (manifest, [lost])."""
    containers, lost = [], []
    for item in manifest["containers"]:
        item = dict(item)
        if item.get("status") == "restored" and item["container"] in states:
            found = states[item["container"]]
            if found is None:
                item.update(status="restore_failed", restore_msg="restored, but Docker did not answer afterwards: "
                                                                 "checked again by the next restore")
                lost.append(item["container"])
            elif not found[0] or item.get("started_at") not in (None, found[1]):
                item.update(status="checkpointed", resumed=None, restore_msg=(
                    "restored, then stopped before the restore run ended (Docker daemon restarted?): restored again "
                    "by the next restore"))
                lost.append(item["container"])
        containers.append(item)
    updated = dict(manifest, containers=containers)
    updated["state"] = state_of(containers)
    return updated, lost


KILLED = 137  # SIGKILL: what a Docker daemon starting without live-restore does to the containers it finds running


def reopen_lost(manifest: Manifest, states: Mapping[str, ExitState]) -> tuple[Manifest, list[str]]:
    """Containers an unfinished restore run brought back that a Docker daemon restart killed since: set back to be
    restored again (from the same checkpoint). Nothing is stopped here.

    states: {container: (running, started_at, exit_code)} for the containers the manifest calls restored.
    Only a container still the restored one (same start time), stopped, killed by SIGKILL is restored again; one
    that exited by itself (a batch job) or was stopped by hand is left alone. One that runs but was started afresh
    since (restart policy, `docker restart`) is reported cold_started: its restored memory is gone. A finished
    manifest is left alone. Returns (manifest, [names restored again]).
    """
    if manifest.get("state") != "checkpointed":
        return manifest, []
    containers, reopened = [], []
    for item in manifest["containers"]:
        item = dict(item)
        found = states.get(item["container"])
        if item.get("status") == "restored" and found:
            running, started_at, exit_code = found
            same = item.get("started_at") in (None, started_at)
            if not running and same and exit_code == KILLED:
                item.update(status="checkpointed", resumed=None, restore_msg=(
                    "restored, then killed before the restore run ended (Docker daemon restarted?): restored again"))
                reopened.append(item["container"])
            elif running and not same:
                item.update(status="cold_started", resumed=False, restore_msg=(
                    "restored, then started afresh by Docker before the restore run ended (daemon restart and "
                    "restart policy?): its restored memory state is lost"))
        containers.append(item)
    updated = dict(manifest, containers=containers)
    updated["state"] = state_of(containers)
    return updated, reopened


def summary(manifest: Manifest) -> list[dict[str, Any]]:
    """One row per container for reports: container, status, resumed, sizes and seconds, message."""
    rows = []
    for item in manifest.get("containers", []):
        rows.append({
            "container": item.get("container"),
            "checkpoint": item.get("checkpoint", manifest.get("checkpoint")),
            "status": item.get("status"),
            "resumed": item.get("resumed"),
            "size": item.get("size"),
            "method": item.get("method"),
            "dump_seconds": item.get("dump_seconds"),
            "restore_seconds": item.get("restore_seconds"),
            "msg": item.get("restore_msg") or item.get("msg") or "",
        })
    return rows
