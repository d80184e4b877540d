# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint's options: the rules between them that Ansible cannot declare (they depend on values, or name
the fix), checked before anything is touched; and each operation with the options it reads.

The rules Ansible can declare are in MUTUALLY_EXCLUSIVE, given to AnsibleModule by the module.
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.names import (
    rename_problems,
    validate_checkpoint_name,
    validate_container_ref,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.retention import Retention, parse_age
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.container_create import HostAccess

# Each operation's own code is imported when the run asks for it (operation(), the *_options_of functions): a module
# run on a host compiles what it imports from the AnsiballZ zip every time, and one operation needs a part of it.
if TYPE_CHECKING:  # pragma: no cover
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import dump, receive, restore
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.archive import ArchiveOptions

MUTUALLY_EXCLUSIVE = [("container", "containers"), ("archive_path", "archive_dir"),
                      ("encryption_key", "encryption_key_file")]

Operation = Callable[[HostContext, str], Result]  # one container's operation: (host, container reference) -> result


def check_options(params: Mapping[str, Any]) -> list[str]:
    """Every input problem the module can see before touching anything, as a list of messages."""
    errors: list[str] = []
    state = params["state"]
    from_manifest = state == "restored" and params["manifest_path"]
    if params["name"] is None and not from_manifest:
        errors.append("name is required (the checkpoint's name), except for state=restored with manifest_path")
    elif params["name"] is not None:
        try:
            validate_checkpoint_name(params["name"])
        except ValueError as exc:
            errors.append(str(exc))
    if params["manifest_path"] and state not in ("present", "restored"):
        errors.append("manifest_path is used only with state=present (written) or state=restored (read)")
    if params.get("release_run_lock") is not None and (not from_manifest or not params["release_run_lock"].strip()):
        errors.append("release_run_lock (the id of the run holding the host's run lock) is used only with "
                      "state=restored and manifest_path, and must not be empty")
    if params["fallback"] != "fail" and not from_manifest:
        errors.append("fallback is used only with state=restored and manifest_path (the manifest records what to "
                      "cold-start and with which restart policy)")
    for ref in ([params["container"]] if params["container"] is not None else []) + (params["containers"] or []) \
            + (params["exclude"] or []) + ([params["target"]] if params["target"] is not None else []):
        try:
            validate_container_ref(ref)
        except ValueError as exc:
            errors.append(str(exc))
    # container and containers are declared mutually exclusive (MUTUALLY_EXCLUSIVE); all_running=false means unset,
    # which Ansible's rules cannot say.
    selectors = [key for key in ("container", "containers") if params[key] is not None]
    selectors += ["all_running=true"] if params["all_running"] else []
    if from_manifest and selectors:
        errors.append(f"{', '.join(selectors)} cannot be combined with manifest_path for state=restored: the manifest "
                      "says which containers to restore")
    elif not selectors and not from_manifest:
        errors.append("no container selected: give container, containers, or all_running=true")
    elif params["all_running"] and len(selectors) > 1:
        errors.append(f"{' and '.join(selectors)} are mutually exclusive: select containers one way")
    if params["containers"] is not None and not params["containers"]:
        errors.append("containers is an empty list: name at least one container, or use all_running=true")
    single = params["container"] is not None
    if params["target"] is not None and (state != "restored" or not single):
        errors.append("target is used only with state=restored and a single container")
    if params["archive_path"] and not single:
        errors.append("archive_path is for one container; use archive_dir for several")
    for key in ("archive_path", "archive_dir", "manifest_path"):
        if params[key] and not os.path.isabs(params[key]):
            errors.append(f"{key} must be an absolute path on the managed host, not {params[key]!r} (a relative one "
                          "would depend on the directory the module happens to run in)")
    if state in ("exported", "imported") and not (params["archive_path"] or params["archive_dir"]):
        errors.append(f"state={state} needs archive_path (one container) or archive_dir")
    if (params["archive_path"] or params["archive_dir"]) and state not in ("exported", "imported", "restored"):
        errors.append("archive_path and archive_dir are used only with state=exported, imported or restored")
    errors.extend(stream_option_errors(params))
    if params["create"] and not (state in ("imported", "restored") and (params["archive_path"] or params["archive_dir"])):
        errors.append("create is used only with state=imported or restored from an archive (archive_path or "
                      "archive_dir): the archive's manifest describes the container to create")
    if params["target"] is not None and (params["archive_path"] or params["archive_dir"]):
        errors.append("target cannot be combined with an archive: import the archive into the target container "
                      "itself (container=<target>)")
    if params.get("archive_layout", "fleet") != "fleet":
        if state != "exported":
            errors.append("archive_layout=podman is used only with state=exported (an archive in Podman's layout is "
                          "for checkpointctl; state=imported reads archive_layout=fleet)")
        if params.get("encryption_key") is not None or params.get("encryption_key_file"):
            errors.append("archive_layout=podman cannot be encrypted: checkpointctl reads plain archives. Leave out "
                          "the encryption key, or use archive_layout=fleet")
    if (params.get("encryption_key") is not None or params.get("encryption_key_file")) \
            and not (params["archive_path"] or params["archive_dir"]):
        errors.append("encryption_key and encryption_key_file are used only with an archive (state=exported, imported "
                      "or restored with archive_path or archive_dir)")
    if params["leave_running"] and state != "present":
        errors.append("leave_running is used only with state=present")
    for key in ("keep_last", "max_age"):
        if params[key] is not None and state not in ("present", "restored"):
            errors.append(f"{key} is used only with state=present or restored (pruning after success)")
    if params["keep_last"] is not None and params["keep_last"] < 1:
        errors.append(f"keep_last must be 1 or more (the new checkpoint counts), not {params['keep_last']}")
    if params["max_age"] is not None:
        try:
            parse_age(params["max_age"])
        except ValueError as exc:
            errors.append(str(exc))
    from_archive = bool(params["archive_dir"] or params["archive_path"])
    if params["all_running"] and (state == "imported" or (state == "restored" and from_archive)):
        errors.append("all_running selects containers that already have the checkpoint, so it cannot import: name the "
                      "containers to import into with container or containers")
    if (params["filters"] or params["exclude"]) and not params["all_running"]:
        errors.append("filters and exclude are used only with all_running=true")
    errors += filter_errors(params["filters"] or {})
    if params["parallel"] is not None and params["parallel"] < 1:
        errors.append(f"parallel must be 1 or more, not {params['parallel']}")
    if params["lock_timeout"] < 0:
        errors.append(f"lock_timeout must be 0 or more seconds, not {params['lock_timeout']}")
    if params["timeout"] < 1 or params["api_timeout"] < 1:
        errors.append("timeout and api_timeout must be 1 second or more")
    if params["archive_dir"] and os.path.exists(params["archive_dir"]) and not os.path.isdir(params["archive_dir"]):
        errors.append(f"archive_dir {params['archive_dir']} exists and is not a directory")
    errors.extend(group_option_errors(params))
    if params["archive_path"] and os.path.isdir(params["archive_path"]):
        errors.append(f"archive_path {params['archive_path']} is a directory: give a file name, or use archive_dir")
    if state in ("imported",) and params["archive_path"] and not os.path.exists(params["archive_path"]):
        errors.append(f"archive_path {params['archive_path']} does not exist on the managed host")
    return errors


def group_option_errors(params: Mapping[str, Any]) -> list[str]:
    """Problems with consistent=true (a group checkpointed at one instant and restored together)."""
    errors: list[str] = []
    if params.get("barrier_dir") is not None:
        if not params.get("consistent"):
            errors.append("barrier_dir is used only with consistent=true (a group across hosts)")
        if not os.path.isabs(params["barrier_dir"]):
            errors.append(f"barrier_dir must be an absolute path on the managed host, not {params['barrier_dir']!r}")
    if params.get("barrier_timeout") is not None and params["barrier_timeout"] < 1:
        errors.append(f"barrier_timeout must be 1 second or more, not {params['barrier_timeout']}")
    if not params.get("consistent"):
        return errors
    if params["state"] not in ("present", "restored"):
        errors.append("consistent is used only with state=present (checkpoint a group at one instant) or "
                      "state=restored (restore it together)")
    others = [key for key in ("archive_path", "target") if params.get(key) is not None]
    if params.get("archive_dir") is not None and params.get("receive_timeout") is None:
        others.append("archive_dir")
    if others:
        errors.append(f"consistent=true cannot be combined with {', '.join(others)}: a group is checkpointed and "
                      "restored in place, or moved with send_to and receive_timeout (the migrate playbook's "
                      "fleet_checkpoint_migrate_consistent)")
    send_to = params.get("send_to") or {}
    if send_to.get("lazy") or send_to.get("memory_rounds"):
        errors.append("consistent=true moves a group stop-and-copy: not with send_to.lazy or send_to.memory_rounds "
                      "(a group's members are frozen together until the last is dumped)")
    if params.get("barrier_dir") is not None and params.get("receive_timeout") is not None:
        errors.append("barrier_dir cannot be combined with receive_timeout: the target of a group moved from several "
                      "hosts receives every member in one call, which needs no barrier")
    if params.get("barrier_dir") is not None and send_to.get("via") == "relay":
        errors.append("barrier_dir cannot be combined with send_to.via=relay: the controller's relay takes one "
                      "stream at a time, so the hosts of a group spread over several would wait for each other "
                      "frozen; send straight to the target (SSH)")
    return errors


def stream_option_errors(params: Mapping[str, Any]) -> list[str]:
    """Problems with send_to and receive_timeout (a streamed checkpoint's two ends)."""
    errors: list[str] = []
    state = params["state"]
    send_to = params.get("send_to")
    if send_to is not None:
        if state != "present":
            errors.append("send_to is used only with state=present (it sends the checkpoint made or found)")
        if not os.path.isabs(send_to["directory"] or ""):
            errors.append(f"send_to.directory must be an absolute path on the target, not {send_to['directory']!r}")
        if send_to.get("ready_timeout") is not None and send_to["ready_timeout"] < 1:
            errors.append(f"send_to.ready_timeout must be 1 second or more, not {send_to['ready_timeout']}")
        if not 0 < send_to["port"] < 65536:
            errors.append(f"send_to.port must be 1-65535, not {send_to['port']}")
        if send_to.get("via", "ssh") == "relay":
            if send_to["host"] is not None:
                errors.append("send_to.host is for via=ssh: with via=relay the controller's relay "
                              "(fleet.checkpoint.stream_relay) connects to this host, nothing is dialled from here")
        elif not (send_to["host"] or "").strip() or (send_to["host"] or "").startswith("-") \
                or any(c.isspace() or c == "@" for c in send_to["host"]):
            errors.append(f"send_to.host {send_to['host']!r} is not a host name or address")
        if not (send_to["user"] or "") or send_to["user"].startswith("-") \
                or any(c.isspace() or c == "@" for c in send_to["user"]):
            errors.append(f"send_to.user {send_to['user']!r} is not a user name")
        for key in ("known_hosts_file", "identity_file"):
            if send_to[key] and any(c.isspace() for c in send_to[key]):
                errors.append(f"send_to.{key} {send_to[key]!r}: a path without spaces, please (SSH options split on "
                              "them)")
        if params["leave_running"]:
            errors.append("send_to cannot be combined with leave_running: the target restores what it receives, so "
                          "the container would run on both hosts")
        if send_to.get("lazy"):
            if send_to.get("via", "ssh") != "ssh":
                errors.append("send_to.lazy needs send_to.via=ssh: the memory pages go over a connection of their "
                              "own from this host to the target")
            if send_to.get("writable_layer") or (send_to.get("volumes") or "none") != "none":
                errors.append("send_to.lazy cannot carry disk state yet: use writable_layer=false and volumes=none")
            if params["force"]:
                errors.append("send_to.lazy makes no checkpoint here to replace: force does not apply")
        errors += memory_round_errors(params)
    receive = params.get("receive_timeout")
    if receive is not None:
        if state != "restored" or not params["archive_dir"]:
            errors.append("receive_timeout is used only with state=restored and archive_dir (where the stream is "
                          "received)")
        if receive < 1:
            errors.append(f"receive_timeout must be 1 second or more, not {receive}")
        if params["archive_path"] or params["manifest_path"] or params.get("encryption_key") is not None \
                or params.get("encryption_key_file"):
            errors.append("receive_timeout cannot be combined with archive_path, manifest_path or an encryption key: "
                          "the checkpoint comes as a stream (SSH encrypts it)")
    return errors + rename_errors(params) + allow_errors(params)


def memory_round_errors(params: Mapping[str, Any]) -> list[str]:
    """Problems with send_to.memory_rounds and memory_goal (pre-copy of memory)."""
    send_to = params["send_to"]
    rounds, goal = send_to.get("memory_rounds") or 0, send_to.get("memory_goal")
    errors = []
    if not 0 <= rounds <= 30:
        errors.append(f"send_to.memory_rounds must be from 0 (no pre-copy) to 30, not {rounds}")
    if goal is not None and not 1 <= goal <= 100:
        errors.append(f"send_to.memory_goal is a percentage of the memory (1 to 100), not {goal}")
    if rounds:
        if send_to.get("lazy"):
            errors.append("send_to.memory_rounds (pre-copy) and send_to.lazy (post-copy) are two ways of moving the "
                          "memory: choose one")
        if send_to.get("via", "ssh") != "ssh":
            errors.append("send_to.memory_rounds needs send_to.via=ssh for now: the rounds go straight to the target")
        if send_to.get("writable_layer") or (send_to.get("volumes") or "none") != "none":
            errors.append("send_to.memory_rounds cannot carry disk state yet: use writable_layer=false and "
                          "volumes=none")
        if params["force"]:
            errors.append("send_to.memory_rounds makes a new checkpoint and refuses to replace one: force does not "
                          "apply")
    return errors


def filter_errors(filters: Mapping[str, Any]) -> list[str]:
    """Filter values Docker would not match as meant: each must be a string or a list of strings (a number only for
    `exited`, an exit code). `label: 5` used to select nothing, silently."""
    errors = []
    for key, value in filters.items():
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, str) and item:
                continue
            if key == "exited" and isinstance(item, int) and not isinstance(item, bool):
                continue
            errors.append(f"filters.{key}: {item!r} is not a string (give it as a string, for example "
                          f"{key}: \"{item}\", or a list of strings)")
    return errors


