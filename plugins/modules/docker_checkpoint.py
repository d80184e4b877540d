#!/usr/bin/python
# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: docker_checkpoint
short_description: Checkpoint, restore, export and import running Docker containers with CRIU
version_added: 0.1.0
description:
  - Creates, removes, restores, exports and imports checkpoints of Docker containers through the Docker Engine API
    on the managed host (experimental mode must be on, see M(fleet.checkpoint.docker_experimental); CRIU must be
    installed, see M(fleet.checkpoint.criu_install)).
  - Many containers are handled in one call, in parallel, with a result per container. A failure of one container
    does not stop the others; the module then fails and names every failed container.
  - How it keeps the Docker traps away (restart policies, silent no-op restores, containers left running, slow
    copies through containerd) is in the notes below.
  - Checkpoints hold the whole memory of the container's processes, secrets included. Checkpoint directories are
    made root-only (0700, files 0600); archives are written 0600. Imported archives are checked entry by entry
    (no absolute paths, no C(..), no links, no device files) and file by file (size and sha256 from the manifest).
author:
  - fleet.checkpoint maintainers (@fleet-checkpoint)
extends_documentation_fragment:
  - fleet.checkpoint._docker_host
  - fleet.checkpoint._docker_host.attributes
  - fleet.checkpoint._docker_checkpoint.selection
  - fleet.checkpoint._docker_checkpoint.archive
  - fleet.checkpoint._docker_checkpoint.stream
  - fleet.checkpoint._docker_checkpoint.group
  - fleet.checkpoint._docker_checkpoint.manifest
  - fleet.checkpoint._docker_checkpoint.retention
  - fleet.checkpoint._docker_checkpoint.run
attributes:
  check_mode:
    description: Reports per container what would be done (and through which dump path); changes nothing.
    support: full
  diff_mode:
    description: Shows per container the checkpoint, running state or archive before and after.
    support: full
