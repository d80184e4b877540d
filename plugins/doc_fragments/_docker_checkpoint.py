# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later


class ModuleDocFragment:
    """docker_checkpoint's options, grouped by subject as its code is (private to fleet.checkpoint): which containers
    (_checkpoint/selection.py), archives (archive.py, export.py, import_.py), streams (send.py, receive.py), groups
    (group_dump.py, group_restore.py) and the host manifest (recorded_run.py), retention (retention.py), the run
    (runner.py) with the notes on how it works. The module's own file keeps the options every operation reads."""

    # No options of its own: the groups below are what modules include.
    DOCUMENTATION = r"""
options: {}
"""

    SELECTION = r"""
options:
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
"""

    ARCHIVE = r"""
options:
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
  archive_layout:
    description:
      - The layout of an exported archive. V(fleet) is fleet.checkpoint's own (its manifest, then the checkpoint's
        files), which O(state=imported) and O(state=restored) read.
      - V(podman) is the layout of C(podman container checkpoint --export) (CRIU's images under C(checkpoint/), a
        C(config.dump) and a C(spec.dump) written from C(docker inspect), CRIU's C(stats-dump) when the dump kept
        it), so that C(checkpointctl show) and C(checkpointctl inspect) read a Docker checkpoint. checkpointctl shows
        its engine as containerd (the engine Docker runs on). Export only, never encrypted; neither fleet.checkpoint
        nor Podman restores from it.
    type: str
    choices: [fleet, podman]
    default: fleet
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
  create:
    description:
      - With O(state=imported) or O(state=restored) from an archive, create the container when it does not exist,
        from the configuration in the archive's manifest - image, command, entrypoint, environment, labels, hostname,
        working directory, user, ports, mounts and networks (restart policy C(no) until the restore puts the recorded
        one back).
      - The image, user-defined networks and bind mount sources must already exist on the host; what is missing is
        named in the error and nothing is created.
      - The manifest is not trusted (whoever can write an archive or a stream could write it). What in it reaches
        into the host is refused unless allowed - a bind mount (O(allow_bind_mounts)), the host's network or another
        container's (O(allow_network_modes)) - each refused setting is named and nothing is created. Privileges,
        capabilities, devices and PID modes are never taken from a manifest.
    type: bool
    default: false
  allow_bind_mounts:
    description:
      - With O(create=true), the host paths a container created from a manifest may bind-mount - each allows that
        path and what is below it, for example C(/srv/billing). A bind mount of any other source is refused.
    type: list
    elements: str
    default: []
  allow_network_modes:
    description:
      - With O(create=true), the network modes a container created from a manifest may use beyond its own networks -
        V(host) (the host's network stack) and V(container) (another container's). Others are refused.
    type: list
    elements: str
    choices: [host, container]
    default: []
"""

    STREAM = r"""
options:
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
      - With O(send_to.via=relay), for hosts that cannot reach each other, it dials nothing - it waits on a root-only
        Unix socket C(<directory>/<container>-<name>.send) on this host for the controller's relay
        (M(fleet.checkpoint.stream_relay)), which carries the stream into the restore waiting on the target; one
        container at a time with O(parallel=1).
    type: dict
    suboptions:
      via:
        description:
          - V(ssh) logs in to O(send_to.host) from this host; V(relay) waits for the controller's relay to connect.
        type: str
        choices: [ssh, relay]
        default: ssh
      host:
        description: The target's address (name or IP) as this host reaches it. Required with O(send_to.via=ssh).
        type: str
      user:
        description: The SSH user on the target (it must be able to write to O(send_to.directory), so root).
        type: str
        default: root
      port:
        description: The target's SSH port.
        type: int
        default: 22
      directory:
        description:
          - The directory given as O(archive_dir) to the waiting restore on the target.
          - With O(send_to.via=relay), the directory on this host where the sender's socket is made (root-only).
        type: path
        required: true
      ready_timeout:
        description:
          - Seconds to wait for the target's restore to answer that it waits (with O(send_to.via=relay), for the
            relay to connect too), before the container is touched.
        type: int
        default: 30
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
      writable_layer:
        description:
          - Send the container's writable layer with its checkpoint - what C(docker diff) shows (added, changed and
            deleted files, with owners, modes, times, hard links, sparse files and the extended attributes C(user.*),
            file capabilities and POSIX ACLs), read from overlay2's upper directory once the dump has stopped the
            container. The files the processes hold open are then where CRIU expects them on the target.
          - Needs the overlay2 storage driver on both hosts. The receiving restore must create the container
            (O(create=true)) and the same image (same ID) must be there; the layer is put in place before the restore.
          - Every entry is listed in an index (validated strictly on the target, with bounds), every file checked
            against its sha256. Device nodes are refused; socket files are left out (whoever binds them makes them).
          - Off by default here (the checkpoint's memory alone, for a container that exists on the target);
            C(playbooks/migrate.yml) turns it on.
        type: bool
        default: false
      volumes:
        description:
          - Send the data of the container's volumes with its checkpoint. V(all) every volume of the C(local) driver
            without options; V(named) the same but not anonymous volumes (named by Docker with 64 hex digits, made
            empty on the target); V(none) none (the target makes empty volumes, as C(docker run) would).
          - A carried volume is created on the target before the container and filled before the restore; a volume of
            that name that exists on the target already is refused, and so is a volume that another running container
            uses on this host, or one of another driver or with options (NFS, tmpfs, bind) - use V(none) for those.
          - Bind mounts never travel - their sources must exist on the target.
          - V(none) by default here; C(playbooks/migrate.yml) sends V(all).
        type: str
        choices: [all, named, none]
        default: none
      precopy:
        description:
          - With disk state to send, send it in two passes, as rsync would - first, before the container is touched,
            every file and directory as it is (on the same connection, right after the target answered that it
            waits); then, once the dump has stopped the container, the complete index and the bytes of only the
            files that changed since (a different inode, size, modification or change time). The downtime then grows
            with what the container writes, not with the size of its layer and volumes.
          - A file changed in the second before the first pass, or while it is read, is left to the second pass;
            one that arrives damaged in the first pass is dropped by the target (the second pass sends it, as it
            changed).
          - V(false) sends everything during the freeze, and so does a container whose files hold less than 1 MiB.
        type: bool
        default: true
      lazy:
        description:
          - Post-copy - move the container with its memory following it. The container is frozen and dumped here
            without its memory (C(runc checkpoint --lazy-pages)); only those small images travel before the target's
            restore, which resumes the container at once; its memory pages are then served from here, over a second
            SSH connection, on demand and in the background until every page has arrived. The downtime does not
            grow with the memory.
          - Until the last page has arrived the container on the target depends on this host. If the page transfer
            breaks, CRIU thaws the container here (it runs on from where it froze) and the target kills its copy -
            what that copy did since its resume is lost. Choose it knowingly.
          - Only with O(send_to.via=ssh), without disk state (O(send_to.writable_layer), O(send_to.volumes)); the
            receiving restore must create the container (O(create=true)). Both hosts need CRIU with
            non-cooperative userfaultfd (C(criu check --feature uffd-noncoop)), and CRIU's page server pipes of
            3.2 MiB (root with CAP_SYS_RESOURCE, or C(fs.pipe-max-size) at least 4194304), and the target Docker 24
            or later (container annotations). The page server listens only inside a network namespace of its own; no
            port is opened on either host.
          - Every page must have arrived within O(timeout) seconds of the freeze; otherwise the move is called off as
            if the transfer had broken (the container runs on here).
        type: bool
        default: false
      memory_rounds:
        description:
          - Pre-copy - send the container's memory in up to this many rounds while it runs, before the freeze. The
            first round sends all of it (C(runc checkpoint --pre-dump)); each further round only the pages written
            since the round before (the kernel's soft-dirty bits tell which). The rounds stop early once
            O(send_to.memory_goal) percent of the memory is in sync, or when a round sends as much as the one before
            (the container writes as fast as it is sent). Then the container is frozen and dumped, and only what
            changed since the last round travels during the freeze; the target restores the whole chain. The
            downtime grows with what the container writes, not with its memory.
          - The source host's kernel must track dirty memory (C(CONFIG_MEM_SOFT_DIRTY);
            C(criu check --feature mem_dirty_track)); a host without it is refused before anything is touched (use
            stop-and-copy, or O(send_to.lazy)). The pages the container writes during the rounds are sent more than
            once, so the rounds use more of the link than stop-and-copy does.
          - V(0) (the default) sends the memory during the freeze (stop-and-copy). Only with O(send_to.via=ssh) and
            without disk state for now. After the final dump the whole chain stays here as the container's
            checkpoint O(name), as a stop-and-copy's does - if sending fails, or the target's restore does, restore
            it here with O(state=restored).
        type: int
        default: 0
      memory_goal:
        description:
          - With O(send_to.memory_rounds), the percentage of the memory that must be in sync (not written since the
            last round) for the rounds to stop early - as Incus's C(migration.incremental.memory.goal).
        type: int
        default: 70
  receive_timeout:
    description:
      - With O(state=restored) and O(archive_dir), receive the checkpoint streamed by O(state=present) with O(send_to)
        from another host instead of reading an archive - waiting this many seconds for its first byte, which comes
        after the source's dump (the sender connects first, then dumps) - then restore it (with O(create=true), the
        container is created from the stream's manifest first, after checking the checkpoint's name and the free
        disk; if the stream then fails, that container is removed again).
      - When the stream carries disk state (O(send_to.writable_layer), O(send_to.volumes)), the container must be
        created by this restore (O(create=true), no container of that name here) - its volumes are created first,
        and its writable layer and volume data put in place before the restore. If that fails, the container and
        those volumes are removed again.
      - Every selected container waits at once, whatever O(parallel) says (the sender sets the pace).
      - The wait is on a root-only FIFO C(<archive_dir>/<container>-<name>.stream); removing it ends the wait (the
        sending side gave up). Usually run with C(async) (and a C(poll) of 0) before the source's checkpoint, so that the
        restore starts the moment the last byte arrives.
      - The host's fleet.checkpoint lock (O(lock_timeout)) is held while waiting, so the sender must be another host.
    type: int
  rename:
    description:
      - With O(receive_timeout) and O(create=true), the name here of a received container, by its name on the
        sending host - for example C(billing) as C(billing-2) when a container named C(billing) exists here already.
      - The stream is still awaited under the sender's name (C(<archive_dir>/billing-<name>.stream)); the container it
        creates, and everything the restore does, uses the new name. The result's RV(results[].container) is the new
        name and RV(results[].renamed_from) the sender's.
      - Keys must be among the received containers; values must be valid container names, and no two received
        containers may end up with the same name.
    type: dict
    default: {}
"""

    GROUP = r"""
options:
  consistent:
    description:
      - Treat the selected containers (O(containers), or O(all_running) with O(filters), for example a Compose
        project's C(label=com.docker.compose.project=shop)) as one application.
      - With O(state=present), every container is frozen first (Docker's pause, their cgroups' freezer), then all are
        dumped at once, then they are thawed together (O(leave_running=true)) or each ends with its dump while the
        others are still frozen. Every checkpoint shows the same instant, so what one has sent and the other not yet
        received is in a checkpoint, never lost or doubled. One member that cannot be checkpointed refuses or undoes
        the whole group (members stopped by their dump are restored from it, the others thawed, the group's
        checkpoints removed). The checkpoints record the group.
      - With O(state=restored), every member is restored at once and none is let run before all are restored (CRIU
        holds each with its processes rebuilt and its network locked, through an C(action-script) line added to
        C(/etc/criu/runc.conf) for the time of the restore). If one member cannot be restored, the others are not
        let run either. A checkpoint made as a group is restored only with all its members selected.
      - Established TCP connections between members come back on both ends only when the members get the same IP
        addresses again (Docker keeps a container's address only when it was given one, C(--ip) on a user-defined
        network; otherwise a restore may hand out another).
      - With O(send_to) (O(state=present)), the group is moved together, stop-and-copy - every member's connection to
        the target is made first (over SSH; through the controller's relay each waits for its turn), then the group
        is checkpointed at one instant and stops, then every checkpoint is sent. With O(receive_timeout)
        (O(state=restored)), every member's stream is waited for, and the group is restored together only once all
        have arrived; if one stream or one restore fails, no member runs here and the containers this call created
        are removed again (then the volumes made for them). A volume several members use travels once, with the
        first of them; the others wait for it here before their containers are made. Not with O(send_to.lazy) or
        O(send_to.memory_rounds). A group spread over several source hosts moves with O(barrier_dir) on each
        source and one receive of every member on the target.
      - Not with an archive or O(target).
    type: bool
    default: false
  barrier_dir:
    description:
      - With O(consistent=true), this host's members are one part of a group spread over several hosts, and this
        root-only directory on the host is where its part meets the others (the P(fleet.checkpoint.checkpoint#role)
        and P(fleet.checkpoint.restore#role) roles drive it; run the module asynchronously).
      - With O(state=present), once its members are frozen the module writes C(frozen) there and waits for C(go)
        (then dumps) or C(abort) (then thaws, checkpointing nothing). With O(state=restored), once its members are
        restored and held it writes C(ready) and waits the same way (C(abort) - CRIU kills what it rebuilt, no member
        runs). C(ended) says the module has finished. Earlier markers are removed when it starts.
      - With O(send_to) (straight to the target over SSH, not through the controller's relay), this host's part of
        a group moved from several hosts to one target (the C(fleet.checkpoint.migrate) playbook's
        C(fleet_checkpoint_migrate_sources)) meets the others twice. Once its connections are made and its disk
        state pre-copied, the module writes C(prepared) and waits, running, for C(freeze) (at most the longer of
        O(barrier_timeout) and O(timeout), as nothing is frozen yet); then it freezes its members, writes C(frozen) and
        waits for C(go) as above, and sends its checkpoints once they are dumped. The target receives every member
        of every source in one call (O(receive_timeout), without O(barrier_dir)) and restores them together;
        C(abort) at either meeting thaws this host's part (if frozen) and aborts its streams, so that the target
        restores none.
    type: path
  barrier_timeout:
    description:
      - Seconds the module waits at O(barrier_dir) for C(go) before it gives up by itself (thaws, or releases
        nothing), so that nothing stays frozen when the controller goes away.
    type: int
    default: 60
"""

    MANIFEST = r"""
options:
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
  release_run_lock:
    description:
      - With O(manifest_path) and O(state=restored), the id of the run that holds the host's run lock
        (M(fleet.checkpoint.run_lock), C(/var/lib/fleet-checkpoint/run.lock)). Once the restore went through (the
        task does not fail), the lock is given back in the same call, and RV(run_lock_released) says so; a playbook
        then needs no task of its own to give the host back (one Python start less per host). A lock held by another
        run is left alone, with a warning.
    type: str
"""

    RETENTION = r"""
options:
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
"""

    RUN = r"""
options:
  parallel:
    description:
      - How many containers are handled at once. Default is the number of CPUs of the managed host.
    type: int
  timeout:
    description:
      - Seconds to wait for one dump or restore (and, with O(send_to), for one transfer).
    type: int
    default: 600
  lock_timeout:
    description:
      - One fleet.checkpoint change at a time per host - a run waits this many seconds for another one (another
        playbook, another AWX job) to finish, then fails naming it. The lock is C(/var/lib/fleet-checkpoint/lock).
      - Not taken in check mode.
    type: int
    default: 300
notes:
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
  - fleet.checkpoint keeps a small metadata file (C(fleet-checkpoint.json)) inside each checkpoint directory it makes
    (restart policy, dump path, process tree, versions, creation time). Docker and CRIU ignore it.
"""
