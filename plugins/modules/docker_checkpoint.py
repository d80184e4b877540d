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
  - B(Restart policies.) A container checkpointed with a stop would be cold-started by Docker after a reboot (its
    memory state lost) when its restart policy is C(always) or C(unless-stopped). The policy is therefore set to
    C(no) before the dump, recorded with the checkpoint, and put back after a successful restore.
  - B(Restores are real.) Docker's C(start --checkpoint) on a running container silently does nothing; this module
    only ever restores a stopped container, and after the restore it checks that the container runs the recorded
    process tree (same in-container PIDs and command lines) in its own time namespace, as after a CRIU restore.
    It returns RV(results[].resumed) and fails when the container was started afresh instead.
  - B(Stopped means stopped.) Docker's checkpoint API leaves a container running, silently, when that container was
    kept alive across a daemon restart (live-restore). After every stopping checkpoint the module checks the
    container stopped; if not, the checkpoint is discarded and redone through containerd's task API (which stops
    it), or the module fails naming the cause.
  - B(Fast path.) With O(method=auto), the dump goes through containerd's task API (its C(Tasks.Checkpoint) call,
    made by the module itself, as C(ctr -n moby task checkpoint --image-path) would but without pausing the task
    around the dump) straight into Docker's checkpoint directory, skipping the copy through containerd's content
    store that takes most of Docker's own checkpoint time. It is used only when C(ctr), containerd's socket, Docker's
    C(moby) namespace and the container's task (running, same PID) are exactly as expected; otherwise Docker's API
    is used. RV(results[].method) says which path ran.
  - B(Fast restore.) C(docker start --checkpoint) copies the checkpoint through containerd's content store and
    unpacks it again (most of its time). For the restore, the memory pages files are moved beside the checkpoint
    (root-only) and replaced by relative links, so that only the small images are copied and CRIU reads the pages
    in place; they are put back right after. RV(results[].restore_path) says which way ran.
  - Checkpoints hold the whole memory of the container's processes, secrets included. Checkpoint directories are
    made root-only (0700, files 0600); archives are written 0600. Imported archives are checked entry by entry
    (no absolute paths, no C(..), no links, no device files) and file by file (size and sha256 from the manifest).
  - fleet.checkpoint keeps a small metadata file (C(fleet-checkpoint.json)) inside each checkpoint directory it makes
    (restart policy, dump path, process tree, versions, creation time). Docker and CRIU ignore it.
author:
  - fleet.checkpoint maintainers (@fleet-checkpoint)