def allow_errors(params: Mapping[str, Any]) -> list[str]:
    """Problems with allow_bind_mounts (absolute paths) and allow_network_modes (used with create)."""
    errors = [f"allow_bind_mounts: {path!r} is not an absolute path" for path in params.get("allow_bind_mounts") or []
              if not str(path).startswith("/")]
    if (params.get("allow_bind_mounts") or params.get("allow_network_modes")) and not params.get("create"):
        errors.append("allow_bind_mounts and allow_network_modes are used only with create=true: they say what of "
                      "this host a container created from an archive's or a stream's manifest may reach")
    return errors


def rename_errors(params: Mapping[str, Any]) -> list[str]:
    """Problems with rename (a received container's name here, by its name on the sending host)."""
    rename = params.get("rename") or {}
    if not rename:
        return []
    errors: list[str] = []
    if params.get("receive_timeout") is None or not params.get("create"):
        errors.append("rename is used only when receiving with create=true (state=restored, archive_dir, "
                      "receive_timeout): it names the container the stream creates here")
    named = [params["container"]] if params.get("container") else list(params.get("containers") or [])
    return errors + rename_problems(rename, [ref.lstrip("/") for ref in named])


def operation(params: Mapping[str, Any], name: str, secret: bytes | None) -> Operation:
    """The operation the module's state asks for, with the options it reads (`name`: the checkpoint's name, from the
    host manifest for a restore that reads one; `secret`: the encryption key as bytes)."""
    # pylint: disable=import-outside-toplevel
    state = params["state"]
    allowed = _allowed(params)
    archive = None
    if (params["archive_path"] or params["archive_dir"]) and params["receive_timeout"] is None:
        from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.archive import ArchiveOptions

        archive = ArchiveOptions(params["archive_path"], params["archive_dir"], params["compression"], secret,
                                 params.get("archive_layout") or "fleet")
    if state == "present":
        dump_options = dump_options_of(params, name)
        if params["send_to"] and params["send_to"].get("lazy"):
            from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import lazy_send

            return functools.partial(lazy_send.send_lazily, name=name, send_to=params["send_to"],
                                     timeout=params["timeout"])
        if params["send_to"] and params["send_to"].get("memory_rounds"):
            from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import precopy_send

            return functools.partial(precopy_send.send_precopied, name=name, send_to=params["send_to"],
                                     timeout=params["timeout"])
        if params["send_to"]:
            from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import send

            return functools.partial(send.present_and_send, opts=dump_options, send_to=params["send_to"])
        from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import dump

        return functools.partial(dump.present, opts=dump_options)
    if state == "absent":
        from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import remove

        return functools.partial(remove.absent, name=name)
    if state in ("exported", "imported"):
        if archive is None:  # not reached: check_options requires one
            raise ValueError(f"state={state} needs archive_path or archive_dir")
        if state == "exported":
            from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import export

            return functools.partial(export.exported, name=name, where=archive, force=params["force"])
        from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import import_

        importing = import_.ImportOptions(name, archive, force=params["force"], create=params["create"],
                                          allowed=allowed)
        return functools.partial(import_.imported, opts=importing)
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import restore

    return functools.partial(restore.restored, opts=restore_options_of(params, name, archive,
                                                                       receive_options_of(params, name)))


