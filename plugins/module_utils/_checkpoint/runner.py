# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint's run on one host, from its parameters to its answer: the checks before anything is touched,
the host's lock, the host manifest, the containers selected, one operation per container (in parallel), the answer.

The module hands over its AnsibleModule (only what `Module` names is used) and gets back (answer, failed). Each
container's operation (options.operation) returns its result or raises an OpError carrying what it had done; one
container's failure never hides the others' results.
"""

from __future__ import annotations

import atexit
import os
from typing import Any, Dict, List, Optional, Protocol, Tuple

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import recorded_run
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import results as results_mod
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.crypto import (
    CryptoError,
    normalize_secret,
    require_cryptography,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import (
    OpError,
    daemon_gone,
    message_of,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.options import (
    Operation,
    check_options,
    operation,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import (
    PreflightError,
    check_experimental,
    criu_preflight,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.selection import (
    select_containers,
    unique_by_id,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd.task import ContainerdTask
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.log import criu_log_path
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI, DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import private_files
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import run_lock
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import run_manifest as host_manifest
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import scratch
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.change_lock import HostLock, LockTimeout
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.daemon_watch import DaemonWatch
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.processes import time_namespace

Answer = Dict[str, Any]  # the module's return values


class Module(Protocol):
    """What the run needs from AnsibleModule."""

    params: dict[str, Any]
    check_mode: bool
    no_log_values: set[str]

    def warn(self, warning: str) -> None:
        """Add a warning to the module's answer."""

    def get_bin_path(self, arg: str) -> Optional[str]:
        """The path of a command on the managed host, or None."""

    def run_command(self, args: Any, handle_exceptions: bool = ...) -> Tuple[int, str, str]:
        """Run a command: (rc, stdout, stderr)."""


class Finished(Exception):
    """The run ends here with this answer (failed or not), before any container is touched."""

    def __init__(self, answer: Answer, failed: bool = True) -> None:
        super().__init__(answer.get("msg", ""))
        self.answer = answer
        self.failed = failed


def _refuse(msg: str, **answer: Any) -> Finished:
    return Finished(dict(answer, msg=msg), failed=True)


def run(module: Module, diff: bool = False) -> tuple[Answer, bool]:
    """The module's answer and whether it failed."""
    try:
        answer, failed = _run(module, diff)
    except Finished as done:
        answer, failed = done.answer, done.failed
    owner = module.params.get("release_run_lock")
    if owner:
        # The run's work on this host is done: its run lock is given back in the same call.
        released, warning = (False, None) if failed else run_lock.give_back(owner, check_mode=module.check_mode)
        if warning:
            module.warn(warning)
        answer["run_lock_released"] = released
    return answer, failed


def _run(module: Module, diff: bool) -> tuple[Answer, bool]:
    params = module.params
    name = params["name"]
    errors = check_options(params)
    if errors:
        raise _refuse("; ".join(errors), checkpoint=name, results=[])
    secret = _secret(params)
    if secret is not None and params["encryption_key_file"]:
        # The file's contents are as secret as encryption_key (no_log): never shown, whatever a message quotes.
        module.no_log_values.add(secret.decode("utf-8", "replace"))
    for option, directory in _user_directories(params):
        problem = private_files.loose(directory)
        if problem:
            raise _refuse(f"{option}: {problem}", checkpoint=name, results=[])
    if os.geteuid() != 0:
        raise _refuse("docker_checkpoint needs root on the managed host (Docker's checkpoint directories are "
                      "root-only): use become: true", checkpoint=name, results=[])
    if not module.check_mode:
        _lock(module, params)
        # Holding the host's lock, no other run uses the local scratch: what is there, a killed run left.
        left = scratch.sweep()
        if left:
            module.warn(f"removed {len(left)} temporary item(s) that a killed fleet.checkpoint run left in "
                        f"{scratch.SCRATCH}")
    manifest = None
    if params["manifest_path"]:
        manifest = _read_manifest(module, params)
        early = recorded_run.shortcut(params, manifest)
        if early:
            raise Finished(early, failed=False)
        if params["state"] == "restored" and manifest is not None:  # (no manifest: shortcut() answered)
            name = params["name"] = manifest["checkpoint"]  # the manifest names the checkpoint (and the invocation)
    ctx, refs = _prepare(module, name, manifest)
    group = None
    if params["state"] == "restored" and manifest is not None and manifest.get("consistent"):
        params["consistent"] = True  # checkpointed as one group: restored as one
    if params.get("consistent"):
        # (imported here: a run of one operation per container does not compile the group's code)
        # pylint: disable-next=import-outside-toplevel
        from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group as groups

        results, group = groups.run_group(ctx, params, name, refs)
    else:
        results = _each(ctx, operation(params, name, secret), refs, params)
    changed, failed, message = results_mod.summarize(results)
    for warning in results_mod.warnings(results):
        module.warn(warning)
    answer: Answer = dict(changed=changed, checkpoint=name, results=results, msg=message)
    if group is not None:
        answer["group"] = group
    if params["manifest_path"]:
        failed = recorded_run.record(dict(params, name=name), ctx.api, module.check_mode, module.warn, manifest,
                                     results, answer)
        if failed:
            answer["msg"] = f"{message}; manifest: " + "; ".join(
                f"{row['container']} {row['status']}" for row in answer["summary"])
    difference = results_mod.diff(params["state"], results)
    if diff and difference:
        answer["diff"] = difference
    failed = failed or bool(answer.pop("failed", False))
    return answer, failed


