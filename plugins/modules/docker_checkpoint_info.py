#!/usr/bin/python
# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_checkpoint_info
short_description: List Docker checkpoints per container, and whether this host can restore them
version_added: 0.1.0
description:
  - Lists the checkpoints of some or all containers on the managed host, from Docker's checkpoint directories
    (C(<DockerRootDir>/containers/<id>/checkpoints)), with what fleet.checkpoint recorded for each (restart policy,
    dump path, creation time, versions).
  - Says for each checkpoint whether it is restorable on this host and, if not, why (experimental mode off, no CRIU,
    CRIU too old for the kernel or older than the CRIU that made the checkpoint, container running).
  - With O(details=true), also says what each checkpoint holds, read from its CRIU images with CRIU's own reader
    C(crit) - the processes and their command lines, their memory, the files they use (and whether each is there
    for a restore now), their sockets, mounts and namespaces, and CRIU's dump statistics when the dump kept them.
    A file the processes use that is missing here, a published port something else holds, or a CPU that lacks
    features the processes may use (C(criu cpuinfo check) of the CPU record the dump kept) then makes the
    checkpoint not restorable, and says so.
  - The details include the processes' command lines, which may hold secrets (a password given as an argument).
    Set C(no_log) on a task whose output is logged where they must not be.
  - Works whether or not Docker's experimental mode is on; never changes anything.
author:
  - fleet.checkpoint maintainers (@fleet-checkpoint)
extends_documentation_fragment:
  - fleet.checkpoint._docker_host
  - fleet.checkpoint._docker_host.attributes
  - fleet.checkpoint._docker_host.info_module
options:
  container:
    description:
      - Name or id of one container. Without O(container) and O(containers), every container (running or not).
    type: str
  containers:
    description:
      - Names or ids of several containers.
    type: list
    elements: str
  name:
    description:
      - Only checkpoints of this name.
    type: str
  details:
    description:
      - Read each checkpoint's CRIU images and return RV(containers[].checkpoints[].details), and check that the
        files its processes use are there and the ports the container publishes are free.
      - Needs C(crit) on the host (Debian package C(python3-pycriu), which M(fleet.checkpoint.criu_install)
        installs); without it, RV(containers[].checkpoints[].details.problem) says so.
      - Costs little (0.07 s for a checkpoint of 7 processes on the lab; CRIU's images are decoded in one run of
        C(crit)'s library; an image it cannot read is passed to C(crit) itself, for its message).
    type: bool
    default: false
notes:
  - Needs root on the managed host to read Docker's directories (use C(become)).
seealso:
  - module: fleet.checkpoint.docker_checkpoint
"""

EXAMPLES = r"""
- name: List every checkpoint on the host
  fleet.checkpoint.docker_checkpoint_info:
  register: checkpoints
  become: true

- name: Show which checkpoints of billing-worker can be restored here
  ansible.builtin.debug:
    msg: "{{ item.name }}: {{ item.restorable }} {{ item.not_restorable_because | join(', ') }}"
  loop: "{{ checkpoints.containers | selectattr('name', 'equalto', 'billing-worker') | map(attribute='checkpoints')
            | flatten }}"

- name: Look inside the checkpoints of billing-worker (processes, files, sockets), and see what a restore would miss
  fleet.checkpoint.docker_checkpoint_info:
    container: billing-worker
    details: true
  register: inside
  become: true

- name: Containers that hold a pre-reboot checkpoint
  fleet.checkpoint.docker_checkpoint_info:
    name: pre-reboot
  register: pre_reboot
  become: true
