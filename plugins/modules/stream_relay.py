#!/usr/bin/python
# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# The work is done on the controller by the action plugin of the same name (plugins/action/stream_relay.py).

from __future__ import annotations

DOCUMENTATION = r"""
module: stream_relay
short_description: Relay a checkpoint stream or an image from one host to another through the controller
version_added: 0.1.0
description:
  - For hosts that cannot reach each other (the usual layout under AWX, where only the controller holds the SSH keys),
    the controller logs in to both over SSH and joins the two connections with pipes. The bytes go from the source's
    connection straight into the target's, a pipe's worth at a time; nothing is held in the controller's memory or
    written to its disk, whatever the size.
  - With O(checkpoint), it joins the sending end of a streamed checkpoint on the source (M(fleet.checkpoint.docker_checkpoint)
    O(fleet.checkpoint.docker_checkpoint#module:send_to.via=relay), waiting on a root-only Unix socket) to the restore
    waiting on the target (O(fleet.checkpoint.docker_checkpoint#module:receive_timeout)); the target's answers (ready,
    done) go back the same way, so the sender knows that every byte arrived. The checks are the stream's own (manifest
    first, every file's size and sha256).
  - With O(image), it runs C(docker save) on the source into C(docker load) on the target.
  - Logs in as Ansible does, from each host's variables (C(ansible_host), C(ansible_port), C(ansible_user),
    C(ansible_ssh_private_key_file), C(ansible_ssh_common_args), C(ansible_ssh_extra_args)), the play's defaults
    (C(-u), C(--private-key), the SSH agent of an AWX machine credential) and the ssh connection's settings in
    C(ansible.cfg) and C(ANSIBLE_*) environment variables (C(ssh_common_args), C(ssh_extra_args), C(ssh_args) when
    set, C(remote_port), C(private_key_file), C(ssh_executable)), with C(BatchMode) - keys only, no passwords.
    A login other than root becomes root with C(sudo -n).
author:
  - fleet.checkpoint maintainers (@fleet-checkpoint)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - ansible.builtin.action_common_attributes.conn
  - ansible.builtin.action_common_attributes.flow
attributes:
  action:
    support: full
  async:
    support: none
  become:
    support: none
    description: Each side becomes root by itself (a root login, or C(sudo -n)); the task's C(become) is not used.
  bypass_host_loop:
    support: none
  check_mode:
    support: full
    description: Logs in to nothing; reports what would be relayed between which hosts.
  connection:
    support: none
    description: Runs on the controller and opens its own SSH connections to O(source) and O(target).
  delegation:
    support: none
  diff_mode:
    support: none
  platform:
    support: full
    platforms: posix
    description: The controller needs the OpenSSH client; both hosts need C(python3) (with O(checkpoint)) or Docker.
options:
  source:
    description: The inventory name of the host the bytes come from.
    type: str
    required: true
  target:
    description: The inventory name of the host the bytes go to.
    type: str
    required: true
  checkpoint:
    description: Relay a streamed checkpoint from its sender on O(source) into the restore waiting on O(target).
    type: dict
    suboptions:
      container:
        description: The container's name (as both ends name their socket and FIFO).
        type: str
        required: true
      name:
        description: The checkpoint's name.
        type: str
        required: true
      directory:
        description: O(fleet.checkpoint.docker_checkpoint#module:send_to.directory) of the sender on O(source).
        type: path
        required: true
      target_directory:
        description:
          - O(fleet.checkpoint.docker_checkpoint#module:archive_dir) of the restore waiting on O(target).
          - Default O(checkpoint.directory).
        type: path
      python:
        description: The Python 3 interpreter on both hosts.
        type: str
        default: python3
  image:
    description:
      - Relay this image (an image ID, or a reference the source knows) with C(docker save) into C(docker load).
    type: str
  connect_timeout:
    description:
      - Seconds for the ends to find each other - the sender's socket on the source, the restore's FIFO on the target.
    type: int
    default: 60
  timeout:
    description: Seconds the whole transfer may take; both connections are cut after it, and the task fails.
    type: int
    default: 3600
notes:
  - Exactly one of O(checkpoint) and O(image).
  - The relay is an action, so it reports a change every time it moves bytes.
seealso:
  - module: fleet.checkpoint.docker_checkpoint
  - name: Moving a running container to another host
    description: The migrate playbook and its two paths.
    link: https://github.com/fleet-checkpoint/fleet.checkpoint/blob/main/docs/migrate.md
"""

EXAMPLES = r"""
- name: Relay the checkpoint of billing from web-1 into the restore waiting on web-2
  fleet.checkpoint.stream_relay:
    source: web-1
    target: web-2
    checkpoint:
      container: billing
      name: move
      directory: /var/lib/fleet-checkpoint/migrate

- name: Carry an image that web-2 does not have
  fleet.checkpoint.stream_relay:
    source: web-1
    target: web-2
    image: sha256:4a1c1e8b4b0e0f9ee8d7f3b6b1e1c3d2a1f0e9d8c7b6a5f4e3d2c1b0a9f8e7d6
"""

RETURN = r"""
bytes:
  description: Bytes relayed from O(source) to O(target).
  type: int
  returned: success
  sample: 268963840
seconds:
  description: How long the relay ran, from both logins to both ends closed.
  type: float
  returned: success
  sample: 4.21
peak_rss:
  description:
    - Peak memory (resident set, bytes) on the controller of the relay's own process (C(relay), an Ansible worker)
      and of its largest SSH client (C(ssh); as the kernel counts it, this includes the worker's own memory in the
      instant between fork and exec, so it is never below C(relay)).
  type: dict
  returned: success
  sample: {"relay": 61440000, "ssh": 9437184}
loaded:
  description: What C(docker load) on O(target) said (with O(image)).
  type: str
  returned: success and image
  sample: "Loaded image ID: sha256:4a1c1e8b4b0e..."
"""
