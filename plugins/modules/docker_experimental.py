#!/usr/bin/python
# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_experimental
short_description: Turn Docker's experimental mode on or off safely, without stopping running containers
version_added: 0.1.0
description:
  - 'Docker serves its checkpoint API only when C("experimental": true) is in C(daemon.json), and dockerd reads that
    setting only when it starts. This module edits C(daemon.json) and restarts dockerd so that the running daemon has
    the wanted mode, without an outage.'
  - C(daemon.json) is edited in place; every other key keeps its position, value and type. A missing file (and its
    directory) is created; an empty file counts as C({}). Invalid JSON, duplicate keys or a top level that is not an
    object fail the module and leave the file untouched. A symlinked O(path) is followed. Writes are atomic and keep
    the file's mode and owner.
  - 'Before anything is written, the module reads how dockerd is started (the systemd unit with its drop-ins and the
    environment files it reads, such as C(/etc/default/docker); C(/etc/default/docker) and C(/etc/sysconfig/docker)
    without systemd). A setting given both as a dockerd flag and in C(daemon.json) makes dockerd refuse to start, and
    C(--config-file) pointing elsewhere makes C(daemon.json) irrelevant: both fail the module, naming the flag and the
    file it comes from, with C(daemon.json) unchanged.'
  - The new content is checked with C(dockerd --validate) where the installed dockerd supports it (Docker 23 and later).
  - "With O(restart=if_safe) and containers running while live-restore is off, the module first adds
    C(\"live-restore\": true) and reloads dockerd (live-restore is reloadable), then restarts dockerd: the containers
    keep running with the same processes. With O(live_restore=keep), the extra key is taken out of the file again;
    a reload does not change keys absent from the file, so the running daemon keeps live-restore on until its next
    restart (RV(live_restore) reports it)."
  - If dockerd does not come back healthy within O(timeout), the previous C(daemon.json) is put back, dockerd is
    restarted again, and the module fails with the daemon's own error lines. daemon.json ends as it began and dockerd
    runs again (with live-restore on until its next restart when containers had to be kept running).
  - B(Caution:) a container kept running across a daemon restart this way (live-restored) cannot be stopped by
    Docker's own checkpoint API afterwards; C(docker checkpoint create) reports success and leaves it running. Such
    containers are returned in RV(live_restored_containers); they must be dumped another way (containerd's task API).
author:
  - fleet.checkpoint maintainers (@fleet-checkpoint)
extends_documentation_fragment:
  - fleet.checkpoint._docker_host
  - fleet.checkpoint._docker_host.attributes
attributes:
  check_mode:
    description: Reports what would change and whether dockerd would be restarted; writes and restarts nothing.
    support: full
  diff_mode:
    description: Shows C(daemon.json) before and after.
    support: full
options:
  state:
    description:
      - 'V(enabled) sets C("experimental": true) in C(daemon.json); V(disabled) removes the key (dockerd''s default is
        off).'
    type: str
    choices: [enabled, disabled]
    default: enabled
  path:
    description:
      - Path of dockerd's configuration file. Must be the file dockerd reads (see C(--config-file)).
    type: path
    default: /etc/docker/daemon.json
  live_restore:
    description:
      - V(true) or V(false) sets C("live-restore") in C(daemon.json) (applied by a reload, no restart needed).
      - V(keep) leaves the setting as it is; with O(restart=if_safe) it may be turned on for the restart only.
      - One of V(true), V(false) (or another boolean) or V(keep).
    type: raw
    default: keep
  restart:
    description:
      - When the running daemon does not have the wanted mode, how to restart it.
      - V(if_safe) restarts only when no running container is lost (live-restore on, or made on for the restart);
        when that is impossible (O(live_restore=false), a swarm node), nothing is restarted and RV(restart_required)
        is returned with a warning.
      - V(always) restarts even if running containers stop.
      - V(never) only edits C(daemon.json) and reports RV(restart_required).
    type: str
    choices: [if_safe, always, never]
    default: if_safe
  backup:
    description:
      - Keep a copy of the previous C(daemon.json) with a timestamped name, returned in RV(backup_file).
    type: bool
    default: false
  validate:
    description:
      - Check the new content with C(dockerd --validate) before writing it, when the installed dockerd supports it.
    type: bool
    default: true
  timeout:
    description:
      - Seconds to wait for dockerd to answer after a reload or restart before rolling back.
    type: int
    default: 60
notes:
  - Restarts go through systemd (C(systemctl restart docker.service)). Without systemd, use O(restart=never) and
    restart dockerd yourself.
  - Needs root on the managed host (use C(become)).
seealso:
  - name: Docker daemon configuration file
    description: Every key of daemon.json.
    link: https://docs.docker.com/reference/cli/dockerd/#daemon-configuration-file
  - name: Live restore
    description: Keep containers alive during daemon downtime.
    link: https://docs.docker.com/engine/daemon/live-restore/
"""

EXAMPLES = r"""
- name: Turn on experimental mode without stopping running containers
  fleet.checkpoint.docker_experimental:
    state: enabled
  become: true

- name: Turn it on, keep live-restore on for good, keep a backup of daemon.json
  fleet.checkpoint.docker_experimental:
    state: enabled
    live_restore: true
    backup: true
  become: true

- name: Only edit daemon.json; restart Docker later in a maintenance window
  fleet.checkpoint.docker_experimental:
    state: enabled
    restart: never
  register: experimental
  become: true

- name: Say which hosts still need a restart
  ansible.builtin.debug:
    msg: "Docker must be restarted on {{ inventory_hostname }}"
  when: experimental.restart_required
"""

RETURN = r"""
daemon_json:
  description: The daemon.json that was read (and written).
  returned: always
  type: str
  sample: /etc/docker/daemon.json
experimental:
  description: The running daemon's experimental mode before and after the task (V(null) when it did not answer).
  returned: always
  type: dict
  sample: {"before": false, "after": true}
live_restore:
  description: The running daemon's live-restore setting before and after the task.
  returned: always
  type: dict
  sample: {"before": false, "after": false}
restart_mode:
  description:
    - How the daemon was (or, in check mode, would be) brought to the wanted mode.
    - V(none) nothing to do; V(skip) restart needed but O(restart=never); V(unsafe) not restarted to keep running
      containers; V(plain) restarted; V(live_restore_first) live-restore reloaded on, then restarted.
  returned: always
  type: str
  sample: live_restore_first
restart_required:
  description: The running daemon still lacks the wanted mode; restart dockerd to apply daemon.json.
  returned: always
  type: bool
  sample: false
restart_reason:
  description: Why dockerd was not restarted although it needs to be.
  returned: when restart_mode is unsafe
  type: str
  sample: 2 container(s) are running and live-restore cannot be used (this host is a swarm node) ...
restarted:
  description: dockerd was (or would be) restarted.
  returned: always
  type: bool
  sample: true
reloaded:
  description: dockerd was (or would be) reloaded (SIGHUP) to apply live-restore.
  returned: always
  type: bool
  sample: true
validated:
  description: The new daemon.json was checked with C(dockerd --validate).
  returned: always
  type: bool
  sample: true
backup_file:
  description: The copy of the previous daemon.json.
  returned: always
  type: str
  sample: /etc/docker/daemon.json.2193.2026-11-23@14:33:01~
docker_version:
  description: The Docker Engine version (after the task).
  returned: always
  type: str
  sample: 26.1.5+dfsg1
containers_kept_running:
  description: Names of the containers that were running before the restart and kept their process.
  returned: always
  type: list
  elements: str
  sample: [web, worker]
containers_stopped:
  description: Names of the containers that were running before the restart and were stopped by it.
  returned: always
  type: list
  elements: str
  sample: []
live_restored_containers:
  description:
    - Containers kept alive across this daemon restart by live-restore. Docker's own checkpoint API cannot stop them
      (it leaves them running silently); dump them another way (containerd's task API).
  returned: always
  type: list
  elements: str
  sample: [web, worker]
conflicts:
  description: dockerd flags that clash with the change, with the file that sets them.
  returned: on failure caused by a conflict
  type: list
  elements: dict
  sample: [{"key": "experimental", "flag": "--experimental", "source": "/etc/systemd/system/docker.service.d/x.conf"}]
journal:
  description: dockerd's own error lines when it did not come back and the change was rolled back.
  returned: on failure after a rollback
  type: list
  elements: str
  sample: ['level=fatal msg="Error starting cluster component: ..."']
"""

import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.parsing.convert_bool import boolean

from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.common_args import docker_host_argument_spec
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.service import DockerService
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.experimental import (
    ExperimentalMode,
    ExperimentalModeError,
)


def argument_spec():
    return {
        "state": {"type": "str", "choices": ["enabled", "disabled"], "default": "enabled"},
        "path": {"type": "path", "default": "/etc/docker/daemon.json"},
        "live_restore": {"type": "raw", "default": "keep"},
        "restart": {"type": "str", "choices": ["if_safe", "always", "never"], "default": "if_safe"},
        "backup": {"type": "bool", "default": False},
        "validate": {"type": "bool", "default": True},
        "timeout": {"type": "int", "default": 60},
        **docker_host_argument_spec(),
    }


def parse_live_restore(value):
    """True, False or 'keep' from what the user wrote."""
    if isinstance(value, str) and value.strip().lower() == "keep":
        return "keep"
    try:
        return boolean(value, strict=True)
    except TypeError:
        raise ValueError(f"live_restore must be true, false or keep, not {value!r}") from None


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    params = dict(module.params)
    try:
        params["live_restore"] = parse_live_restore(params["live_restore"])
    except ValueError as exc:
        module.fail_json(msg=f"{exc}. Nothing was changed.")
    for name in ("timeout", "api_timeout"):
        if params[name] < 1:
            module.fail_json(msg=f"{name} must be at least 1 second, not {params[name]}. Nothing was changed.")

    def run(argv):
        # OSError (no systemctl, no dockerd on this host) reaches the worker, which knows what it means.
        return module.run_command(argv, handle_exceptions=False)

    try:
        api = DockerAPI(params["docker_host"], timeout=params["api_timeout"])
    except ValueError as exc:
        module.fail_json(msg=f"{exc}. Nothing was changed.")
    worker = ExperimentalMode(
        params,
        api=api,
        service=DockerService(run, api, timeout=params["timeout"]),
        run=run,
        check_mode=module.check_mode,
        backup=module.backup_local,
        warn=module.warn,
    )
    try:
        result = worker.run()
    except ExperimentalModeError as exc:
        module.fail_json(msg=str(exc), exception=traceback.format_exc(), **exc.details)
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