options:
  name:
    description:
      - Name of the checkpoint. It must start with a letter or digit and use only letters, digits, C(_), C(.) and
        C(-), at least 2 and at most 128 characters, without C(..) (as Docker, plus the length limit).
      - An invalid name fails the module before anything is touched.
      - Required, except with O(state=restored) and O(manifest_path) (the manifest names the checkpoint).
    type: str
  state:
    description:
      - V(present) makes sure the checkpoint exists. A new checkpoint stops the container unless
        O(leave_running=true). An existing checkpoint of that name is left alone unless O(force=true) recreates it.
      - V(absent) removes the checkpoint.
      - V(restored) makes sure the container runs from the checkpoint. A running container is left alone (never the
        silent no-op of C(docker start --checkpoint)) unless O(force=true), which stops it and restores it, for
        example to rewind it. With O(target), the checkpoint of O(container) is restored into the stopped container
        O(target). With O(archive_path) or O(archive_dir), the checkpoint is first imported from the archive.
      - V(exported) writes the checkpoint and a manifest into a portable archive (see O(compression)). An archive
        that already holds exactly this checkpoint is left alone.
      - V(imported) places the checkpoint from an archive into the container's checkpoint directory (the container
        must exist; create it from the C(container) part of RV(results[].manifest) first). It does not start the container.
    type: str
    choices: [present, absent, restored, exported, imported]
    default: present
  leave_running:
    description:
      - With O(state=present), keep the container running after the dump (its restart policy is then not touched).
    type: bool
    default: false
  force:
    description:
      - V(present) replaces an existing checkpoint of that name (the old one is kept until the new one is made).
        Without it, a checkpoint that an earlier run left in doubt (its dump's end was not seen) is refused; with it,
        that checkpoint is replaced, and the one it was replacing is kept until the new one is made.
      - V(restored) stops a running container and restores it from the checkpoint.
      - V(exported) overwrites an archive that holds something else.
      - V(imported) replaces a different checkpoint of the same name, and accepts an encrypted archive exported for
        another container or checkpoint, or one of format version 1 (0.1.0), which names neither.
    type: bool
    default: false
  method:
    description:
      - Dump path for O(state=present).
      - V(auto) uses containerd's task API when it is usable for the container, else Docker's checkpoint API.
      - V(containerd) requires the containerd path and fails otherwise; V(api) always uses Docker's API (and still
        switches to containerd when Docker's API leaves a stopping container running).
      - Restore path for O(state=restored) (Docker restores in every case).
        V(auto) and V(containerd) link the checkpoint's memory pages instead of having Docker copy them through
        containerd's content store (see B(Fast restore) in the notes); after a failed linked restore V(auto) tries
        again with Docker's own copy, V(containerd) fails. V(api) always lets Docker copy them. Docker copies them also
        when they cannot be linked (with a warning) and when CRIU is configured with C(auto-dedup).
    type: str
    choices: [auto, api, containerd]
    default: auto
  target:
    description:
      - With O(state=restored), the stopped container to restore into (created beforehand, from the same image).
        The checkpoint of O(container) is copied into its checkpoint directory first. Only with O(container).
    type: str
  verify:
    description:
      - With O(state=restored), check that the container resumed from the checkpoint (recorded process tree back, own
        time namespace) and fail otherwise.
    type: bool
    default: true
seealso:
  - module: fleet.checkpoint.docker_checkpoint_info
  - module: fleet.checkpoint.docker_experimental
  - module: fleet.checkpoint.criu_install
"""

EXAMPLES = r"""
- name: Checkpoint a container and stop it (its restart policy is parked until the restore)
  fleet.checkpoint.docker_checkpoint:
    container: billing-worker
    name: pre-reboot
  become: true

- name: Snapshot every running container labelled for it, leaving them running, keeping the last 3
  fleet.checkpoint.docker_checkpoint:
    all_running: true
    filters:
      label: [fleet.checkpoint=yes]
    exclude: [traefik]
    name: "snap-{{ ansible_date_time.epoch }}"
    leave_running: true
    keep_last: 3
  become: true

- name: Checkpoint a Compose project at one instant (frozen together, dumped, thawed together)
  fleet.checkpoint.docker_checkpoint:
    all_running: true
    filters:
      label: [com.docker.compose.project=shop]
    consistent: true
    leave_running: true
    name: shop-consistent
  become: true

- name: Restore it where it left off
  fleet.checkpoint.docker_checkpoint:
    container: billing-worker
    name: pre-reboot
    state: restored
  become: true

- name: Rewind a running container to an earlier checkpoint
  fleet.checkpoint.docker_checkpoint:
    container: billing-worker
    name: known-good
    state: restored
    force: true
  become: true

- name: Restore every container that has the checkpoint (after a reboot)
  fleet.checkpoint.docker_checkpoint:
    all_running: true
    name: pre-reboot
    state: restored
  become: true

- name: Restore into a new container created from the same image
  fleet.checkpoint.docker_checkpoint:
    container: billing-worker
    target: billing-worker-2
    name: pre-reboot
    state: restored
  become: true

- name: Export a checkpoint to carry it to another host
  fleet.checkpoint.docker_checkpoint:
    container: billing-worker
    name: move
    state: exported
    archive_path: /var/lib/fleet-checkpoint/archives/billing-worker-move.tar.zst
  become: true

- name: On the other host, restore it into a container created beforehand
  fleet.checkpoint.docker_checkpoint:
    container: billing-worker
    name: move
    state: restored
    archive_path: /var/lib/fleet-checkpoint/archives/billing-worker-move.tar.zst
  become: true

- name: Before a reboot - checkpoint every running container and record them in a host manifest
  fleet.checkpoint.docker_checkpoint:
    all_running: true
    name: "reboot-{{ ansible_date_time.epoch }}"
    manifest_path: /var/lib/fleet-checkpoint/manifest.json
  become: true

- name: After the reboot - restore what the manifest lists; start afresh what cannot be restored
  fleet.checkpoint.docker_checkpoint:
    state: restored
    manifest_path: /var/lib/fleet-checkpoint/manifest.json
    fallback: cold_start
    keep_last: 3
  become: true

- name: Live migration, step 1 - on the target, wait for the checkpoint in the background
  fleet.checkpoint.docker_checkpoint:
    container: billing-worker
    name: move
    state: restored
    archive_dir: /var/lib/fleet-checkpoint/migrate
    receive_timeout: 300
    create: true
  async: 900
  poll: 0
  register: receiver
  become: true
  delegate_to: web-2

- name: Live migration, step 2 - on the source, checkpoint and stream it to the target
  fleet.checkpoint.docker_checkpoint:
    container: billing-worker
    name: move
    send_to:
      host: web-2.example.com
      directory: /var/lib/fleet-checkpoint/migrate
      known_hosts_file: /root/.ssh/known_hosts
  become: true

# Step 3: on the target, wait for the receiver with ansible.builtin.async_status (jid: receiver.ansible_job_id);
# the fleet.checkpoint.migrate playbook does all three steps.

- name: Remove a checkpoint
  fleet.checkpoint.docker_checkpoint:
    container: billing-worker
    name: pre-reboot
    state: absent
  become: true
"""

RETURN = r"""
checkpoint:
  description: The checkpoint name.
  returned: always
  type: str
  sample: pre-reboot
manifest:
  description: The host manifest after this run (as written to O(manifest_path), or as it would be in check mode).
  returned: with manifest_path
  type: dict
  sample: {"format": "fleet.checkpoint/host-manifest", "checkpoint": "fleet-20261123T165000Z", "state": "restored",
           "containers": [{"container": "web", "status": "restored", "resumed": true}]}
summary:
  description: One row per container of the manifest - container, checkpoint, status, resumed, size, method,
    dump_seconds, restore_seconds, msg.
  returned: with manifest_path
  type: list
  elements: dict
  sample: [{"container": "web", "checkpoint": "fleet-20261123T165000Z", "status": "restored", "resumed": true,
            "size": 173450, "method": "containerd", "dump_seconds": 0.27, "restore_seconds": 0.42, "msg": ""}]
run_lock_released:
  description: Whether the host's run lock held by O(release_run_lock) was given back by this call (false in check
    mode, when the task fails, when nobody held it, or when another run holds it).
  returned: with release_run_lock
  type: bool
  sample: true
