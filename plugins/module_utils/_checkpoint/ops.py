# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One checkpoint operation on one container: present, absent, restored, exported, imported.

Each returns a result dict and raises OpError (with what to do) when it cannot be done. Every Docker trap from
the project's LAB-FACTS is handled here:
- a restart policy cold-starts a checkpointed container: it is set to `no` before a stopping dump, recorded in the
  checkpoint's metadata and put back after the restore;
- `start?checkpoint=` on a running container does nothing: restores only ever start a stopped container;
- a live-restored container stays running after a stopping API checkpoint: detected, redone through containerd;
- restores into another container: the checkpoint is copied into that container's checkpoint directory;
- containerd's transient `content ... already exists` on restore: retried once.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import time

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store as store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream_ops as stream_ops
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import archive as transfer
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import processes as procs
from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd import task as containerd_task
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import linked_pages as pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import orphan_shims as shims
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import (
    ArchiveError,
    file_inventory,
    sha256_file,
    safe_extract,
    verify_inventory,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import (
    PreflightError,
    check_free_space,
    criu_log_excerpt,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import ManifestError, build
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.container_create import (
    CreateError,
    create,
    missing_prerequisites,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError

NO_POLICY = {"Name": "no", "MaximumRetryCount": 0}
STALE_BLOB = re.compile(r"content (sha256:[0-9a-f]{64}): already exists")


class DaemonUnavailable(OpError):
    """The Docker daemon went away during the operation (killed, restarting): nothing can be concluded about the
    checkpoint; a later run tries again (no fallback applies)."""


class DumpInDoubt(OpError):
    """The Engine did not answer in time: the daemon may still be dumping. Nothing is cleaned up behind it."""


def _policy(inspect):
    policy = dict((inspect.get("HostConfig") or {}).get("RestartPolicy") or {})
    policy.setdefault("Name", "no")
    if not policy["Name"]:
        policy["Name"] = "no"
    policy.setdefault("MaximumRetryCount", 0)
    return policy


def _is_no(policy):
    return (policy or {}).get("Name") in (None, "", "no")


def _images(path):
    """The checkpoint's files without fleet.checkpoint's metadata (pages left aside by an interrupted fast restore
    counted where they wait)."""
    moved = pages.aside(path)
    inventory = file_inventory(path, skip=moved)
    for name, real in moved.items():
        inventory[name] = {"size": os.path.getsize(real), "sha256": sha256_file(real)}
    inventory.pop(store.METADATA_NAME, None)
    inventory.pop(store.METADATA_NAME + ".tmp", None)  # left by a metadata write that was interrupted
    return inventory


def _damage(metadata, actual):
    """What differs between the files recorded at dump time (size, sha256) and the files there now."""
    recorded = metadata.get("files")
    if not isinstance(recorded, dict):
        return []  # not made by this version of fleet.checkpoint: nothing to compare with
    problems = []
    for name, info in sorted(recorded.items()):
        found = actual.get(name)
        if found is None:
            problems.append(f"{name} is missing")
        elif found["size"] != info.get("size"):
            problems.append(f"{name} has {found['size']} bytes, {info.get('size')} at dump time (truncated?)")
        elif found["sha256"] != info.get("sha256"):
            problems.append(f"{name} does not match its sha256 from dump time (corrupted)")
    problems.extend(f"{name} was added after the dump" for name in sorted(set(actual) - set(recorded)))
    return problems


def cold_start(api, ref, policy):
    """Start a container afresh (its checkpoint could not be restored) and put its recorded restart policy back.

    Returns (ok, message). A container already running is left as it is.
    """
    try:
        inspect = api.get(f"/containers/{ref}/json")
        if not (inspect.get("State") or {}).get("Running"):
            api.post(f"/containers/{inspect['Id']}/start")
        if isinstance(policy, dict) and not _is_no(policy) and _policy(inspect).get("Name") != policy.get("Name"):
            api.post(f"/containers/{inspect['Id']}/update", body={"RestartPolicy": policy})
    except DockerAPIError as exc:
        return False, str(exc)
    return True, "started afresh"


class CheckpointOps:
    """Operations on one host. `ctx` carries: api, root_dir, run, check_mode, options (dict), versions (dict),
    containerd (ContainerdTask or None), criu_log (path or None), zstd (path or None), host_time_ns."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.api = ctx.api
        self.opts = ctx.options
        self.name = ctx.options["name"]
        self._local = threading.local()

    def begin(self):
        """A new operation on this thread: forget the last one's result (see partial)."""
        self._local.result = None
        self._local.created = False

    def partial(self):
        """The result being built by this thread's current operation (what was done before a failure), or None."""
        return getattr(self._local, "result", None)

    # -- helpers ---------------------------------------------------------------------------------------------------
    def inspect(self, ref):
        try:
            return self.api.get(f"/containers/{ref}/json")
        except DockerAPIError as exc:
            if exc.status == 404:
                raise OpError(f"container {ref!r} not found on this host: check the name "
                              "(`docker ps -a` lists the containers)") from exc
            raise

    def inspect_or_create(self, ref, config=None, origin=None):
        """Inspect the container; with create=true, create it first from `config` (a manifest's container part, from
        `origin`), or else from the archive's manifest."""
        try:
            return self.inspect(ref)
        except OpError:
            if not (self.opts.get("create") and (config or self.opts.get("archive_mode"))):
                raise
        archive = origin or self._archive_for(ref)
        if config is None:
            try:
                with transfer.Tarball(archive, self.ctx.run, self.ctx.zstd, os.path.dirname(os.path.abspath(archive)),
                                      self.opts.get("secret")) \
                        as tar_path:
                    config = transfer.read_manifest(tar_path)["container"]
            except (ArchiveError, ManifestError) as exc:
                raise OpError(f"{archive}: {exc}") from exc
        if self.ctx.check_mode:
            problems = missing_prerequisites(self.api, config, os.path.exists)
            if problems:
                raise OpError(f"container {ref} cannot be created from {archive}: {'; '.join(problems)}")
            self._local.created = True  # would be
            return {"Id": "0" * 64, "Name": f"/{ref}", "State": {}, "HostConfig": {}, "Image": None}
        try:
            create(self.api, ref, config, os.path.exists)
        except (CreateError, DockerAPIError) as exc:
            raise OpError(f"container {ref} cannot be created from {archive}: {exc}") from exc
        inspect = self.inspect(ref)
        self._local.created = True
        return inspect

    def _result(self, inspect):
        self._local.result = {
            "container": (inspect.get("Name") or "").lstrip("/"),
            "id": inspect["Id"],
            "checkpoint": self.name,
            "changed": False,
            "action": "unchanged",
            "warnings": [],
        }
        if getattr(self._local, "created", False):
            self._local.result["created"] = True
            self._local.result["changed"] = True
            self._local.created = False
        return self._local.result

    def _path(self, container_id):
        path = store.checkpoint_dir(self.ctx.root_dir, container_id, self.name)
        if not self.ctx.check_mode:
            pages.put_back(path)  # a run interrupted during a fast restore left the pages linked: put them back
        return path

    def _pids(self, container_id):
        return procs.host_pids(self.api.get(f"/containers/{container_id}/top") or {})

    def _set_policy(self, container_id, policy):
        self.api.post(f"/containers/{container_id}/update", body={"RestartPolicy": policy})

    def _wait_state(self, container_id, running, seconds=10.0):
        deadline = time.monotonic() + seconds
        while True:
            state = (self.inspect(container_id).get("State") or {})
            if bool(state.get("Running")) == running or time.monotonic() > deadline:
                return state
            time.sleep(0.05)

    def settled(self, inspect):
        """The container as Docker sees it once it has caught up with a stopping dump.

        Such a dump returns as soon as the container's processes are gone (as `docker checkpoint create` does), and
        Docker records the exit a moment later: it locks the container (an inspect then waits), deletes containerd's
        task, and records the container stopped. So when Docker says running but the main process is gone: while
        containerd still holds the task with that process, Docker has not begun, and is waited for; once the task is
        gone, one more inspect (which waits for Docker's lock) tells. Anything else (a remote Engine, a container
        restarting, paused or without a process) is taken as Docker says.
        """
        state = inspect.get("State") or {}
        pid = state.get("Pid")
        if (not state.get("Running") or state.get("Restarting") or state.get("Paused") or not pid
                or getattr(self.api, "kind", None) != "unix" or procs.alive(pid)):
            return inspect
        if containerd_task.task_init_pid(inspect["Id"]) != pid:
            return self.inspect(inspect["Id"])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.02)
            inspect = self.inspect(inspect["Id"])
            now = inspect.get("State") or {}
            if not now.get("Running") or now.get("Pid") != pid:
                break
        return inspect

    def _criu_error(self, what, detail, since):
        lines = criu_log_excerpt(self.ctx.criu_log, since=since)
        text = f"{what}: {detail.strip()}"
        if lines:
            text += f" | CRIU log ({self.ctx.criu_log}): " + " / ".join(lines)
        elif self.ctx.criu_log is None:
            text += (" | CRIU's log is not kept on this host: the fleet.checkpoint.criu role sets log-file in "
                     "/etc/criu/runc.conf so that failures can be explained")
        return text

    def _other_checkpoints(self, container_id):
        return [item["name"] for item in store.list_checkpoints(self.ctx.root_dir, container_id)]

    # -- present ---------------------------------------------------------------------------------------------------
    def present(self, ref):
        self._local.sender = None  # with send_to: connected to the target before the dump (see _present)
        try:
            result = self._present(ref)
        except BaseException:
            if self._local.sender:
                self._local.sender.abort()
            raise
        if self.opts.get("send_to"):
            stream_ops.send_checkpoint(self, result, self._local.sender)
        return result

    def _present(self, ref):
        inspect = self.settled(self.inspect(ref))
        cid = inspect["Id"]
        result = self._result(inspect)
        path = self._path(cid)
        result["path"] = path
        exists = os.path.isdir(path)
        leave_running = self.opts["leave_running"]
        in_doubt = os.path.join(os.path.dirname(path), f".{self.name}.fleet-in-doubt")  # left by a dump in doubt
        if exists and not self.opts["force"]:
            if os.path.exists(in_doubt):
                raise OpError(f"checkpoint {self.name!r} of container {result['container']} is in doubt: an earlier "
                              f"run could not tell whether its dump finished ({path}). Check the container, then "
                              "remove the checkpoint with state=absent, or replace it with force=true")
            if self.opts.get("manifest_path"):
                raise OpError(f"container {result['container']} already has a checkpoint {self.name!r}: a run recorded "
                              "in a host manifest needs a new checkpoint name (an old checkpoint would be restored "
                              "instead of the state at this run), or force=true to replace it")
            result["method"] = store.read_metadata(path).get("method")
            return result
        state = inspect.get("State") or {}
        if not state.get("Running") or state.get("Paused") or state.get("Restarting"):
            raise OpError(f"container {result['container']} is {state.get('Status', 'not running')}: a checkpoint "
                          "needs a running container (start it, or restore it with state=restored)")
        if not leave_running and (inspect.get("HostConfig") or {}).get("AutoRemove"):
            raise OpError(f"container {result['container']} was started with --rm: Docker would delete it, and its "
                          "checkpoint with it, as soon as the dump stops it. Use leave_running=true (then "
                          "state=exported to keep a copy elsewhere)")
        pids = self._pids(cid)
        needed = procs.dump_estimate(procs.rss_bytes(pids))
        try:
            check_free_space(store.checkpoints_dir(self.ctx.root_dir, cid), needed)
        except PreflightError as exc:
            raise OpError(str(exc)) from exc
        method, why = self._choose_method(cid, state.get("Pid"))
        main_started = procs.start_time(state.get("Pid"))
        policy = _policy(inspect)
        result.update(method=method, leave_running=leave_running, restart_policy=policy)
        if why:
            result["method_reason"] = why
        result["changed"] = True
        result["action"] = "recreated" if exists else "created"
        if self.ctx.check_mode:
            return result
        if self.opts.get("send_to"):
            # Connected, and the target's restore seen waiting, before the container is touched.
            self._local.sender = stream_ops.connect(self, result)
        started = time.time()
        result["dump_started_at"] = round(started, 3)
        processes = procs.process_tree(pids)
        created_parent = not os.path.isdir(os.path.dirname(path))
        store.ensure_private_dir(os.path.dirname(path))
        backup = None
        if exists:
            backup = os.path.join(os.path.dirname(path), f".{self.name}.fleet-old")
            if os.path.exists(in_doubt) and os.path.isdir(backup):
                shutil.rmtree(path)  # the dump in doubt goes; the checkpoint it was replacing stays the backup
            else:
                shutil.rmtree(backup, ignore_errors=True)
                os.rename(path, backup)
        if os.path.exists(in_doubt):
            os.unlink(in_doubt)
        policy_changed = False
        try:
            if not leave_running and not _is_no(policy):
                self._set_policy(cid, NO_POLICY)
                policy_changed = True
            method = self._dump(cid, (state.get("Pid"), main_started and main_started[1]), path, method,
                                not leave_running, started, result)
        except DumpInDoubt as exc:
            result["modified"] = True
            store.write_private_json(in_doubt, {"since": round(time.time(), 3), "container": cid})
            kept = f" The checkpoint it was replacing is kept in {backup}." if backup else ""
            raise OpError(f"{exc}{kept} {self._aftermath(cid, policy)}") from exc
        except BaseException as exc:
            shutil.rmtree(path, ignore_errors=True)
            if backup:
                os.rename(backup, path)
            elif created_parent:
                shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            if policy_changed and self.inspect(cid).get("State", {}).get("Running"):
                self._set_policy(cid, policy)
            aftermath = self._aftermath(cid, policy)
            if aftermath and isinstance(exc, Exception):
                result["modified"] = True
                raise OpError(f"{exc} {aftermath}") from exc
            raise
        if backup:
            shutil.rmtree(backup, ignore_errors=True)
        try:
            self._finish_present(cid, path, inspect, result, policy, processes, method, started, leave_running)
        except (OSError, DockerAPIError, ValueError) as exc:
            result["modified"] = True
            raise OpError(f"the checkpoint was made at {path}, but finishing it failed: {exc}. "
                          f"{self._aftermath(cid, policy)} The recorded restart policy was "
                          f"{policy['Name']!r}; put it back by hand after restoring if the metadata is missing.") from exc
        return result

    def _aftermath(self, cid, policy):
        """What a failed operation left changed on the container, in words ('' when nothing)."""
        try:
            now = self.settled(self.inspect(cid))
        except (OpError, DockerAPIError):
            return "The container's state could not be read afterwards: check it with `docker inspect`."
        notes = []
        if not (now.get("State") or {}).get("Running"):
            notes.append("The container is now stopped")
        current = _policy(now)
        if current.get("Name") != policy.get("Name"):
            notes.append(f"its restart policy is {current['Name']!r} (was {policy['Name']!r})")
        return (", ".join(notes) + ".") if notes else ""

    def _finish_present(self, cid, path, inspect, result, policy, processes, method, started, leave_running):
        store.secure_tree(path)
        metadata = {
            "format": store.METADATA_FORMAT,
            "name": self.name,
            "created": started,
            "method": method,
            "leave_running": leave_running,
            "container": {"id": cid, "name": result["container"], "image": inspect.get("Image")},
            "restart_policy": policy,
            "processes": processes,
            "versions": dict(self.ctx.versions),
            # Size and sha256 of every file, checked before a restore or an export: a damaged checkpoint is
            # refused instead of restored into a process with corrupted memory.
            "files": _images(path),
        }
        store.write_metadata(path, metadata)
        result["method"] = method
        result["size"] = store.tree_size(path)
        result["stopped"] = not leave_running
        result["duration"] = round(time.time() - started, 3)
        result["pruned"] = self._prune(cid, started)

    def _choose_method(self, cid, pid):
        wanted = self.opts["method"]
        if wanted == "api":
            return "api", ""
        task = self.ctx.containerd
        why = task.check(cid, pid) if task else "ctr (containerd's client) is not installed"
        if not why:
            return "containerd", ""
        if wanted == "containerd":
            raise OpError(f"method=containerd cannot be used for this container: {why}. Use method=auto or api")
        return "api", f"containerd path not used: {why}"

    def _dump(self, cid, main, path, method, stop, since, result):
        """Dump through the chosen path; make sure a stopping dump really stopped the container. `main` is the
        container's main process (host PID, start time)."""
        timeout = self.opts["timeout"]
        if method == "containerd":
            self._dump_containerd(cid, path, stop, since, result)
        else:
            try:
                dump_started = time.monotonic()
                self.api.post(f"/containers/{cid}/checkpoints", body={"CheckpointID": self.name, "Exit": stop},
                              timeout=timeout)
                result["dump_call_seconds"] = round(time.monotonic() - dump_started, 3)
            except DockerAPIError as exc:
                if exc.status is None:
                    raise DumpInDoubt(
                        f"the Docker Engine did not answer the checkpoint of {result['container']} ({exc}); the daemon "
                        f"may still be dumping it into {path}. Nothing was cleaned up: check `docker checkpoint ls` "
                        "and the container, or raise timeout for large containers.") from exc
                raise OpError(self._criu_error(f"checkpoint of {result['container']} failed", str(exc), since)) from exc
        if not stop:
            return method
        watched = method == "containerd" and main[1] is not None
        if watched and procs.wait_gone(main[0], main[1], seconds=10):
            # containerd's dump with exit has ended the processes: stopped. Docker records the exit a moment later
            # (see settled); waiting for it here cost every checkpoint ~0.15 s.
            return method
        state = self._wait_state(cid, running=False, seconds=0 if watched else 10)  # still alive after 10 s: running
        if not state.get("Running"):
            return method
        # Docker left it running: a container live-restored across a daemon restart (its runc options are lost).
        shutil.rmtree(path, ignore_errors=True)
        task = self.ctx.containerd
        why = task.check(cid, state.get("Pid")) if task else "ctr (containerd's client) is not installed"
        if method == "containerd" or why:
            raise OpError(
                f"container {result['container']} is still running after a stopping checkpoint through {method}, "
                "so the checkpoint was discarded (nothing is reported stopped that still runs). This happens to "
                "containers kept alive across a Docker daemon restart (live-restore). "
                + (f"The containerd path cannot be used: {why}. " if why else "")
                + "Remedy: install containerd's ctr and use method=auto, or restart the container once "
                "(`docker restart`) before checkpointing it."
            )
        result["warnings"].append(
            f"Docker's checkpoint API left {result['container']} running (it was live-restored across a daemon "
            "restart); the checkpoint was redone through containerd's task API, which stops it"
        )
        result["live_restored"] = True
        result.pop("method_reason", None)
        self._dump_containerd(cid, path, True, since, result)
        state = self._wait_state(cid, running=False, seconds=10)
        if state.get("Running"):
            shutil.rmtree(path, ignore_errors=True)
            raise OpError(f"container {result['container']} is still running after the containerd checkpoint with "
                          "exit; the checkpoint was discarded. Restart the container and try again.")
        return "containerd"

    def _dump_containerd(self, cid, path, stop, since, result):
        dump_started = time.monotonic()
        rc, out, err, client = self.ctx.containerd.checkpoint(cid, path, stop, timeout=self.opts["timeout"])
        result["dump_call_seconds"] = round(time.monotonic() - dump_started, 3)
        if client:
            result["containerd_client"] = client
        if rc == 124:
            raise DumpInDoubt(f"containerd did not finish the checkpoint within timeout={self.opts['timeout']}s; it "
                              f"may still be dumping into {path}. Nothing was cleaned up: check the container and "
                              "`docker checkpoint ls`, or raise timeout for large containers.")
        if rc == 125:
            raise DumpInDoubt(f"{err}. containerd may still be dumping into {path}, or may have finished. Nothing was "
                              "cleaned up: check the container and `docker checkpoint ls` before running again.")
        if rc != 0:
            shutil.rmtree(path, ignore_errors=True)
            raise OpError(self._criu_error("checkpoint through containerd failed", err or out, since))

    def _prune(self, cid, now):
        keep_last, max_age = self.opts.get("keep_last"), self.opts.get("max_age_seconds")
        if keep_last is None and max_age is None:
            return []
        existing = store.list_checkpoints(self.ctx.root_dir, cid)
        pruned = store.select_pruned(existing, self.name, keep_last=keep_last, max_age=max_age, now=now)
        for name in pruned:
            self.api.delete(f"/containers/{cid}/checkpoints/{name}")
            pages.put_back(store.checkpoint_dir(self.ctx.root_dir, cid, name))  # pages left aside by a killed run
        return pruned

    # -- absent ----------------------------------------------------------------------------------------------------
    def absent(self, ref):
        inspect = self.settled(self.inspect(ref))
        cid = inspect["Id"]
        result = self._result(inspect)
        path = self._path(cid)
        if not os.path.isdir(path):
            return result
        metadata = store.read_metadata(path)
        result.update(changed=True, action="removed", path=path)
        recorded = metadata.get("restart_policy")
        running = (inspect.get("State") or {}).get("Running")
        if recorded and not _is_no(recorded) and not running and _is_no(_policy(inspect)):
            result["warnings"].append(
                f"{result['container']} is stopped with restart policy 'no' since this checkpoint; its recorded "
                f"policy {recorded['Name']!r} is not put back (a restore would have). Set it with "
                "`docker update --restart` if the container should start again at boot"
            )
        if self.ctx.check_mode:
            return result
        self.api.delete(f"/containers/{cid}/checkpoints/{self.name}")
        in_doubt = os.path.join(os.path.dirname(path), f".{self.name}.fleet-in-doubt")
        if os.path.exists(in_doubt):
            os.unlink(in_doubt)
        return result

    # -- restored --------------------------------------------------------------------------------------------------
    def restored(self, ref):
        self._local.created = False
        if self.opts.get("receive"):
            if self.ctx.check_mode:
                return stream_ops.predict_receive(self, ref)
            received = stream_ops.receive_checkpoint(self, ref)
            source = received.pop("inspect")
        else:
            received = None
            source = self.inspect_or_create(ref)
        target = self.inspect(self.opts["target"]) if self.opts.get("target") else source
        target = self.settled(target)
        tid = target["Id"]
        result = self._result(target)
        result["source"] = (source.get("Name") or "").lstrip("/")
        src_path = self._path(source["Id"])
        path = self._path(tid)
        result["path"] = path
        state = target.get("State") or {}
        running = bool(state.get("Running"))
        result["was_running"] = running
        archive = self._archive_for(result["container"]) if self.opts.get("archive_mode") else None
        if running and not self.opts["force"]:
            failed = store.read_metadata(path).get("failed_restore") or {}
            if failed.get("started_at") and failed.get("started_at") == state.get("StartedAt"):
                raise OpError(f"{result['container']} runs since a restore that did not resume from the checkpoint "
                              f"({failed.get('reason')}): its memory state is not the checkpoint's. Use force=true to "
                              "stop it and restore again")
            if tid == source["Id"] and not archive:
                result["msg"] = "already running; use force=true to stop it and restore from the checkpoint"
                return result
            last = store.read_metadata(path).get("last_restore") or {}
            if last.get("started_at") and last.get("started_at") == state.get("StartedAt"):
                result["msg"] = "already running from this checkpoint"
                result["resumed"] = True
                return result
            raise OpError(f"target container {result['container']} is already running: a restore needs a stopped "
                          "container (stop it, or use force=true to stop it and restore)")
        if archive:
            import_started = time.monotonic()
            imported = self.imported(result["container"], _inspect=target)
            result["imported"] = imported["changed"]
            if imported["changed"] and not self.ctx.check_mode:
                result["import_seconds"] = round(time.monotonic() - import_started, 3)
            src_path = path
        elif received:
            result["received"] = received
            result["import_seconds"] = received["seconds"]
        elif not os.path.isdir(src_path):
            available = self._other_checkpoints(source["Id"])
            raise OpError(f"checkpoint {self.name!r} not found for container {result['source']}"
                          + (f" (it has: {', '.join(available)})" if available else " (it has none)"))
        if not (archive or received):  # an imported archive or a received stream was just checked
            self._check_intact(src_path, store.read_metadata(src_path), result["source"])
        result["changed"] = True
        result["action"] = "restored"
        orphans = {} if running else shims.lingering_shims(tid)
        if orphans:
            result["warnings"].append(
                f"{result['container']}: a copy Docker does not know of was running (containerd shim "
                f"{', '.join(map(str, orphans))}, left by a restore the Docker daemon was killed in the middle of)"
                + ("; it would be stopped before the restore" if self.ctx.check_mode else "; stopped it first"))
        if self.ctx.check_mode:
            return result
        if orphans:
            alive = shims.stop_shims(orphans)
            if alive:
                raise OpError(f"{result['container']}: the copy Docker does not know of (pids "
                              f"{', '.join(map(str, alive))}) could not be stopped, so it was not restored again: "
                              "kill those processes, then run the restore again")
        started = time.time()
        if running:
            # Its current state is being replaced by the checkpoint's: a short grace period is enough.
            self.api.post(f"/containers/{tid}/stop", t=3, timeout=self.opts["timeout"])
        if src_path != path:
            if os.path.isdir(path) and _images(path) != _images(src_path):
                shutil.rmtree(path)  # an older copy: the source's checkpoint was made again since
            if not os.path.isdir(path):
                store.copy_checkpoint(src_path, path)
                result["copied_from"] = src_path
        metadata = store.read_metadata(path)
        metadata.pop("failed_restore", None)
        try:
            self._start_linked(tid, path, result, started)
        except OpError as exc:
            if running:
                result["modified"] = True
                raise OpError(f"{exc}. {result['container']} was running before and force=true stopped it for the "
                              "restore: it is stopped now") from exc
            raise
        state = self._wait_state(tid, running=True, seconds=5)
        result["resumed_at"] = round(time.time(), 3)
        if not state.get("Running"):
            result.pop("resumed_at")
            raise OpError(self._criu_error(f"{result['container']} stopped right after its restore (exit code "
                                           f"{state.get('ExitCode')})", state.get("Error") or "", started))
        try:
            self._verify(tid, state, metadata, result)
        except OpError as exc:
            result["modified"] = True
            self._put_back_policy(tid, metadata, result)
            metadata["failed_restore"] = {"started_at": state.get("StartedAt"), "at": time.time(), "reason": str(exc)}
            store.write_metadata(path, metadata)
            raise
        self._put_back_policy(tid, metadata, result)
        result["started_at"] = state.get("StartedAt")
        metadata["last_restore"] = {"started_at": state.get("StartedAt"), "at": time.time()}
        store.write_metadata(path, metadata)
        result["pruned"] = self._prune(tid, time.time())
        result["duration"] = round(time.time() - started, 3)
        return result

    def _check_intact(self, path, metadata, container, actual=None):
        try:
            problems = _damage(metadata, _images(path) if actual is None else actual)
        except ArchiveError as exc:
            problems = [str(exc)]
        if problems:
            raise OpError(f"checkpoint {self.name!r} of {container} is damaged since its dump, so it was not used: "
                          f"{'; '.join(problems[:5])}. Its files changed on disk (disk fault, full disk or tampering): "
                          "restore an older checkpoint, or start the container afresh")

    def _put_back_policy(self, tid, metadata, result):
        recorded = metadata.get("restart_policy")
        current = _policy(self.inspect(tid))
        if isinstance(recorded, dict) and recorded.get("Name") != current.get("Name"):
            self._set_policy(tid, recorded)
            result["restart_policy_restored"] = recorded

    def _start_linked(self, tid, path, result, since):
        """Restore with the pages linked (see _linked_pages), unless method=api; method=auto falls back to Docker's
        own copy when that restore fails (Docker leaves the container stopped after a failed restore)."""
        linked = []
        if self.opts["method"] != "api":
            if pages.auto_dedup():
                result["warnings"].append(f"{result['container']}: CRIU is configured with auto-dedup, which would "
                                          "punch holes in the checkpoint's own pages through links; Docker copies them")
            else:
                try:
                    linked = pages.link(path)  # undoes itself when it fails
                except OSError as exc:
                    result["warnings"].append(f"{result['container']}: the pages could not be linked for the fast "
                                              f"restore ({exc}); Docker copies them instead")
        if not linked:
            result["restore_path"] = "copied"
            self._start_copied(tid, path, result, since)
            return
        first = None
        try:
            self._start_from_checkpoint(tid, result, since)
        except DaemonUnavailable:
            # Docker may still be restoring through the links: they stay, the next operation on this checkpoint
            # puts the pages back.
            raise
        except OpError as exc:
            first = exc
        self._unlink_pages(path, result)
        if first is None:
            result["restore_path"] = "linked"
            return
        if self.opts["method"] == "containerd" or (self.inspect(tid).get("State") or {}).get("Running"):
            raise first
        result["warnings"].append(f"{result['container']}: the restore with linked pages failed ({first}); restored "
                                  "through Docker's own copy instead")
        result["restore_path"] = "copied"
        self._start_copied(tid, path, result, since)

    def _start_copied(self, tid, path, result, since):
        """Docker's own restore (it copies the checkpoint); then containerd's unpacked copy of it, which containerd
        never removes (a whole checkpoint in /tmp per restore), is removed."""
        try:
            self._start_from_checkpoint(tid, result, since)
        except DaemonUnavailable:
            raise  # Docker may still be restoring from its copy: it stays
        except OpError:
            self._drop_copies(path)
            raise
        self._drop_copies(path)

    @staticmethod
    def _drop_copies(path):
        try:
            for leftover in pages.copies(pages.containerd_temp_dirs(), path, unchecked=(store.METADATA_NAME,)):
                shutil.rmtree(leftover, ignore_errors=True)
        except OSError:
            pass

    def _unlink_pages(self, path, result):
        """After a linked restore: remove containerd's unpacked copy (links, by now) and put the pages back."""
        try:
            for leftover in pages.leftovers(pages.containerd_temp_dirs(), pages.side_dir(path)):
                shutil.rmtree(leftover, ignore_errors=True)
            pages.put_back(path)
        except OSError as exc:
            result["warnings"].append(f"{result['container']}: the pages of {path} could not be put back in place "
                                      f"({exc}); the next operation on this checkpoint tries again")

    def _start_from_checkpoint(self, tid, result, since):
        for attempt in (1, 2):
            call_started = time.monotonic()
            try:
                self.api.post(f"/containers/{tid}/start", timeout=self.opts["timeout"], checkpoint=self.name)
                return
            except DockerAPIError as exc:
                if exc.status is None:
                    raise DaemonUnavailable(f"the Docker daemon did not answer during the restore of "
                                            f"{result['container']} ({exc}): run the restore again once it is up") from exc
                if attempt == 1 and "already exists" in str(exc):
                    # Moby's known trap (LAB-FACTS): the checkpoint's blob, byte for byte the same, is still in
                    # containerd's content store from an earlier restore, and the upload refuses to commit over it.
                    self._drop_stale_blob(str(exc), result)
                    continue
                raise OpError(self._criu_error(f"restore of {result['container']} failed", str(exc), since)) from exc
            finally:
                result["restore_call_seconds"] = round(result.get("restore_call_seconds", 0)
                                                       + time.monotonic() - call_started, 3)

    def _drop_stale_blob(self, message, result):
        digest = STALE_BLOB.search(message)
        why_not = self.ctx.containerd.remove_content(digest.group(1)) if digest and self.ctx.containerd else \
            "no digest in the message, or ctr is not installed"
        if why_not:
            time.sleep(2)  # containerd's garbage collector may remove it meanwhile
        result["warnings"].append(f"containerd reported {message}; "
                                  + (f"retried after 2s ({why_not})" if why_not else
                                     "removed that stale blob (identical content) and retried"))

    def _verify(self, tid, state, metadata, result):
        if not self.opts["verify"]:
            result["resumed"] = None
            return
        current = procs.process_tree(self._pids(tid))
        init_ns = procs.time_namespace(state.get("Pid"))
        check = procs.compare(metadata.get("processes") or [], current, init_ns, self.ctx.host_time_ns)
        result["processes"] = {"recorded": check["recorded"], "back": check["matched"]}
        if not metadata.get("processes"):
            result["resumed"] = None
            result["warnings"].append("no process tree recorded with this checkpoint (not made by fleet.checkpoint):"
                                      " the restore could not be verified beyond the container running")
            return
        if not check["resumed"]:
            raise OpError(f"{result['container']} is running but did not resume from the checkpoint: "
                          f"{check['reason']}")
        if not (init_ns and self.ctx.host_time_ns):
            result["resumed"] = None
            result["warnings"].append(f"{result['container']}: its processes are back, but time namespaces cannot be "
                                      "read on this host, so a cold start cannot be ruled out")
            return
        result["resumed"] = True

    # -- exported --------------------------------------------------------------------------------------------------
    def _archive_for(self, container_name):
        if self.opts.get("archive_path"):
            return self.opts["archive_path"]
        directory = self.opts["archive_dir"]
        if self.ctx.state in ("imported", "restored"):
            # The encrypted name first when a key is given; either way the other kind is found too, and refused
            # with a message saying why (a key missing, or an unprotected archive where an encrypted one is expected).
            keyed = self.opts.get("secret") is not None
            for encrypted in (keyed, not keyed):
                for compression in ("zstd", "gzip", "none"):
                    candidate = os.path.join(directory, transfer.archive_name(container_name, self.name, compression,
                                                                              encrypted))
                    if os.path.exists(candidate):
                        return candidate
        return os.path.join(directory, transfer.archive_name(container_name, self.name, self.opts["compression"],
                                                             self.opts.get("secret") is not None))

    def manifest(self, inspect, path, metadata, files):
        """The manifest that travels with the checkpoint at path (in an archive or a stream)."""
        metadata = dict(metadata)
        metadata.pop("files", None)  # the manifest lists them
        versions = metadata.get("versions") or dict(self.ctx.versions)
        manifest = build(self.name, inspect, files, versions, metadata.get("method") or "api",
                         metadata.get("created") or os.path.getmtime(path))
        if metadata.get("restart_policy"):
            manifest["container"]["restart_policy"] = metadata["restart_policy"]
        manifest["metadata"] = metadata
        return manifest

    def exported(self, ref):
        inspect = self.inspect(ref)
        cid = inspect["Id"]
        result = self._result(inspect)
        path = self._path(cid)
        if not os.path.isdir(path):
            available = self._other_checkpoints(cid)
            raise OpError(f"checkpoint {self.name!r} not found for container {result['container']}"
                          + (f" (it has: {', '.join(available)})" if available else " (it has none)"))
        archive = self._archive_for(result["container"])
        result["archive"] = archive
        try:
            files = _images(path)
        except ArchiveError as exc:
            raise OpError(f"checkpoint {path} cannot be archived: {exc}") from exc
        if os.path.exists(archive):
            try:
                with transfer.Tarball(archive, self.ctx.run, self.ctx.zstd, os.path.dirname(archive),
                                      self.opts.get("secret")) as tar_path:
                    existing = transfer.read_manifest(tar_path)
            except (ArchiveError, ManifestError, OSError) as exc:
                if not self.opts["force"]:
                    raise OpError(f"{archive} exists and is not a readable fleet.checkpoint archive ({exc}): move it "
                                  "away or use force=true to overwrite it") from exc
                existing = None
            if existing and existing["checkpoint"] == self.name and existing["files"] == files:
                result["size"] = os.path.getsize(archive)
                return result
        result.update(changed=True, action="exported")
        if self.ctx.check_mode:
            return result
        metadata = store.read_metadata(path)
        self._check_intact(path, metadata, result["container"], actual=files)
        manifest = self.manifest(inspect, path, metadata, files)
        started = time.time()
        try:
            result["sha256"] = transfer.write_archive(path, manifest, archive, self.opts["compression"],
                                                      self.ctx.run, self.ctx.zstd, self.opts.get("secret"))
            result["encrypted"] = self.opts.get("secret") is not None
        except (ArchiveError, OSError) as exc:
            raise OpError(f"writing {archive} failed: {exc}") from exc
        result["size"] = os.path.getsize(archive)
        result["duration"] = round(time.time() - started, 3)
        return result

    # -- imported --------------------------------------------------------------------------------------------------
    def imported(self, ref, _inspect=None):
        if _inspect is None:
            self._local.created = False
        inspect = _inspect or self.inspect_or_create(ref)
        cid = inspect["Id"]
        result = self._result(inspect)
        path = self._path(cid)
        archive = self._archive_for(result["container"])
        result.update(archive=archive, path=path)
        try:
            with transfer.Tarball(archive, self.ctx.run, self.ctx.zstd, os.path.dirname(os.path.abspath(archive)),
                                  self.opts.get("secret")) \
                    as tar_path:
                manifest = transfer.read_manifest(tar_path)
                result["manifest"] = {key: manifest[key] for key in ("checkpoint", "created", "method", "size",
                                                                     "versions")}
                # The environment usually holds secrets: its names only (the archive keeps the values).
                shown = dict(manifest["container"])
                shown["env"] = [str(item).split("=", 1)[0] for item in shown.get("env") or []]
                result["manifest"]["container"] = shown
                if manifest["checkpoint"] != self.name:
                    result["warnings"].append(f"{archive} holds checkpoint {manifest['checkpoint']!r}; it is placed "
                                              f"as {self.name!r}")
                image = (manifest["container"].get("image") or {}).get("id")
                if image and inspect.get("Image") and image != inspect.get("Image"):
                    result["warnings"].append(f"{result['container']} runs image {inspect.get('Image')}, the "
                                              f"checkpoint was made from {image}: the restore may fail")
                if os.path.isdir(path):
                    if _images(path) == manifest["files"]:
                        return result
                    if not self.opts["force"]:
                        raise OpError(f"container {result['container']} already has a checkpoint {self.name!r} "
                                      f"that differs from {archive}: use force=true to replace it, or another name")
                result.update(changed=True, action="imported")
                if self.ctx.check_mode:
                    problems = transfer.verify_stream(tar_path, manifest)
                    if problems:
                        raise OpError(f"{archive} fails its checksums: {'; '.join(problems[:5])}")
                    return result
                self._unpack(tar_path, manifest, path, archive)
        except (ArchiveError, ManifestError) as exc:
            raise OpError(f"{archive}: {exc}") from exc
        return result

    def _unpack(self, tar_path, manifest, path, archive):
        parent = os.path.dirname(path)
        created_parent = not os.path.isdir(parent)
        store.ensure_private_dir(parent)
        tmp = os.path.join(parent, f".{self.name}.fleet-import")
        shutil.rmtree(tmp, ignore_errors=True)
        done = False
        try:
            problems = transfer.check_members(tar_path, manifest)
            if problems:
                raise OpError(f"{archive} does not match its manifest, nothing imported: {'; '.join(problems[:5])}")
            safe_extract(tar_path, tmp)
            os.remove(os.path.join(tmp, transfer.MANIFEST_NAME))
            problems = verify_inventory(tmp, manifest["files"])
            if problems:
                raise OpError(f"{archive} fails its checksums, nothing imported: {'; '.join(problems[:5])}")
            self.install(tmp, manifest, path, archive)
            done = True
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if created_parent and not done:
                shutil.rmtree(parent, ignore_errors=True)

    def install(self, tmp, manifest, path, source):
        """Put a checked, unpacked checkpoint (tmp, beside path) in place, with its metadata from the manifest."""
        metadata = dict(manifest.get("metadata") or {})
        metadata.setdefault("format", store.METADATA_FORMAT)
        metadata.setdefault("restart_policy", manifest["container"]["restart_policy"])
        metadata.setdefault("method", manifest["method"])
        metadata.setdefault("created", manifest.get("created"))
        metadata.pop("last_restore", None)
        metadata["files"] = manifest["files"]
        metadata["imported"] = {"from": source, "at": time.time()}
        store.write_metadata(tmp, metadata)
        store.secure_tree(tmp)
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.rename(tmp, path)
