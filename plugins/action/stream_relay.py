# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""fleet.checkpoint.stream_relay: runs on the controller (see plugins/modules/stream_relay.py for its documentation)."""

from __future__ import annotations

from typing import Any

from ansible import constants as C
from ansible.errors import AnsibleActionFail, AnsibleError
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import connection_loader

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.relayed_send import BRIDGE, socket_name
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.stream import RELAY, stream_name
from ansible_collections.fleet.checkpoint.plugins.plugin_utils import _ssh_relay as ssh_relay

ARGUMENT_SPEC = dict(
    source=dict(type="str", required=True),
    target=dict(type="str", required=True),
    checkpoint=dict(type="dict", options=dict(
        container=dict(type="str", required=True),
        name=dict(type="str", required=True),
        directory=dict(type="path", required=True),
        target_directory=dict(type="path"),
        python=dict(type="str", default="python3"),
    )),
    image=dict(type="str"),
    connect_timeout=dict(type="int", default=60),
    timeout=dict(type="int", default=3600),
)


def ssh_options(variables: Any) -> dict[str, tuple[Any, str]]:
    """The ssh connection's options (ssh_relay.SSH_OPTIONS) as Ansible's configuration gives them for a host with
    these variables: ansible.cfg, ANSIBLE_* environment variables, the host's variables; (value, origin) each."""
    plugin = connection_loader.get("ansible.builtin.ssh", class_only=True)  # its options known to the configuration
    found: dict[str, tuple[Any, str]] = {}
    for key in ssh_relay.SSH_OPTIONS:
        try:
            found[key] = C.config.get_config_value_and_origin(key, plugin_type="connection",
                                                              plugin_name=plugin._load_name, variables=variables)
        except AnsibleError:  # an option this ansible-core does not have
            continue
    return found


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False  # it opens its own SSH connections, to source and target

    def run(self, tmp: Any = None, task_vars: dict[str, Any] | None = None) -> dict[str, Any]:
        result = super().run(tmp, task_vars)
        del tmp
        args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, mutually_exclusive=[("checkpoint", "image")],
                                           required_one_of=[("checkpoint", "image")])[1]
        for key in ("connect_timeout", "timeout"):
            if args[key] < 1:
                raise AnsibleActionFail(f"{key} must be 1 second or more, not {args[key]}")
        hostvars = (task_vars or {}).get("hostvars", {})
        ends = {}
        for side in ("source", "target"):
            name = args[side]
            if name not in hostvars:
                raise AnsibleActionFail(f"{side} {name!r} is not a host of the inventory")
            try:
                ends[side] = ssh_relay.login(name, hostvars[name], self._play_context.remote_user,
                                             self._play_context.private_key_file,
                                             bool(C.config.get_config_value("HOST_KEY_CHECKING")),
                                             options=ssh_options(hostvars[name]))
            except ssh_relay.RelayError as exc:
                raise AnsibleActionFail(str(exc)) from exc
        if args["source"] == args["target"]:
            raise AnsibleActionFail(f"source and target are the same host ({args['source']})")
        what = f"image {args['image']}" if args["image"] else \
            f"checkpoint {args['checkpoint']['name']!r} of {args['checkpoint']['container']}"
        result.update(changed=True, source=args["source"], target=args["target"])
        if self._task.check_mode:
            result["msg"] = f"would relay {what} from {args['source']} to {args['target']}"
            return result
        if args["image"]:
            commands = (["docker", "save", args["image"]], ["docker", "load"])
        else:
            spec = args["checkpoint"]
            python, wait = spec["python"], str(args["connect_timeout"])
            commands = (
                [python, "-c", BRIDGE, f"{spec['directory']}/{socket_name(spec['container'], spec['name'])}", wait],
                [python, "-c", RELAY,
                 f"{spec['target_directory'] or spec['directory']}/{stream_name(spec['container'], spec['name'])}",
                 wait])
        try:
            out = ssh_relay.run(ssh_relay.ssh_argv(ends["source"], commands[0]),
                                ssh_relay.ssh_argv(ends["target"], commands[1]), args["timeout"],
                                answers_back=not args["image"])
        except OSError as exc:
            raise AnsibleActionFail(f"cannot run the SSH client on the controller: {exc}") from exc
        result.update(bytes=out["bytes"], seconds=out["seconds"], peak_rss=out["peak_rss"])
        if args["image"]:
            result["loaded"] = out["target_stdout"]
        if out["timed_out"] or out["source_rc"] != 0 or out["target_rc"] != 0:
            result["failed"] = True
            result["msg"] = (f"relaying {what} from {args['source']} to {args['target']} "
                             + (f"did not finish within timeout={args['timeout']}s" if out["timed_out"] else "failed")
                             + f": {args['source']} (exit code {out['source_rc']}): {out['source_stderr'] or '-'}; "
                             f"{args['target']} (exit code {out['target_rc']}): {out['target_stderr'] or '-'}")
        return result