group:
  description: With O(consistent=true), the group as a whole.
  returned: with consistent=true
  type: dict
  contains:
    members:
      description: The members' names.
      type: list
      elements: str
    frozen_seconds:
      description: With O(state=present), seconds from the first member's freeze to the last member's dump done.
      type: float
    freeze_seconds:
      description: With O(state=present), seconds to freeze every member.
      type: float
    frozen_at:
      description: With O(state=present), when every member was frozen (seconds since the epoch).
      type: float
    thawed_after_seconds:
      description: With O(state=present) and O(leave_running=true), seconds from the first freeze to the thaw.
      type: float
    undone:
      description: With O(state=present), true when a member's dump failed and the group was brought back.
      type: bool
    barrier:
      description: With O(barrier_dir), how the fleet's barrier ended - C(go), C(abort) or C(timeout).
      type: str
    barrier_waited_seconds:
      description: With O(barrier_dir), seconds this host's part waited at the barrier (frozen, or restored and held).
      type: float
    held_seconds:
      description: With O(state=restored), seconds from the start of the restores to the moment all members were
        restored and let run together.
      type: float
    aborted:
      description: With O(state=restored), true when a member could not be restored and none was let run.
      type: bool
  sample: {"members": ["shop-web", "shop-worker"], "consistent": true, "frozen_seconds": 0.41, "freeze_seconds": 0.02,
           "thawed_after_seconds": 0.43}
