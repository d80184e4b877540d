#!/usr/bin/python
# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_migration_preflight
short_description: Check both hosts of a container migration before anything stops
version_added: 0.1.0
description:
  - The pre-flight of C(playbooks/migrate.yml), usable on its own. It changes nothing and names every problem at once.
  - With O(side=source), on the host the containers leave, it describes what will move (RV(plan)) - each container's
    configuration as a checkpoint manifest records it, its memory now (about its checkpoint's size), its image and
    the image's size, this host's CRIU, kernel and CPU features (C(criu cpuinfo dump)) - and checks the commands the
    transfer path runs here.
  - With O(side=target), on the host they go to, it checks that plan against this host - the commands the transfer path
    runs here, Docker's experimental mode, CRIU present, new enough for this kernel and at least as new as the
    source's, the kernel not older than the source's, the CPU features the processes may use (C(criu cpuinfo
    check)), each container's name (or its new name, O(rename)) free, its
    published ports free, its user networks and bind-mount sources present, the free disk for the images this
    host lacks, the checkpoints and the disk state, and when disk state travels, overlay2 here and its volumes not
    here yet.
  - Fails listing every problem found (RV(problems)); succeeds with an empty list.
author:
  - fleet.checkpoint maintainers (@fleet-checkpoint)
extends_documentation_fragment:
  - fleet.checkpoint._docker_host
  - fleet.checkpoint._docker_host.attributes
  - fleet.checkpoint._docker_host.info_module
options:
  side:
    description: Which end of the migration this host is.
    type: str
    choices: [source, target]
    required: true
  containers:
    description: The names of the containers that move. Required with O(side=source).
    type: list
    elements: str
  plan:
    description: RV(plan) of the O(side=source) run on the source. Required with O(side=target).
    type: dict
  transfer:
    description:
      - The transfer path, for the commands it runs (V(direct) - C(ssh) and C(scp) on the source, C(python3) on the
        target; V(controller) - C(python3) on both). C(docker) is needed on both in either case.
    type: str
    choices: [direct, controller]
    default: controller
  image:
    description:
      - How the images get to the target - V(load) counts the images the target lacks into the free disk it needs;
        V(pull) does not (the target pulls them before anything stops).
    type: str
    choices: [load, pull]
    default: load
  writable_layer:
    description:
      - With O(side=source), the containers' writable layers travel (see the option of the same name of
        M(fleet.checkpoint.docker_checkpoint)'s C(send_to)) - the source needs overlay2, and so does the target
        (checked with O(side=target) from the plan); their size counts into the target's free disk.
    type: bool
    default: false
  volumes:
    description:
      - With O(side=source), which volumes' data travel - V(all), V(named) or V(none), as C(send_to.volumes) of
        M(fleet.checkpoint.docker_checkpoint). A volume that another running container uses here, or that is not a plain local
        volume, is a problem on the source; one that exists on the target already, a problem on the target. Their
        size counts into the target's free disk.
      - Bind mounts never travel; each is named in RV(notices) (and as a warning).
    type: str
    choices: [all, named, none]
    default: none
  consistent:
    description:
      - With O(side=source), the containers move as one group (M(fleet.checkpoint.docker_checkpoint)'s
        C(consistent=true)) - a volume that only they use travels once, with the first of them that mounts it.
    type: bool
    default: false
  replace:
    description:
      - With O(side=target), a stopped container of the same name as a moving one is not a problem - it is listed
        in RV(replaced), for the playbook to set aside before the move and remove once the move is done. A running
        one still is.
    type: bool
    default: false
  rename:
    description:
      - With O(side=target), the name a moving container gets here, by its name on the source (C(billing) as C(billing-2), say).
        The new name must be free here (or, with O(replace=true), taken by a stopped container).
    type: dict
    default: {}
  alongside:
    description:
      - With O(side=target), when several sources move one group here together, the RV(plan)s of the other sources,
        by source host (this host's O(plan) is one source's part). A volume name, a published host port or a fixed
        address on one network that this part and another both bring is a problem, and the free disk counted is that
        of every part together.
    type: dict
    default: {}
  allow_older_kernel:
    description:
      - With O(side=target), a kernel here older (major.minor) than the source's is not a problem. By default it is - the
        checkpointed processes may use what the newer kernel gave them, which CRIU cannot restore here.
    type: bool
    default: false
  mode:
    description:
      - How the containers will move. V(lazy) (post-copy, see C(send_to.lazy) of M(fleet.checkpoint.docker_checkpoint))
        also checks, on either side, that CRIU can restore lazily (C(criu check --feature uffd-noncoop)) and make its
        page server's pipes (CAP_SYS_RESOURCE or C(fs.pipe-max-size)), on the source that runc is there, and on the
        target that Docker serves API 1.43 (Docker 24) or later, which takes the container annotation the lazy
        restore needs.
      - V(precopy) (memory sent in rounds before the freeze, see C(send_to.memory_rounds)) also checks, on the source,
        that the kernel tracks dirty memory (C(CONFIG_MEM_SOFT_DIRTY); C(criu check --feature mem_dirty_track)) and
        that runc is there.
    type: str
    choices: [stop, lazy, precopy]
    default: stop
notes:
  - Needs root on the managed host (use C(become)) to run CRIU and read Docker's state.
  - The source's own checks (unknown containers, C(--rm) containers, CRIU working, free disk for the dump) are those of
    M(fleet.checkpoint.docker_checkpoint) in check mode, which the playbook runs too.
seealso:
  - module: fleet.checkpoint.docker_checkpoint
  - module: fleet.checkpoint.stream_relay
"""

EXAMPLES = r"""
- name: Describe what moves
  fleet.checkpoint.docker_migration_preflight:
    side: source
    containers: [billing, cache]
  register: moving
  become: true

- name: Check that web-2 can take it, before anything stops
  fleet.checkpoint.docker_migration_preflight:
    side: target
    plan: "{{ moving.plan }}"
  delegate_to: web-2
  become: true
"""

RETURN = r"""
plan:
  description: With O(side=source), what moves - give it to O(side=target) as O(plan).
  type: dict
  returned: side=source
  sample: {"containers": [{"name": "billing", "memory": 268435456, "image_size": 4400000, "config": {},
                           "disk": {"rootfs": true, "volumes": ["billing-data"], "bytes": 52428800}}],
           "criu": "4.2.1", "kernel": "6.18.44", "cpuinfo": "..."}
notices:
  description: With O(side=source), what stays on this host whatever moves (each bind mount), also shown as warnings.
  type: list
  elements: str
  returned: side=source
  sample: ["billing: bind mount /srv/billing -> /data is host-local - its contents do not move; the target's own
           /srv/billing is mounted there"]
replaced:
  description: With O(side=target) and O(replace=true), the stopped containers of this host that the move replaces.
  type: list
  elements: str
  returned: side=target
  sample: [billing]
problems:
  description: Every problem found on this host; empty when the move can go on.
  type: list
  elements: str
  returned: always
  sample: ["a container named billing already exists on the target (running): remove or rename it there first"]
"""

import os
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import migration_preflight
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI, DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.common_args import docker_host_argument_spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            side=dict(type="str", required=True, choices=["source", "target"]),
            containers=dict(type="list", elements="str"),
            plan=dict(type="dict"),
            transfer=dict(type="str", default="controller", choices=["direct", "controller"]),
            image=dict(type="str", default="load", choices=["load", "pull"]),
            writable_layer=dict(type="bool", default=False),
            volumes=dict(type="str", default="none", choices=["all", "named", "none"]),
            replace=dict(type="bool", default=False),
            rename=dict(type="dict", default={}),
            allow_older_kernel=dict(type="bool", default=False),
            alongside=dict(type="dict", default={}),
            mode=dict(type="str", default="stop", choices=["stop", "lazy", "precopy"]),
            consistent=dict(type="bool", default=False),
            **docker_host_argument_spec(),
        ),
        required_if=[("side", "source", ("containers",)), ("side", "target", ("plan",))],
        supports_check_mode=True,
    )
    params = module.params
    api = DockerAPI(params["docker_host"], timeout=params["api_timeout"])
    kernel = os.uname().release
    answer: dict[str, Any] = {"changed": False}
    if params["side"] == "source":
        try:
            answer["plan"] = migration_preflight.plan(api, params["containers"], module.run_command,
                                                      module.get_bin_path, kernel, params["writable_layer"],
                                                      params["volumes"], params["consistent"])
        except DockerAPIError as exc:
            module.fail_json(msg=f"Docker does not answer on the source: {exc}", problems=[str(exc)], **answer)
        problems = migration_preflight.missing_commands("source", params["transfer"], module.get_bin_path)
        problems += answer["plan"].pop("problems")
        answer["notices"] = answer["plan"].pop("notices")
        for notice in answer["notices"]:
            module.warn(notice)
    else:
        replaced: list[str] | None = [] if params["replace"] else None
        problems = migration_preflight.target_problems(api, params["plan"], params["transfer"], params["image"],
                                                       module.run_command, module.get_bin_path, kernel,
                                                       replaced=replaced, rename=params["rename"],
                                                       allow_older_kernel=params["allow_older_kernel"],
                                                       alongside=params["alongside"])
        answer["replaced"] = replaced or []
    api_version = None
    if params["side"] == "target" and params["mode"] == "lazy":
        try:
            api_version = str((api.get("/version") or {}).get("ApiVersion") or "")
        except DockerAPIError:
            api_version = None  # (target_problems said that Docker does not answer)
    problems += migration_preflight.mode_problems(params["side"], params["mode"], module.run_command,
                                                  module.get_bin_path, api_version)
    answer["problems"] = problems
    if problems:
        module.fail_json(msg=f"the {params['side']} cannot take part in the migration ({len(problems)} problem"
                             f"{'s' if len(problems) > 1 else ''}, nothing was changed): " + "; ".join(problems),
                         **answer)
    module.exit_json(**answer)


if __name__ == "__main__":
    main()