def _refuse_unknown(api: DockerAPI, refs: list[str], name: str) -> None:
    """Every container named must exist before any is touched: one unknown name refuses the whole call."""
    unknown = []
    for ref in refs:
        try:
            api.get(f"/containers/{ref}/json")
        except DockerAPIError as exc:
            if exc.status != 404:
                raise
            unknown.append(ref)
    if unknown:
        raise _refuse(f"container{'s' if len(unknown) > 1 else ''} {', '.join(repr(ref) for ref in unknown)} not found "
                      "on this host: check the name (`docker ps -a` lists the containers); nothing was touched",
                      checkpoint=name, results=[])


def _user_directories(params: dict[str, Any]) -> list[tuple[str, str]]:
    """The directories named by the user that root-only files go into as they are (not made 0700 when they exist):
    a host manifest's, and the one a received stream's FIFO waits in."""
    found = []
    if params["manifest_path"]:
        found.append(("manifest_path", os.path.dirname(os.path.abspath(params["manifest_path"]))))
    if params["receive_timeout"] is not None and params["archive_dir"]:
        found.append(("archive_dir", params["archive_dir"]))
    if params["send_to"] and params["send_to"].get("via") == "relay":
        found.append(("send_to.directory", params["send_to"]["directory"]))
    return found


def _secret(params: dict[str, Any]) -> bytes | None:
    if params["encryption_key"] is None and not params["encryption_key_file"]:
        return None
    try:
        secret = normalize_secret(params["encryption_key"], params["encryption_key_file"])
        require_cryptography()
    except CryptoError as exc:
        raise _refuse(str(exc), checkpoint=params["name"], results=[]) from exc
    return secret


def _lock(module: Module, params: dict[str, Any]) -> None:
    """One fleet.checkpoint change at a time on this host: held until the module exits (an flock, released with the
    process even if it is killed)."""
    try:
        lock = HostLock(timeout=params["lock_timeout"], what=f"docker_checkpoint state={params['state']}").__enter__()
    except (LockTimeout, OSError) as exc:
        raise _refuse(f"{exc}", checkpoint=params["name"], results=[]) from exc
    # exit_json and fail_json end the process: the holder's name is cleared then (the lock file is left empty).
    atexit.register(lock.__exit__, None, None, None)
    if lock.waited >= 1:
        module.warn(f"waited {lock.waited}s for another fleet.checkpoint run on this host to finish")


def _read_manifest(module: Module, params: dict[str, Any]) -> dict[str, Any] | None:
    try:
        manifest = host_manifest.read(params["manifest_path"])
    except host_manifest.HostManifestError as exc:
        raise _refuse(f"manifest_path {exc}: move it away to start afresh", results=[]) from exc
    if params["state"] == "restored" and manifest is not None and manifest.get("state") == "checkpointed":
        try:
            manifest = recorded_run.reopen_lost(DockerAPI(params["docker_host"], timeout=params["api_timeout"]),
                                                manifest, module.warn)
        except (ValueError, DockerAPIError) as exc:
            raise _refuse(f"cannot use the Docker Engine: {exc}", checkpoint=params["name"], results=[]) from exc
    return manifest