results:
  description: One entry per container, in the order given (all_running - in the Engine's order).
  returned: always
  type: list
  elements: dict
  contains:
    container:
      description: Container name.
      type: str
      sample: billing-worker
    id:
      description: Container id.
      type: str
      returned: unless the container was not found
      sample: 6cc94f80441f8008293c210b85b3f05cbd37c449d570ba3087f5b71cd953e127
    changed:
      description: Whether this container's checkpoint, state or archive changed (or would in check mode).
      type: bool
      sample: true
    action:
      description: What was done - V(created), V(recreated), V(removed), V(restored), V(exported), V(imported),
        V(sent) (an existing checkpoint sent with O(send_to), or a post-copy move with O(send_to.lazy)),
        V(unchanged), or V(failed).
      type: str
      sample: created
    failed:
      description: Present and true when this container failed.
      type: bool
      returned: on failure
      sample: true
    msg:
      description: Why it failed, or why nothing was done.
      type: str
      returned: sometimes
      sample: "container 'web' not found on this host: check the name (`docker ps -a` lists the containers)"
    path:
      description: The checkpoint directory on the managed host.
      type: str
      returned: success, except exported
      sample: /var/lib/docker/containers/6cc9.../checkpoints/pre-reboot
    method:
      description: The dump path used (V(containerd) or V(api), V(lazy) for a post-copy move with O(send_to.lazy), or
        V(precopy) for a pre-copy move with O(send_to.memory_rounds));
        for an existing checkpoint, the one recorded.
      type: str
      returned: state=present
      sample: containerd
    method_reason:
      description: Why O(method=auto) did not use the containerd path.
      type: str
      returned: when the API path was chosen by auto
      sample: "containerd path not used: ctr (containerd's client) is not installed"
    live_restored:
      description: Docker's API left the container running (live-restored); the dump was redone through containerd.
      type: bool
      returned: when it happened
      sample: true
    stopped:
      description: The container was stopped by the dump (its processes are gone when the module returns).
      type: bool
      returned: when a checkpoint was made
      sample: true
    leave_running:
      description: Whether the dump left the container running.
      type: bool
      returned: state=present and changed
      sample: false
    group:
      description: With O(consistent=true), the group this container was checkpointed or restored with (C(members),
        and C(frozen_seconds) or C(released_after_seconds)).
      type: dict
      returned: with consistent=true, when the group succeeded
    restart_policy:
      description: The container's restart policy before the dump (recorded in the checkpoint).
      type: dict
      returned: state=present and changed
      sample: {"Name": "unless-stopped", "MaximumRetryCount": 0}
    restart_policy_restored:
      description: The recorded restart policy put back after the restore.
      type: dict
      returned: state=restored, when a policy was put back
      sample: {"Name": "unless-stopped", "MaximumRetryCount": 0}
    resumed:
      description:
        - V(true) when the restored container runs the recorded process tree in its own time namespace.
        - V(null) when verification was off or the checkpoint holds no recorded process tree.
      type: bool
      returned: state=restored and restored
      sample: true
    processes:
      description: How many recorded processes were found back after the restore.
      type: dict
      returned: state=restored and verified
      sample: {"recorded": 2, "back": 2}
    source:
      description: The container whose checkpoint was restored.
      type: str
      returned: state=restored
      sample: billing-worker
    copied_from:
      description: The checkpoint directory this container's copy was made from, when the checkpoint of O(container)
        was restored into O(target).
      type: str
      returned: state=restored, when the checkpoint was copied
      sample: /var/lib/docker/containers/6cc9.../checkpoints/pre-reboot
    cgroup_moved:
      description:
        - The cgroup the checkpoint recorded for its processes (V(from)) and this container's cgroup (V(to)), which
          the checkpoint's cgroup image was pointed at before the restore, so that the restored processes are in this
          container's cgroup (its limits, C(docker top), C(docker stats)).
        - Happens when a checkpoint is restored into another container than the one it was dumped from (a
          migration's target, O(target), an imported archive).
      type: dict
      returned: state=restored, when the checkpoint named another container's cgroup
      sample: {"from": "/docker/6cc94f80441f...", "to": "/system.slice/docker-1f2e4c09a7b3....scope"}
    size:
      description: Size in bytes of the new checkpoint, or of the archive.
      type: int
      returned: when a checkpoint or archive was written
      sample: 268935168
    duration:
      description: Seconds the operation took on the host.
      type: float
      returned: when something was done
      sample: 0.41
    dump_call_seconds:
      description: Seconds of the dump call itself (Docker's checkpoint API or containerd's task checkpoint - the
        freeze, CRIU's dump, the images written), without the checks, hashing and metadata around it.
      type: float
      returned: state=present, when a checkpoint was made
      sample: 0.27
    containerd_client:
      description: Which client made the fast path's call - V(direct), the module's own call to containerd's
        C(Tasks.Checkpoint), or V(ctr), used only when containerd took no request from that call.
      type: str
      returned: state=present, when the checkpoint went through containerd's task API
      choices: [direct, ctr]
      sample: direct
    restore_call_seconds:
      description: Seconds of Docker's restore call (C(POST /containers/{id}/start?checkpoint=), all attempts),
        without the checks, links and verification around it (RV(summary)'s C(restore_seconds) is the whole operation).
      type: float
      returned: state=restored, when a container was restored
      sample: 0.9
    import_seconds:
      description: Seconds the import of the archive took before the restore (read, decompressed, checked,
        unpacked); with O(receive_timeout), from the stream's first byte to the checkpoint checked and in place.
      type: float
      returned: state=restored with O(archive_path) or O(archive_dir), when the archive was imported
      sample: 0.8
    dump_started_at:
      description: When the dump began (the container's processes freeze then), in seconds since the epoch.
      type: float
      returned: state=present, when a checkpoint was made
      sample: 1764600000.123
    resumed_at:
      description: When the restored container was seen running again, in seconds since the epoch.
      type: float
      returned: state=restored, when a container was restored
      sample: 1764600003.456
    sent:
      description: With O(send_to), where the checkpoint went and how long it took (only C(to) in check mode); with
        disk state, C(disk) gives its files and directories (C(entries)), the C(bytes) of the final pass, the seconds
        spent reading and hashing it during the freeze (C(walk_seconds)), the files not sent again as they did not
        change since the pre-copy (C(unchanged_files)), the trees sent (the writable layer, volume names) and
        C(precopy) (the first pass, before the freeze - its C(bytes), C(seconds), C(entries)). With
        O(send_to.lazy), C(mode) is V(lazy), C(bytes) are the images sent before the target's resume,
        C(pages_bytes) the memory served afterwards and C(pages_seconds) the time from the freeze (RV(results[].dump_started_at))
        to the last page. With O(send_to.memory_rounds), C(mode) is V(precopy), C(rounds) lists each round (its
        C(round), the C(images_bytes) CRIU wrote, the C(bytes) sent, C(dump_seconds) and C(seconds)), C(before_bytes)
        is what the rounds sent while the container ran and C(during_bytes) what was sent during the freeze.
      type: dict
      returned: state=present with O(send_to)
      sample: {"to": "root@web-2:/var/lib/fleet-checkpoint/migrate/billing-worker-move.stream", "bytes": 268939264,
               "seconds": 1.71, "started_at": 1764600001.02,
               "disk": {"entries": 41, "bytes": 10485760, "walk_seconds": 0.04, "trees": ["writable layer", "data"]}}
    lazy:
      description: For a post-copy move's restore, whether every memory page arrived (C(complete)) and the seconds
        from the start of the page daemon to the last page (C(pages_seconds)).
      type: dict
      returned: state=restored with O(receive_timeout), when the stream was a post-copy move
      sample: {"complete": true, "pages_seconds": 3.2}
    received:
      description: With O(receive_timeout), what arrived - C(bytes), C(waited_seconds) before the first byte,
        C(seconds) from the first byte to the checkpoint checked and in place, C(finished_at) (seconds since the epoch);
        with disk state, C(disk) gives the trees C(applied), their C(entries), the C(volumes) created, the
        C(seconds) it took to put them in place and, when it came in two passes, C(precopy) (its C(bytes), C(files) and
        the files that arrived C(damaged), sent again by the final pass). C(bytes) counts both passes.
      type: dict
      returned: state=restored with O(receive_timeout), when a checkpoint was received
      sample: {"bytes": 268939264, "waited_seconds": 12.4, "seconds": 1.75, "finished_at": 1764600002.8}
    restore_path:
      description: How the restore got its memory pages - V(linked) (read in place through links, see B(Fast
        restore)) or V(copied) (Docker's own copy through containerd's content store).
      type: str
      returned: state=restored, when a container was restored
      sample: linked
    pruned:
      description: Older checkpoints removed by O(keep_last) or O(max_age).
      type: list
      elements: str
      returned: state=present and a checkpoint was made
      sample: [snap-1763900000]
    renamed_from:
      description: With O(rename), the container's name on the host that sent it (this result's C(container) is its
        name here).
      type: str
      returned: when the container was received under another name
      sample: billing
    created:
      description: The container was created from the archive's manifest (O(create=true)), or would be in check mode.
      type: bool
      returned: when it happened
      sample: true
    archive:
      description: The archive written or read.
      type: str
      returned: state=exported, state=imported, or restored from an archive
      sample: /var/lib/fleet-checkpoint/archives/billing-worker-move.tar.zst
    sha256:
      description: sha256 of the archive written.
      type: str
      returned: state=exported and changed
      sample: 3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
    encrypted:
      description: Whether the archive written is encrypted (O(encryption_key) or O(encryption_key_file)).
      type: bool
      returned: state=exported and changed
      sample: true
    started_at:
      description: Docker's start time of the restored container (a later run compares it to tell whether the
        container is still the process restored from the checkpoint).
      type: str
      returned: state=restored and restored
      sample: "2026-11-23T19:05:35.878697882Z"
    manifest:
      description: The archive's manifest (checkpoint, created, method, size, versions, container config).
      type: dict
      returned: state=imported
      sample: {"checkpoint": "move", "method": "containerd", "size": 268935168, "versions": {"criu": "4.2.1"}}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import runner
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.argument_spec import argument_spec
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.options import MUTUALLY_EXCLUSIVE


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), mutually_exclusive=MUTUALLY_EXCLUSIVE,
                           supports_check_mode=True)
    answer, failed = runner.run(module, diff=module._diff)
    if failed:
        module.fail_json(**answer)
    module.exit_json(**answer)


if __name__ == "__main__":
    main()