extends_documentation_fragment:
  - fleet.checkpoint._docker_host
  - fleet.checkpoint._docker_host.attributes
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
  container:
    description:
      - Name or id of the container. Mutually exclusive with O(containers) and O(all_running).
    type: str
  containers:
    description:
      - Names or ids of several containers, handled in parallel.
    type: list
    elements: str
  all_running:
    description:
      - V(true) selects containers by state instead of by name; V(false) or unset needs O(container) or
        O(containers).
      - With O(state=present), every running container (narrowed by O(filters) and O(exclude)).
      - With any other state, every container that has the checkpoint O(name) (narrowed the same way), for example
        to restore all containers of a host after a reboot.
    type: bool
  filters:
    description:
      - Docker Engine container filters applied with O(all_running), for example a C(label) key with the list
        C([app=web]). Each value is a string or a list of strings.
    type: dict
  exclude:
    description:
      - Names or ids of containers to leave out with O(all_running).
    type: list
    elements: str
    default: []
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
      - V(imported) replaces a different checkpoint of the same name.
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
        containerd's content store (see B(Fast restore) above); after a failed linked restore V(auto) tries again
        with Docker's own copy, V(containerd) fails. V(api) always lets Docker copy them. Docker copies them also
        when they cannot be linked (with a warning) and when CRIU is configured with C(auto-dedup).
    type: str
    choices: [auto, api, containerd]
    default: auto
  target:
    description:
      - With O(state=restored), the stopped container to restore into (created beforehand, from the same image).
        The checkpoint of O(container) is copied into its checkpoint directory first. Only with O(container).
    type: str
  archive_path:
    description:
      - The archive file for O(state=exported), O(state=imported) or O(state=restored) with one container.
    type: path
  archive_dir:
    description:
      - A directory of archives, named C(<container>-<name>.tar.zst) (C(.tar.gz), C(.tar)), for any number of
        containers. Created 0700 when missing.
    type: path
  compression:
    description:
      - Compression of exported archives. V(zstd) needs the C(zstd) command on the managed host; V(gzip) uses
        Python's own (fast level). Imports recognise the compression from the file itself.
    type: str
    choices: [zstd, gzip, none]
    default: zstd
  encryption_key:
    description:
      - Encrypt exported archives at rest with this passphrase (at least 16 characters; for example the output of
        C(openssl rand -base64 32), kept in Ansible Vault or an AWX credential), and decrypt archives on import or
        restore with it.
      - AES-256-GCM in 1 MiB chunks (a key derived with scrypt, a random salt per archive); any change to the archive,
        a truncation or a wrong key makes the import fail before anything is written. Encrypted archives are named
        C(<container>-<name>.tar.zst.enc).
      - With a key, an archive that is not encrypted is refused. Needs the Python C(cryptography) library on the
        managed host (Debian package C(python3-cryptography)).
      - Never logged or returned.
    type: str
  encryption_key_file:
    description:
      - Like O(encryption_key), the passphrase read from this file on the managed host (mode C(0600) or stricter,
        one trailing newline ignored).
    type: path
  keep_last:
    description:
      - With O(state=present) or O(state=restored), after success, remove older checkpoints of the same container
        (only those made by fleet.checkpoint) so that this many remain, the new or restored one included.
    type: int
  max_age:
    description:
      - With O(state=present) or O(state=restored), after success, remove checkpoints of the same container made by
        fleet.checkpoint that are older than this. Seconds, or a number with C(s), C(m), C(h), C(d) or C(w).
    type: str
  lock_timeout:
    description:
      - One fleet.checkpoint change at a time per host - a run waits this many seconds for another one (another
        playbook, another AWX job) to finish, then fails naming it. The lock is C(/var/lib/fleet-checkpoint/lock).
      - Not taken in check mode.
    type: int
    default: 300
  create:
    description:
      - With O(state=imported) or O(state=restored) from an archive, create the container when it does not exist,
        from the configuration in the archive's manifest - image, command, entrypoint, environment, labels, hostname,
        working directory, user, ports, mounts and networks (restart policy C(no) until the restore puts the recorded
        one back).
      - The image, user-defined networks and bind mount sources must already exist on the host; what is missing is
        named in the error and nothing is created.
    type: bool
    default: false
  manifest_path:
    description:
      - A host manifest (JSON, root-only) recording a checkpoint run and what became of each container.
      - With O(state=present), written after the run - the containers found, their checkpoint, restart policy, dump
        path, size and result. While it lists containers not restored yet, another O(state=present) run with the
        same O(manifest_path) checkpoints nothing (unless O(force=true)), so a re-run cannot overwrite them.
      - With O(state=restored), read - the containers still to restore and the checkpoint name come from it (no
        O(container), O(containers), O(all_running) or O(name)); afterwards each container's outcome is recorded
        (C(restored), C(cold_started), C(left_stopped), C(restore_failed)). C(left_stopped) and C(restore_failed) are
        tried again by the next run; once none is left, further runs change nothing. No manifest - nothing to do.
    type: path
  fallback:
    description:
      - With O(manifest_path) and O(state=restored), what to do with a container whose restore fails.
      - V(cold_start) starts it afresh (its memory state is lost) with its recorded restart policy, reports it as
        C(cold_started) with a warning, and does not fail the task.
      - V(leave_stopped) leaves it stopped (C(left_stopped)) for a later attempt, without failing the task.
      - V(fail) records C(restore_failed) and fails the task.
    type: str
    choices: [cold_start, leave_stopped, fail]
    default: fail
  verify:
    description:
      - With O(state=restored), check that the container resumed from the checkpoint (recorded process tree back, own
        time namespace) and fail otherwise.
    type: bool
    default: true
  parallel:
    description:
      - How many containers are handled at once. Default is the number of CPUs of the managed host.
    type: int
  timeout:
    description:
      - Seconds to wait for one dump or restore (and, with O(send_to), for one transfer).
    type: int
    default: 600
  send_to:
    description:
      - With O(state=present), send each checkpoint (just made, or found when it exists) straight to another host
        over SSH, to a restore waiting there with O(receive_timeout) - the two halves of a live migration
        (C(playbooks/migrate.yml) uses them). Nothing is written on either side but the checkpoint itself; it is
        streamed as a tar (manifest first, per-file sha256 checked as it lands), uncompressed, encrypted and
        authenticated by SSH.
      - Runs C(ssh) on this host as root, with the target's host key checked (O(send_to.known_hosts_file)) and its
        own key (O(send_to.identity_file), else root's default keys); the target runs a few lines of Python 3 (its
        C(python3)) that copy the stream into the waiting restore's FIFO, and refuse to start when no restore waits.
      - Sending is an action, so the task reports a change every time it sends (RV(results[].action) is V(sent) when
        the checkpoint existed already).
      - If sending fails, the checkpoint stays here (and the container stays stopped, as any checkpoint leaves it);
        the task fails saying so. Restore it here with O(state=restored).
    type: dict
    suboptions:
      host:
        description: The target's address (name or IP) as this host reaches it.
        type: str
        required: true
      user:
        description: The SSH user on the target (it must be able to write to O(send_to.directory), so root).
        type: str
        default: root
      port:
        description: The target's SSH port.
        type: int
        default: 22
      directory:
        description: The directory given as O(archive_dir) to the waiting restore on the target.
        type: path
        required: true
      known_hosts_file:
        description:
          - A known_hosts file holding the target's host key; the connection is refused when the key differs. Without
            it, SSH's own settings for root on this host apply.
        type: path
      identity_file:
        description: The private key to log in with (default, root's own keys).
        type: path
      python:
        description: The Python 3 interpreter on the target.
        type: str
        default: python3
  receive_timeout:
    description:
      - With O(state=restored) and O(archive_dir), receive the checkpoint streamed by O(state=present) with O(send_to)
        from another host instead of reading an archive - waiting this many seconds for its first byte, which comes
        after the source's dump (the sender connects first, then dumps) - then restore it (with O(create=true), the
        container is created from the stream's manifest first, after checking the checkpoint's name and the free
        disk; if the stream then fails, that container is removed again).
      - Every selected container waits at once, whatever O(parallel) says (the sender sets the pace).
      - The wait is on a root-only FIFO C(<archive_dir>/<container>-<name>.stream); removing it ends the wait (the
        sending side gave up). Usually run with C(async) (and a C(poll) of 0) before the source's checkpoint, so that the
        restore starts the moment the last byte arrives.
      - The host's fleet.checkpoint lock (O(lock_timeout)) is held while waiting, so the sender must be another host.
    type: int
