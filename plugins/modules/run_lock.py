#!/usr/bin/python
# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: run_lock
short_description: Claim a host for one fleet.checkpoint playbook run, across reboots
version_added: 0.1.0
description:
  - Takes or gives back a host's run lock, a root-only file naming the run that holds it, what it does and when the
    claim expires. The playbooks of this collection (host_reboot, migrate, checkpoint, restore) take it first and give
    it back last, so two runs on the same host (two AWX jobs, two operators) never interleave.
  - A run that finds the lock held by another run waits up to O(timeout) seconds, then fails naming the holder.
  - The lock survives a reboot of the host (unlike the per-call lock of M(fleet.checkpoint.docker_checkpoint)). A run
    that died leaves its lock behind; it expires after O(lease) seconds, or O(force=true) takes it over at once.
author:
  - fleet.checkpoint maintainers (@fleet-checkpoint)
attributes:
  check_mode:
    support: full
    description: Reports whether the lock would be taken or given back; fails in the same way if another run holds it.
  diff_mode:
    support: full
    description: Shows the holder before and after.
  platform:
    support: full
    platforms: posix
    description: Linux hosts (any POSIX host with a writable /var/lib works).
options:
  owner:
    description:
      - Id of the run (unique per run, the same on every host of the run, e.g. a random string set at the start).
    type: str
    required: true
  state:
    description:
      - V(present) takes the lock; if this O(owner) already holds it, its expiry is moved to O(lease) seconds from now
        when that is later (never earlier), which is not reported as a change. V(absent) gives it back (no change if
        nobody holds it).
    type: str
    choices: [present, absent]
    default: present
  purpose:
    description:
      - What the run does, shown to a run that finds the host locked (e.g. C(host_reboot, AWX job 42)).
    type: str
    default: fleet.checkpoint
  controller:
    description:
      - The controller or job the run comes from, shown to a run that finds the host locked.
    type: str
  lease:
    description:
      - Seconds after which the lock counts as abandoned by a dead run and another run may take it over. Longer than
        the run can take on one host.
    type: int
    default: 14400
  timeout:
    description:
      - Seconds to wait for another run's lock to be given back before failing. V(0) fails at once.
    type: int
    default: 0
  force:
    description:
      - Take over (V(present)) or remove (V(absent)) the lock even if another run holds it. Only when that run is known
        to be dead; the previous holder is returned and warned about.
    type: bool
    default: false
  path:
    description:
      - The lock file.
    type: path
    default: /var/lib/fleet-checkpoint/run.lock
notes:
  - Needs root on the managed host (use C(become)); the lock file and its directory are created C(0600)/C(0700).
seealso:
  - module: fleet.checkpoint.docker_checkpoint
"""

EXAMPLES = r"""
- name: Claim the host for this run (fails at once if another run holds it)
  fleet.checkpoint.run_lock:
    owner: "{{ my_run_id }}"
    purpose: kernel patching
  become: true

- name: Give the host back
  fleet.checkpoint.run_lock:
    owner: "{{ my_run_id }}"
    state: absent
  become: true
"""

RETURN = r"""
lock:
  description: The lock's holder after the task ({} when nobody holds it).
  returned: always
  type: dict
  sample: {"owner": "k3v9x2", "purpose": "host_reboot", "controller": "awx job 42", "since": 1795000000.0,
           "expires": 1795014400.0}
previous:
  description: The holder that was replaced (expired or forced out) or released, if any.
  returned: when changed
  type: dict
  sample: {"owner": "a81fz0", "purpose": "host_reboot", "since": 1794990000.0, "expires": 1795004400.0}
"""

import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.checkpoint.plugins.module_utils._host.run_lock import LockHeld, acquire, read, release


def main():
    module = AnsibleModule(
        argument_spec=dict(
            owner=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            purpose=dict(type="str", default="fleet.checkpoint"),
            controller=dict(type="str"),
            lease=dict(type="int", default=14400),
            timeout=dict(type="int", default=0),
            force=dict(type="bool", default=False),
            path=dict(type="path", default="/var/lib/fleet-checkpoint/run.lock"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    if not params["owner"].strip():
        module.fail_json(msg="owner must not be empty: give the run's id")
    if params["lease"] < 60:
        module.fail_json(msg=f"lease must be at least 60 seconds, got {params['lease']}")
    if params["timeout"] < 0:
        module.fail_json(msg=f"timeout must be 0 or more seconds, got {params['timeout']}")
    path = params["path"]
    before = read(path)
    try:
        if params["state"] == "present":
            now = time.time()
            record = {"owner": params["owner"], "purpose": params["purpose"], "controller": params["controller"],
                      "since": now, "expires": now + params["lease"], "pid": os.getpid()}
            changed, previous = acquire(path, record, timeout=params["timeout"], force=params["force"],
                                        check_mode=module.check_mode)
        else:
            changed, previous = release(path, params["owner"], force=params["force"], check_mode=module.check_mode)
    except LockHeld as exc:
        module.fail_json(msg=str(exc), lock=before)
    except OSError as exc:
        module.fail_json(msg=f"cannot use the run lock {path}: {exc} (the playbooks need become: true)", lock=before)
    after = read(path) if not module.check_mode else (
        {} if params["state"] == "absent" else (before if not changed else {"owner": params["owner"]}))
    result = dict(changed=changed, lock=after)
    if changed:
        result["previous"] = previous or {}
        if previous and previous.get("owner") != params["owner"] and params["state"] == "present":
            module.warn(f"took over the run lock of {previous.get('owner')!r} ({previous.get('purpose')}); "
                        "it had expired or force was given")
        result["diff"] = {"before": {"owner": before.get("owner")}, "after": {"owner": after.get("owner")}}
    module.exit_json(**result)


if __name__ == "__main__":
    main()