def _prepare(module: Module, name: str, manifest: dict[str, Any] | None) -> tuple[HostContext, list[str]]:
    """The host's context (its Engine answering, CRIU usable for the state) and the containers to work on."""
    params = module.params
    state = params["state"]

    def run_command(argv: List[str]) -> Tuple[int, str, str]:
        # From worker threads: exceptions are raised (and reported per container), never fail_json in a thread.
        return module.run_command(argv, handle_exceptions=False)

    try:
        api = DockerAPI(params["docker_host"], timeout=params["api_timeout"])
        info = api.info()
    except (ValueError, DockerAPIError) as exc:
        raise _refuse(f"cannot use the Docker Engine: {exc}", checkpoint=name, results=[]) from exc
    versions = {"docker": info.get("ServerVersion"), "kernel": info.get("KernelVersion"), "criu": None}
    root_dir = info.get("DockerRootDir") or "/var/lib/docker"
    try:
        if state in ("present", "restored", "absent"):
            check_experimental(info)
        if state in ("present", "restored"):
            versions["criu"] = criu_preflight(run_command, module.get_bin_path("criu"), works=state == "present",
                                              record=not module.check_mode)
        if params["send_to"] and params["send_to"].get("via") != "relay" and not module.get_bin_path("ssh"):
            raise PreflightError("send_to needs the ssh client on this host: install the openssh-client package")
        if state == "exported" and params["compression"] == "zstd" and not module.get_bin_path("zstd"):
            raise PreflightError("compression=zstd needs the zstd command on the managed host: install the zstd "
                                 "package (or use compression=gzip or none)")
        if state == "restored" and manifest is not None:
            refs = host_manifest.pending(manifest)
        else:
            refs = unique_by_id(api, select_containers(api, dict(params, name=name), root_dir))
            if not params["create"]:
                _refuse_unknown(api, refs, name)
    except (PreflightError, DockerAPIError) as exc:
        raise _refuse(str(exc), checkpoint=name, results=[]) from exc
    ctr = module.get_bin_path("ctr")
    ctx = HostContext(
        api=api, root_dir=root_dir, check_mode=module.check_mode, run=run_command, versions=versions,
        containerd=ContainerdTask(run_command, ctr, timeout_path=module.get_bin_path("timeout")) if ctr else None,
        criu_log=criu_log_path(), zstd=module.get_bin_path("zstd"), host_time_ns=time_namespace("self"),
        scratch=scratch.SCRATCH,
    )
    return ctx, refs


def _each(ctx: HostContext, op: Operation, refs: list[str], params: dict[str, Any]) -> list[Result]:
    """The operation on every container, in parallel (receives: all at once); a result per container, in order."""
    watch = DaemonWatch(enabled=params["docker_host"] == "unix:///var/run/docker.sock")
    renamed = dict(params.get("rename") or {}) if params["receive_timeout"] is not None else {}

    def one(ref: str) -> Result:
        try:
            return op(ctx, ref)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # One container's failure must not hide the others' results (some may have been changed already).
            partial = exc.partial if isinstance(exc, OpError) else None
            here = renamed.get(ref, ref)  # a received container under its new name (rename)
            result = results_mod.failure(here, message_of(exc), partial)
            if here != ref:
                result["renamed_from"] = ref
            if daemon_gone(exc):
                result["daemon_unavailable"] = True  # no conclusion about the checkpoint: no fallback, try again
            elif watch.restarted():
                # dockerd died and came back meanwhile (its restart kills running containers): not the checkpoint's
                # fault either.
                result["daemon_unavailable"] = True
                result["msg"] += " (the Docker daemon restarted during this run: run the restore again)"
            return result

    workers = max(1, min(params["parallel"] or os.cpu_count() or 1, len(refs) or 1))
    if params["receive_timeout"] is not None:
        workers = max(1, len(refs))  # every container waits for its stream at once: the sender decides the pace
    if workers == 1:
        return [one(ref) for ref in refs]  # one at a time: no thread pool (its import alone costs ~25 ms)
    from concurrent.futures import ThreadPoolExecutor  # pylint: disable=import-outside-toplevel

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, refs))
