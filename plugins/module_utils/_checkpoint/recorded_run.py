# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A docker_checkpoint run recorded in a host manifest (manifest_path): what is read before the run, and what is
written after it, with the Engine asked what became of each container. The manifest's own format and rules are in
_host/run_manifest.py; this file adds what needs the Engine: cold starts (fallback), containers whose dump failed,
and restored containers lost again to a daemon restart."""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.container import Policy, cold_start
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI, DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import run_manifest as host_manifest

Manifest = Dict[str, Any]
Answer = Dict[str, Any]  # the module's return values
Warn = Callable[[str], None]


def shortcut(params: Mapping[str, Any], manifest: Manifest | None) -> Answer | None:
    """The module's answer when the manifest alone settles it (nothing to restore, or a restore still pending)."""
    path = params["manifest_path"]
    if params["state"] == "restored":
        if manifest is None:
            return dict(changed=False, results=[], summary=[], manifest=None, checkpoint=None,
                        msg=f"no manifest at {path}: nothing to restore")
        if not host_manifest.pending(manifest) and not host_manifest.failed_dumps(manifest):
            return dict(changed=False, results=[], summary=host_manifest.summary(manifest), manifest=manifest,
                        checkpoint=manifest["checkpoint"], msg="every container of the manifest is settled already")
    elif manifest is not None and manifest.get("state") == "checkpointed" and not params["force"]:
        return dict(changed=False, results=[], summary=host_manifest.summary(manifest), manifest=manifest,
                    checkpoint=manifest["checkpoint"],
                    msg=f"{path} lists checkpoints not restored yet ({', '.join(host_manifest.pending(manifest))}): "
                        "nothing is checkpointed again; restore them first (or force=true)")
    return None


def reopen_lost(api: DockerAPI, manifest: Manifest, warn: Warn) -> Manifest:
    """An unfinished restore run (e.g. its Docker daemon was killed midway): containers it had restored that the
    daemon's restart killed are restored again (see run_manifest.reopen_lost). Nothing is stopped.
    Raises DockerAPIError when the Engine cannot be asked."""
    if manifest.get("state") != "checkpointed":
        return manifest
    states = {}
    for item in manifest["containers"]:
        if item.get("status") == "restored":
            try:
                found = api.get(f"/containers/{item['container']}/json")
            except DockerAPIError:
                continue  # gone: nothing to bring back
            if item.get("id") and found.get("Id") != item["id"]:
                continue  # another container by that name now
            state = found.get("State") or {}
            states[item["container"]] = (bool(state.get("Running")), state.get("StartedAt"), state.get("ExitCode"))
    updated, reopened = host_manifest.reopen_lost(manifest, states)
    for name in reopened:
        warn(f"{name} was restored by an earlier run that did not finish, then killed (its Docker daemon "
             "restarted?): it is restored again from the same checkpoint")
    return updated


def record(params: Mapping[str, Any], api: DockerAPI, check_mode: bool, warn: Warn, manifest: Manifest | None,
           results: list[Result], answer: Answer) -> bool:
    """Write the manifest for a present run, or apply a restore run (with its fallback); True when a container is
    left neither restored nor started. Fills answer's manifest and summary (and changed)."""
    if params["state"] == "present":
        updated = host_manifest.new(os.uname().nodename, params["name"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    results, params["leave_running"], bool(params.get("consistent")))
        failed = bool(answer.get("failed", False) or any(result.get("failed") for result in results))
    else:
        if manifest is None:  # not reached: a restore without a manifest ends in shortcut()
            raise ValueError(f"no manifest at {params['manifest_path']}: nothing to restore")
        updated, failed = _apply_restore(params, api, check_mode, warn, manifest, results, answer)
    if not check_mode:
        host_manifest.write(params["manifest_path"], updated)
        answer["changed"] = True
    answer["manifest"] = updated
    answer["summary"] = host_manifest.summary(updated)
    return failed


def _apply_restore(params: Mapping[str, Any], api: DockerAPI, check_mode: bool, warn: Warn, manifest: Manifest,
                   results: list[Result], answer: Answer) -> tuple[Manifest, bool]:
    cold: dict[str, tuple[bool, str]] = {}
    dumps: dict[str, str | tuple[bool, str]] = {}
    recorded = {item["container"]: item.get("restart_policy") for item in manifest["containers"]}
    if params["fallback"] == "cold_start" and not check_mode:
        for result in results:
            if result.get("failed") and "not found on this host" not in result.get("msg", "") \
                    and not result.get("daemon_unavailable"):
                cold[result["container"]] = cold_start(api, result["container"], recorded.get(result["container"]))
    if not check_mode:
        # Containers whose dump failed: still running (CRIU rolled back), or started afresh if the dump stopped them.
        for name in host_manifest.failed_dumps(manifest):
            dumps[name] = settle_failed_dump(api, name, recorded.get(name))
    updated = host_manifest.apply_restore(manifest, results, params["fallback"], cold, dumps)
    if not check_mode:
        updated = confirm_restored(api, updated, results, warn)
    # Not done while a container waits for its restore (a daemon outage, a container lost after its restore).
    failed = any(item["status"] == "restore_failed" for item in updated["containers"]) or (
        not check_mode and any(item["status"] == "checkpointed" for item in updated["containers"]))
    answer["changed"] = answer["changed"] or any(started[0] for started in cold.values()) or any(
        value != "kept_running" and value[0] for value in dumps.values())
    for name, (ok, _message) in cold.items():
        if ok:
            warn(f"{name} could not be restored from its checkpoint and was started afresh (cold start): "
                 "its memory state is lost")
    return updated, failed


def confirm_restored(api: DockerAPI, manifest: Manifest, results: list[Result], warn: Warn) -> Manifest:
    """At the end of a restore run: are the containers it restored still running as the restored process? A Docker
    daemon killed and restarted during the run (without live-restore) kills them; they are restored again next run."""
    restored = [r["container"] for r in results if not r.get("failed") and r.get("action") == "restored"]
    states: dict[str, Optional[Tuple[bool, Any]]] = {}
    for name in restored:
        try:
            found = api.get(f"/containers/{name}/json").get("State") or {}
            states[name] = (bool(found.get("Running")), found.get("StartedAt"))
        except DockerAPIError:
            states[name] = None
    updated, lost = host_manifest.confirm_restored(manifest, states)
    for name in lost:
        warn(f"{name} was restored, then stopped before this run ended (its Docker daemon restarted?): run the "
             "restore again to bring it back from the same checkpoint")
    return updated


def settle_failed_dump(api: DockerAPI, name: str, recorded: Policy | None) -> str | tuple[bool, str]:
    """'kept_running' when the container runs, else the (ok, message) of starting it afresh."""
    try:
        running = (api.get(f"/containers/{name}/json").get("State") or {}).get("Running")
    except DockerAPIError as exc:
        return False, str(exc)
    return "kept_running" if running else cold_start(api, name, recorded)