"""

RETURN = r"""
containers:
  description: One entry per container looked at (containers with no checkpoints included when named explicitly).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Container name.
      type: str
      sample: billing-worker
    id:
      description: Container id.
      type: str
      sample: 6cc94f80441f8008293c210b85b3f05cbd37c449d570ba3087f5b71cd953e127
    running:
      description: Whether the container runs now.
      type: bool
      sample: false
    restart_policy:
      description: The container's current restart policy.
      type: dict
      sample: {"Name": "no", "MaximumRetryCount": 0}
    checkpoints:
      description: Its checkpoints, oldest first.
      type: list
      elements: dict
      contains:
        name:
          description: Checkpoint name.
          type: str
          sample: pre-reboot
        path:
          description: Checkpoint directory.
          type: str
          sample: /var/lib/docker/containers/6cc9.../checkpoints/pre-reboot
        created:
          description: When it was made (ISO 8601, UTC); the directory's time when not made by fleet.checkpoint.
          type: str
          sample: "2026-11-23T16:24:03Z"
        size:
          description: Size on disk in bytes.
          type: int
          sample: 268935168
        method:
          description: The dump path that made it (V(api), V(containerd)), or null when not made by fleet.checkpoint.
          type: str
          sample: containerd
        managed:
          description: Whether fleet.checkpoint made (or imported) it and keeps metadata for it.
          type: bool
          sample: true
        leave_running:
          description: Whether the container was left running by the dump.
          type: bool
          sample: false
        restart_policy:
          description: The restart policy recorded at checkpoint time (put back by a restore).
          type: dict
          sample: {"Name": "unless-stopped", "MaximumRetryCount": 0}
        versions:
          description: CRIU, Docker and kernel versions when it was made.
          type: dict
          sample: {"criu": "4.2.1", "docker": "26.1.5", "kernel": "6.18.44"}
        restorable:
          description: Whether this host can restore it now.
          type: bool
          sample: true
        not_restorable_because:
          description: Why not (empty when restorable).
          type: list
          elements: str
          sample: []
        details:
          description:
            - What the checkpoint holds, read from its CRIU images with C(crit).
            - Paths are inside the container.
          returned: when O(details=true)
          type: dict
          contains:
            problem:
              description: Why the images could not be read (then only RV(containers[].checkpoints[].details.versions)
                is given).
              type: str
              returned: when the images could not be read
              sample: crit, CRIU's image reader (Debian package python3-pycriu) is not installed on this host
            processes:
              description:
                - The process tree, parents first.
                - V(cmdline) is read from the dumped memory (null when those pages are not in this checkpoint);
                  V(memory_bytes) is every page the process had, V(memory_in_checkpoint_bytes) those this
                  checkpoint holds (the rest are in a parent checkpoint, or were to be served lazily).
              type: list
              elements: dict
              sample: [{"pid": 1, "ppid": 0, "threads": 1, "command": "python3", "cmdline": "python3 -m http.server",
                        "memory_bytes": 9150464, "memory_in_checkpoint_bytes": 9150464}]
            files:
              description:
                - The regular files the processes use (open descriptors, executables, mapped files, working and root
                  directories), with V(used_as) (the process, then how), the V(filesystem) they are on, and V(exists) (whether
                  the file is there for a restore into this container now (null when not looked for - on a
                  filesystem the kernel provides or the checkpoint carries, or kept in the checkpoint because it
                  was deleted before the dump; or when the container's storage driver is not overlay2)).
              type: list
              elements: dict
              sample: [{"path": "/data/app.log", "used_as": ["1: fd 3"], "filesystem": "overlay",
                        "kept_in_checkpoint": false, "exists": true}]
            sockets:
              description: The processes' sockets (inet, inet6 and unix), with state and addresses.
              type: list
              elements: dict
              sample: [{"pid": 1, "fd": 3, "family": "inet", "type": "stream", "protocol": "tcp", "state": "listen",
                        "local": "0.0.0.0:8000", "remote": null}]
            mounts:
              description: The mounts of the processes' mount namespace (V(external) ones are set up by the engine).
              type: list
              elements: dict
              sample: [{"mountpoint": "/", "fstype": "overlay", "source": "overlay", "root": "/", "external": false}]
            namespaces:
              description: The namespaces of the tree's first process (their ids in the checkpoint).
              type: dict
              sample: {"pid": 10, "net": 11, "ipc": 12, "uts": 13, "mnt": 14}
            stats:
              description:
                - CRIU's dump statistics (times in microseconds) when the dump kept them (a dump through Docker
                  does not keep them, then null).
              type: dict
              sample: {"freezing_time": 1203, "frozen_time": 180344, "memdump_time": 20441, "memwrite_time": 51022,
                       "pages_scanned": 2310, "pages_skipped_parent": 0, "pages_written": 2234, "pages_lazy": 0}
            versions:
              description: CRIU, Docker and kernel versions when it was made (as recorded by fleet.checkpoint).
              type: dict
              sample: {"criu": "4.2.1", "docker": "26.1.5", "kernel": "6.18.44"}
host:
  description: What this host offers for restores.
  returned: always
  type: dict
  sample: {"experimental": true, "criu": "4.2.1", "docker": "26.1.5", "kernel": "6.18.44", "root_dir": "/var/lib/docker"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.info import InfoError, checkpoint_info
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.common_args import docker_host_argument_spec


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            container=dict(type="str"),
            containers=dict(type="list", elements="str"),
            name=dict(type="str"),
            details=dict(type="bool", default=False),
            **docker_host_argument_spec(),
        ),
        mutually_exclusive=[("container", "containers")],
        supports_check_mode=True,
    )
    try:
        answer = checkpoint_info(module.params, module.run_command, module.get_bin_path("criu"))
    except InfoError as exc:
        module.fail_json(msg=str(exc), **exc.details)
    module.exit_json(changed=False, **answer)


if __name__ == "__main__":
    main()