notes:
  - Needs root on the managed host (use C(become)).
  - Talks to the Engine API with Python's standard library; the Docker SDK is not needed on the managed host.
  - CRIU's error lines are included in failure messages when CRIU keeps a log (C(log-file) in
    C(/etc/criu/runc.conf), set by the P(fleet.checkpoint.criu#role) role).
  - Before a checkpoint the module runs C(criu --version) and C(criu check). A passing answer is remembered in
    C(/run/fleet-checkpoint) (root-only) until the host reboots or the CRIU binary changes, because neither can
    change in between. A failing check is asked again on every run.
  - A stopping checkpoint through containerd returns as soon as the container's processes are gone, as
    C(docker checkpoint create) does. Docker records the exit a moment later, and this module waits for that record
    before it acts on the container again. For that moment C(docker ps) and
    M(fleet.checkpoint.docker_checkpoint_info) may still show the container running.
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

- name: Restore it where it left off
  fleet.checkpoint.docker_checkpoint:
    container: billing-worker
    name: pre-reboot
    state: restored
  register: restored
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
  register: restore
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

- name: Live migration, step 3 - on the target, wait for the restore to finish
  ansible.builtin.async_status:
    jid: "{{ receiver.ansible_job_id }}"
  register: moved
  until: moved.finished
  retries: 600
  delay: 1
  become: true
  delegate_to: web-2

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
      description:
        - What was done - V(created), V(recreated), V(removed), V(restored), V(exported), V(imported), V(sent) (an
          existing checkpoint sent with O(send_to)), V(unchanged), or V(failed).
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
      description: The dump path used (V(containerd) or V(api)); for an existing checkpoint, the one recorded.
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
      description:
        - Seconds the dump call itself took (Docker's checkpoint API or containerd's task checkpoint, that is the
          freeze, CRIU's dump and the images written), without the checks, hashing and metadata around it.
      type: float
      returned: state=present, when a checkpoint was made
      sample: 0.27
    containerd_client:
      description:
        - Which client made the fast path's checkpoint call. V(direct) is the module's own call to containerd's
          C(Tasks.Checkpoint); V(ctr) is containerd's C(ctr), used only when containerd took no request from the
          module's own client (its socket took no connection, or it refused the call before processing it).
      type: str
      returned: state=present, when the checkpoint went through containerd's task API
      choices: [direct, ctr]
      sample: direct
    restore_call_seconds:
      description:
        - Seconds of Docker's restore call (C(POST /containers/{id}/start?checkpoint=), all attempts), without the
          checks, links and verification around it. Not the same as C(restore_seconds) in RV(summary),
          which is the whole operation.
      type: float
      returned: state=restored, when a container was restored
      sample: 0.9
    import_seconds:
      description:
        - Seconds the import of the archive took before the restore (reading, decompressing and checking it,
          unpacking the checkpoint); with O(receive_timeout), the seconds from the stream's first byte to the
          checkpoint checked and in place.
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
      description: With O(send_to), where the checkpoint went and how long it took (only C(to) in check mode).
      type: dict
      returned: state=present with O(send_to)
      sample: {"to": "root@web-2:/var/lib/fleet-checkpoint/migrate/billing-worker-move.stream", "bytes": 268939264,
               "seconds": 1.71, "started_at": 1764600001.02}
    received:
      description:
        - With O(receive_timeout), what arrived - C(bytes), C(waited_seconds) before the first byte, C(seconds) from
          the first byte to the checkpoint checked and in place, C(finished_at) (seconds since the epoch).
      type: dict
      returned: state=restored with O(receive_timeout), when a checkpoint was received
      sample: {"bytes": 268939264, "waited_seconds": 12.4, "seconds": 1.75, "finished_at": 1764600002.8}
    restore_path:
      description:
        - How the restore got its memory pages - V(linked) (read in place through links, see B(Fast restore)) or
          V(copied) (Docker's own copy through containerd's content store).
      type: str
      returned: state=restored, when a container was restored
      sample: linked
    pruned:
      description: Older checkpoints removed by O(keep_last) or O(max_age).
      type: list
      elements: str
      returned: state=present and a checkpoint was made
      sample: [snap-1763900000]
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

import atexit
import os
import time

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import results as results_mod
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import run_manifest as host_manifest
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.crypto import (
    CryptoError,
    normalize_secret,
    require_cryptography,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import (
    PreflightError,
    check_experimental,
    criu_log_path,
    criu_preflight,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.names import (
    validate_checkpoint_name,
    validate_container_ref,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.ops import (
    CheckpointOps,
    DaemonUnavailable,
    OpError,
    cold_start,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.selection import (
    select_containers,
    unique_by_id,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.store import parse_age
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.processes import time_namespace
from ansible_collections.fleet.checkpoint.plugins.module_utils._containerd.task import ContainerdTask
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.daemon_watch import DaemonWatch
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI, DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.change_lock import HostLock, LockTimeout


class Context:
    """What every container's operation shares."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def argument_spec():
    return dict(
        name=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent", "restored", "exported", "imported"]),
        container=dict(type="str"),
        containers=dict(type="list", elements="str"),
        all_running=dict(type="bool"),
        filters=dict(type="dict"),
        exclude=dict(type="list", elements="str", default=[]),
        leave_running=dict(type="bool", default=False),
        force=dict(type="bool", default=False),
        method=dict(type="str", default="auto", choices=["auto", "api", "containerd"]),
        target=dict(type="str"),
        archive_path=dict(type="path"),
        archive_dir=dict(type="path"),
        compression=dict(type="str", default="zstd", choices=["zstd", "gzip", "none"]),
        encryption_key=dict(type="str", no_log=True),
        encryption_key_file=dict(type="path", no_log=False),
        keep_last=dict(type="int"),
        max_age=dict(type="str"),
        verify=dict(type="bool", default=True),
        parallel=dict(type="int"),
        timeout=dict(type="int", default=600),
        manifest_path=dict(type="path"),
        lock_timeout=dict(type="int", default=300),
        create=dict(type="bool", default=False),
        send_to=dict(type="dict", options=dict(
            host=dict(type="str", required=True),
            user=dict(type="str", default="root"),
            port=dict(type="int", default=22),
            directory=dict(type="path", required=True),
            known_hosts_file=dict(type="path"),
            identity_file=dict(type="path"),
            python=dict(type="str", default="python3"),
        )),
        receive_timeout=dict(type="int"),
        fallback=dict(type="str", default="fail", choices=["cold_start", "leave_stopped", "fail"]),
        docker_host=dict(type="str", default="unix:///var/run/docker.sock"),
        api_timeout=dict(type="int", default=60),
    )


def check_options(params):
    """Every input problem the module can see before touching anything, as a list of messages."""
    errors = []
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
    if params["fallback"] != "fail" and not from_manifest:
        errors.append("fallback is used only with state=restored and manifest_path (the manifest records what to "
                      "cold-start and with which restart policy)")
    for ref in ([params["container"]] if params["container"] is not None else []) + (params["containers"] or []) \
            + (params["exclude"] or []) + ([params["target"]] if params["target"] is not None else []):
        try:
            validate_container_ref(ref)
        except ValueError as exc:
            errors.append(str(exc))
    selectors = [key for key in ("container", "containers") if params[key] is not None]
    selectors += ["all_running=true"] if params["all_running"] else []
    if from_manifest and selectors:
        errors.append(f"{', '.join(selectors)} cannot be combined with manifest_path for state=restored: the manifest "
                      "says which containers to restore")
    elif not selectors and not from_manifest:
        errors.append("no container selected: give container, containers, or all_running=true")
    elif len(selectors) > 1:
        errors.append(f"{' and '.join(selectors)} are mutually exclusive: select containers one way")
    if params["containers"] is not None and not params["containers"]:
        errors.append("containers is an empty list: name at least one container, or use all_running=true")
    single = params["container"] is not None
    if params["target"] is not None and (state != "restored" or not single):
        errors.append("target is used only with state=restored and a single container")
    if params["archive_path"] and not single:
        errors.append("archive_path is for one container; use archive_dir for several")
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
    if params["parallel"] is not None and params["parallel"] < 1:
        errors.append(f"parallel must be 1 or more, not {params['parallel']}")
    if params["lock_timeout"] < 0:
        errors.append(f"lock_timeout must be 0 or more seconds, not {params['lock_timeout']}")
    if params["timeout"] < 1 or params["api_timeout"] < 1:
        errors.append("timeout and api_timeout must be 1 second or more")
    if params["archive_dir"] and os.path.exists(params["archive_dir"]) and not os.path.isdir(params["archive_dir"]):
        errors.append(f"archive_dir {params['archive_dir']} exists and is not a directory")
    if params["archive_path"] and os.path.isdir(params["archive_path"]):
        errors.append(f"archive_path {params['archive_path']} is a directory: give a file name, or use archive_dir")
    if state in ("imported",) and params["archive_path"] and not os.path.exists(params["archive_path"]):
        errors.append(f"archive_path {params['archive_path']} does not exist on the managed host")
    return errors


def stream_option_errors(params):
    """Problems with send_to and receive_timeout (a streamed checkpoint's two ends)."""
    errors = []
    state = params["state"]
    send_to = params.get("send_to")
    if send_to is not None:
        if state != "present":
            errors.append("send_to is used only with state=present (it sends the checkpoint made or found)")
        if not os.path.isabs(send_to["directory"] or ""):
            errors.append(f"send_to.directory must be an absolute path on the target, not {send_to['directory']!r}")
        if not 0 < send_to["port"] < 65536:
            errors.append(f"send_to.port must be 1-65535, not {send_to['port']}")
        if not (send_to["host"] or "").strip() or (send_to["host"] or "").startswith("-") \
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
    return errors


def manifest_shortcut(params, manifest):
    """The module's answer when the manifest alone settles it (nothing to restore, or a restore still pending)."""
    path = params["manifest_path"]
    if params["state"] == "restored":
        if manifest is None:
            return dict(changed=False, results=[], summary=[], manifest=None, checkpoint=None,
                        msg=f"no manifest at {path}: nothing to restore")
        if not host_manifest.pending(manifest) and not host_manifest.failed_dumps(manifest):
            return dict(changed=False, results=[], summary=host_manifest.summary(manifest), manifest=manifest,
                        checkpoint=manifest["checkpoint"], msg="every container of the manifest is settled already")
    elif manifest is not None and manifest.get("state") == "checkpointed" and not params["force"]:
        return dict(changed=False, results=[], summary=host_manifest.summary(manifest), manifest=manifest,
                    checkpoint=manifest["checkpoint"],
                    msg=f"{path} lists checkpoints not restored yet ({', '.join(host_manifest.pending(manifest))}): "
                        "nothing is checkpointed again; restore them first (or force=true)")
    return None


def record_manifest(module, ctx, manifest, results, answer):
    """Write the manifest for a present run, or apply a restore run (with its fallback); True when a container is
    left neither restored nor started."""
    params = module.params
    if params["state"] == "present":
        updated = host_manifest.new(os.uname().nodename, params["name"], time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                    results, params["leave_running"])
        failed = answer.get("failed", False) or any(result.get("failed") for result in results)
    else:
        cold, dumps = {}, {}
        recorded = {item["container"]: item.get("restart_policy") for item in manifest["containers"]}
        if params["fallback"] == "cold_start" and not module.check_mode:
            for result in results:
                if result.get("failed") and "not found on this host" not in result.get("msg", "") \
                        and not result.get("daemon_unavailable"):
                    cold[result["container"]] = cold_start(ctx.api, result["container"], recorded.get(result["container"]))
        if not module.check_mode:
            # Containers whose dump failed: still running (CRIU rolled back), or started afresh if the dump stopped them.
            for name in host_manifest.failed_dumps(manifest):
                dumps[name] = settle_failed_dump(ctx.api, name, recorded.get(name))
        updated = host_manifest.apply_restore(manifest, results, params["fallback"], cold, dumps)
        if not module.check_mode:
            updated = confirm_restored(module, ctx.api, updated, results)
        # Not done while a container waits for its restore (a daemon outage, a container lost after its restore).
        failed = any(item["status"] == "restore_failed" for item in updated["containers"]) or (
            not module.check_mode and any(item["status"] == "checkpointed" for item in updated["containers"]))
        answer["changed"] = answer["changed"] or any(started[0] for started in cold.values()) or any(
            value != "kept_running" and value[0] for value in dumps.values())
        for name, (ok, _message) in cold.items():
            if ok:
                module.warn(f"{name} could not be restored from its checkpoint and was started afresh (cold start): "
                            "its memory state is lost")
    if not module.check_mode:
        host_manifest.write(params["manifest_path"], updated)
        answer["changed"] = True
    answer["manifest"] = updated
    answer["summary"] = host_manifest.summary(updated)
    return failed


def confirm_restored(module, api, manifest, results):
    """At the end of a restore run: are the containers it restored still running as the restored process? A Docker
    daemon killed and restarted during the run (without live-restore) kills them; they are restored again next run."""
    restored = [r["container"] for r in results if not r.get("failed") and r.get("action") == "restored"]
    states = {}
    for name in restored:
        try:
            found = api.get(f"/containers/{name}/json").get("State") or {}
            states[name] = (bool(found.get("Running")), found.get("StartedAt"))
        except DockerAPIError:
            states[name] = None
    updated, lost = host_manifest.confirm_restored(manifest, states)
    for name in lost:
        module.warn(f"{name} was restored, then stopped before this run ended (its Docker daemon restarted?): run the "
                    "restore again to bring it back from the same checkpoint")
    return updated


def reopen_lost(module, params, manifest):
    """An unfinished restore run (e.g. its Docker daemon was killed midway): containers it had restored that the
    daemon's restart killed are restored again (see _host_manifest.reopen_lost). Nothing is stopped."""
    if manifest.get("state") != "checkpointed":
        return manifest
    try:
        api = DockerAPI(params["docker_host"], timeout=params["api_timeout"])
        states = {}
        for item in manifest["containers"]:
            if item.get("status") == "restored":
                try:
                    found = api.get(f"/containers/{item['container']}/json")
                except DockerAPIError:
                    continue  # gone: nothing to bring back
                if item.get("id") and found.get("Id") != item["id"]:
                    continue  # another container by that name now
                state = found.get("State") or {}
                states[item["container"]] = (bool(state.get("Running")), state.get("StartedAt"), state.get("ExitCode"))
        updated, reopened = host_manifest.reopen_lost(manifest, states)
    except (ValueError, DockerAPIError) as exc:
        module.fail_json(msg=f"cannot use the Docker Engine: {exc}", checkpoint=params["name"], results=[])
    for name in reopened:
        module.warn(f"{name} was restored by an earlier run that did not finish, then killed (its Docker daemon "
                    "restarted?): it is restored again from the same checkpoint")
    return updated


def settle_failed_dump(api, name, policy):
    """'kept_running' when the container runs, else the (ok, message) of starting it afresh."""
    try:
        running = (api.get(f"/containers/{name}/json").get("State") or {}).get("Running")
    except DockerAPIError as exc:
        return False, str(exc)
    return "kept_running" if running else cold_start(api, name, policy)


def run_module():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[("archive_path", "archive_dir"), ("encryption_key", "encryption_key_file")],
        supports_check_mode=True,
    )
    params = module.params
    errors = check_options(params)
    if errors:
        module.fail_json(msg="; ".join(errors), checkpoint=params["name"], results=[])
    state = params["state"]
    secret = None
    if params["encryption_key"] is not None or params["encryption_key_file"]:
        try:
            secret = normalize_secret(params["encryption_key"], params["encryption_key_file"])
            require_cryptography()
        except CryptoError as exc:
            module.fail_json(msg=str(exc), checkpoint=params["name"], results=[])

    if os.geteuid() != 0:
        module.fail_json(msg="docker_checkpoint needs root on the managed host (Docker's checkpoint directories are "
                             "root-only): use become: true", checkpoint=params["name"], results=[])
    if not module.check_mode:
        # Held until the module exits (an flock: released with the process, even if it is killed).
        try:
            lock = HostLock(timeout=params["lock_timeout"], what=f"docker_checkpoint state={state}").__enter__()
        except (LockTimeout, OSError) as exc:
            module.fail_json(msg=f"{exc}", checkpoint=params["name"], results=[])
        # exit_json and fail_json end the process: the holder's name is cleared then (the lock file is left empty).
        atexit.register(lock.__exit__, None, None, None)
        if lock.waited >= 1:
            module.warn(f"waited {lock.waited}s for another fleet.checkpoint run on this host to finish")
    manifest = None
    if params["manifest_path"]:
        try:
            manifest = host_manifest.read(params["manifest_path"])
        except host_manifest.HostManifestError as exc:
            module.fail_json(msg=f"manifest_path {exc}: move it away to start afresh", results=[])
        if state == "restored" and manifest is not None:
            manifest = reopen_lost(module, params, manifest)
        early = manifest_shortcut(params, manifest)
        if early:
            module.exit_json(**early)
        if state == "restored":
            params["name"] = manifest["checkpoint"]

    def run(argv):
        # From worker threads: exceptions are raised (and reported per container), never fail_json in a thread.
        return module.run_command(argv, handle_exceptions=False)

    try:
        api = DockerAPI(params["docker_host"], timeout=params["api_timeout"])
        info = api.info()
    except (ValueError, DockerAPIError) as exc:
        module.fail_json(msg=f"cannot use the Docker Engine: {exc}", checkpoint=params["name"], results=[])
    versions = {"docker": info.get("ServerVersion"), "kernel": info.get("KernelVersion"), "criu": None}
    try:
        if state in ("present", "restored", "absent"):
            check_experimental(info)
        if state in ("present", "restored"):
            versions["criu"] = criu_preflight(run, module.get_bin_path("criu"), works=state == "present",
                                              record=not module.check_mode)
        if params["send_to"] and not module.get_bin_path("ssh"):
            raise PreflightError("send_to needs the ssh client on this host: install the openssh-client package")
        if state == "exported" and params["compression"] == "zstd" and not module.get_bin_path("zstd"):
            raise PreflightError("compression=zstd needs the zstd command on the managed host: install the zstd "
                                 "package (or use compression=gzip or none)")
        if state == "restored" and manifest is not None:
            refs = host_manifest.pending(manifest)
        else:
            refs = unique_by_id(api, select_containers(api, params, info.get("DockerRootDir") or "/var/lib/docker"))
    except (PreflightError, DockerAPIError) as exc:
        module.fail_json(msg=str(exc), checkpoint=params["name"], results=[])

    ctr = module.get_bin_path("ctr")
    ctx = Context(
        api=api, root_dir=info.get("DockerRootDir") or "/var/lib/docker", run=run, check_mode=module.check_mode,
        state=state, versions=versions,
        containerd=ContainerdTask(run, ctr, timeout_path=module.get_bin_path("timeout")) if ctr else None,
        criu_log=criu_log_path(), zstd=module.get_bin_path("zstd"), host_time_ns=time_namespace("self"),
        options=dict(params, secret=secret, max_age_seconds=parse_age(params["max_age"]) if params["max_age"] else None,
                     archive_mode=bool(params["archive_path"] or params["archive_dir"])
                     and params["receive_timeout"] is None,
                     receive=params["receive_timeout"] is not None),
    )
    ops = CheckpointOps(ctx)
    operation = getattr(ops, state)
    watch = DaemonWatch(enabled=params["docker_host"] == "unix:///var/run/docker.sock")

    def one(ref):
        ops.begin()
        try:
            return operation(ref)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            # One container's failure must not hide the others' results (some may have been changed already).
            message = str(exc) if isinstance(exc, OpError) else f"{type(exc).__name__}: {exc}"
            result = results_mod.failure(ref, message, ops.partial())
            if isinstance(exc, DaemonUnavailable) or (isinstance(exc, DockerAPIError) and exc.status is None):
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
        results = [one(ref) for ref in refs]  # one at a time: no thread pool (its import alone costs ~25 ms)
    else:
        from concurrent.futures import ThreadPoolExecutor  # pylint: disable=import-outside-toplevel

        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, refs))
    changed, failed, message = results_mod.summarize(results)
    for warning in results_mod.warnings(results):
        module.warn(warning)
    answer = dict(changed=changed, checkpoint=params["name"], results=results, msg=message)
    if params["manifest_path"]:
        failed = record_manifest(module, ctx, manifest, results, answer)
        if failed:
            answer["msg"] = f"{message}; manifest: " + "; ".join(
                f"{row['container']} {row['status']}" for row in answer["summary"])
    difference = results_mod.diff(state, results)
    if module._diff and difference:
        answer["diff"] = difference
    if failed or answer.get("failed"):
        answer.pop("failed", None)
        module.fail_json(**answer)
    module.exit_json(**answer)


def main():
    run_module()


if __name__ == "__main__":
    main()