def receive_options_of(params: Mapping[str, Any], name: str) -> receive.ReceiveOptions | None:
    """What a receive (state=restored with receive_timeout) reads; None without receive_timeout."""
    if params.get("receive_timeout") is None:
        return None
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import receive

    return receive.ReceiveOptions(name, params["archive_dir"], params["receive_timeout"], force=params["force"],
                                  create=params["create"], rename=dict(params.get("rename") or {}),
                                  allowed=_allowed(params))


def _retention(params: Mapping[str, Any]) -> Retention:
    return Retention(params["keep_last"], parse_age(params["max_age"]) if params["max_age"] else None)


def _allowed(params: Mapping[str, Any]) -> HostAccess:
    return HostAccess(tuple(params.get("allow_bind_mounts") or ()), tuple(params.get("allow_network_modes") or ()))


def dump_options_of(params: Mapping[str, Any], name: str) -> dump.DumpOptions:
    """What state=present's dump reads."""
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import dump

    return dump.DumpOptions(name, leave_running=params["leave_running"], force=params["force"],
                            method=params["method"], timeout=params["timeout"],
                            in_manifest=bool(params["manifest_path"]), retention=_retention(params))


def restore_options_of(params: Mapping[str, Any], name: str, archive: ArchiveOptions | None = None,
                       receiving: receive.ReceiveOptions | None = None) -> restore.RestoreOptions:
    """What state=restored reads."""
    # pylint: disable-next=import-outside-toplevel
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import restore

    return restore.RestoreOptions(
        name, force=params["force"], method=params["method"], timeout=params["timeout"], verify=params["verify"],
        target=params["target"], archive=archive, create=params["create"], receive=receiving,
        retention=_retention(params), allowed=_allowed(params))
