"""Migration that moves the whole container: its writable layer and its volumes' data travel with its checkpoint.

The workload keeps a journal open in its own writable layer (CRIU reopens it on the target, at the size it had at the
dump), deletes a file of its image (an overlayfs whiteout) and replaces a directory (an opaque one), makes a sparse
file, a hard link, a FIFO, a symbolic link and a set-uid file owned by another user, and counts into a named volume.
"""

import json
import time

import pytest
from conftest import ROOT, ansible_json_env, ansible_playbook, counts, lab_exec, run, sh

IMAGE = "fleet-lab-workload:busybox"
PLAYBOOKS = ROOT / "playbooks"
VOLUME = "mig-data"
NAME = "mover-disk"
WORKLOAD = """set -e
rm -f /bin/vi
rm -rf /root && mkdir /root && echo opaque > /root/new
mkdir -p /state
dd if=/dev/urandom of=/state/blob bs=1M count=8 2>/dev/null
dd if=/dev/zero of=/state/sparse bs=1 count=0 seek=1G 2>/dev/null
echo middle | dd of=/state/sparse bs=1 seek=500M conv=notrunc 2>/dev/null
touch /state/suid && chown 1234:5678 /state/suid && chmod 4750 /state/suid
mkfifo /state/fifo
ln -s /state/blob /state/link
[ -e /data/big ] || dd if=/dev/urandom of=/data/big bs=1M count=24 2>/dev/null
exec 3>>/state/journal.log 4>>/data/journal.log
ln /state/journal.log /state/journal.hard
i=0
while :; do i=$((i + 1)); echo $i; echo $i >&3; echo $i >&4; echo $i > /data/last; sleep 0.2; done
"""


def last_written(host):
    """The workload's /data/last. It rewrites the file every tick (`echo $i > /data/last`): a read that falls between
    the truncation and the write sees it empty, and is made again."""
    deadline = time.monotonic() + 2
    while True:
        value = lab_exec(host, "docker", "exec", NAME, "cat", "/data/last").stdout.strip()
        if value:
            return int(value)
        assert time.monotonic() < deadline, f"/data/last stays empty on {host}"
        time.sleep(0.05)


def inspect(host, name, template):
    return lab_exec(host, "docker", "inspect", "-f", template, name).stdout.strip()


def upper(host, name):
    return inspect(host, name, "{{.GraphDriver.Data.UpperDir}}")


def host_python(host, code):
    return lab_exec(host, "python3", "-c", code).stdout.strip()


def diff(host, name):
    return sorted(lab_exec(host, "docker", "diff", name).stdout.split("\n"))


def sha(host, path):
    return sh(host, f"sha256sum {path}").stdout.split()[0]


def start_workload(host):
    """The workload (WORKLOAD, with volume VOLUME at /data) on `host`, counting."""
    lab_exec(host, "docker", "run", "-d", "--name", NAME, "-v", f"{VOLUME}:/data", IMAGE, "sh", "-c", WORKLOAD)
    deadline = time.monotonic() + 30
    while len(counts(host, NAME)) < 5:
        assert time.monotonic() < deadline, "the workload does not count"
        time.sleep(0.3)


def counts_on(source, target):
    """The moved container counts on the target from the source's last number on."""
    last = counts(source, NAME)[-1]
    deadline = time.monotonic() + 20
    while len(counts(target, NAME)) < 2:
        assert time.monotonic() < deadline, "the moved container does not count on the target"
        time.sleep(0.3)
    assert counts(target, NAME)[0] == last + 1


def clean(*hosts):
    for host in hosts:
        lab_exec(host, "docker", "rm", "-f", NAME, check=False)
        lab_exec(host, "docker", "volume", "rm", "-f", VOLUME, check=False)


def direct_path(source, target):
    """The variables that send straight from source to target (the source holds a key the target accepts)."""
    run(["docker", "cp", "/var/lib/fleet-lab/ssh/id_ed25519", f"{source}:/root/.ssh/id_ed25519"])
    sh(source, "chmod 600 /root/.ssh/id_ed25519")
    address = run(["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", target]
                  ).stdout.strip()
    return {"fleet_checkpoint_migrate_transfer": "direct", "fleet_checkpoint_migrate_target_address": address}


@pytest.mark.parametrize("path", ["controller", "direct"])
def test_migrate_carries_the_writable_layer_and_the_volume_and_refuses_a_volume_already_there(fleet, path):
    source, target = fleet[1], fleet[2]
    clean(source, target)
    start_workload(source)
    merged = inspect(source, NAME, "{{.GraphDriver.Data.MergedDir}}")
    host_python(source, f"import os; os.setxattr('{merged}/state/blob', 'user.fleet', b'kept\\0here')")
    pid = inspect(source, NAME, "{{.State.Pid}}")
    extra = {"fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
             "fleet_checkpoint_migrate_containers": [NAME], "fleet_checkpoint_migrate_transfer": "controller"}

    if path == "controller":
        # A volume of that name on the target: refused before anything stops, nothing changed on either host.
        lab_exec(target, "docker", "volume", "create", VOLUME)
        rc, output = ansible_playbook(PLAYBOOKS / "migrate.yml", check=False, extra_vars=extra)
        text = json.dumps(output)
        assert rc != 0 and f"volume {VOLUME} already exists on the target" in text, text[-3000:]
        assert "nothing was changed" in text
        assert inspect(source, NAME, "{{.State.Pid}}") == pid
        assert lab_exec(target, "docker", "ps", "-aq", "--filter", f"name={NAME}").stdout.strip() == ""
        lab_exec(target, "docker", "volume", "rm", VOLUME)
    try:
        if path == "direct":
            extra.update(direct_path(source, target))
        output = ansible_playbook(PLAYBOOKS / "migrate.yml", extra_vars=extra)[1]
    finally:
        sh(source, "rm -f /root/.ssh/id_ed25519 /root/.ssh/known_hosts")
    assert output["global_custom_stats"]["fleet_checkpoint_migrate"]["path"] == path
    assert inspect(source, NAME, "{{.State.Running}}") == "false"
    assert inspect(target, NAME, "{{.State.Running}}") == "true"
    report = output["global_custom_stats"]["fleet_checkpoint_migrate"]["containers"][0]
    # Two passes: the 8 MiB blob, the sparse file and the 24 MiB of the volume went before the freeze; during it,
    # only what the workload kept writing (its journal, /data/last) and the index.
    assert report["moved"] is True and report["precopy_bytes"] > 32 * 1024 * 1024, report
    assert report["disk_bytes"] < 1024 * 1024 and report["disk_unchanged_files"] >= 3, report
    print(f"\ndisk state: pre-copy {report['precopy_bytes']} bytes in {report['precopy_seconds']} s; during the "
          f"freeze {report['disk_bytes']} bytes in {report['disk_entries']} entries ({report['disk_unchanged_files']} "
          f"files unchanged), read in {report['disk_walk_seconds']} s, put in place in {report['disk_apply_seconds']} "
          f"s; downtime {report['downtime_seconds']} s")

    # The process went on writing to the journal it held open: the target's continues the source's.
    source_upper, target_upper = upper(source, NAME), upper(target, NAME)
    before = sh(source, f"cat {source_upper}/state/journal.log").stdout.split()
    deadline = time.monotonic() + 20
    while len(lab_exec(target, "docker", "exec", NAME, "cat", "/state/journal.log").stdout.split()) < len(before) + 3:
        assert time.monotonic() < deadline, "the journal does not grow on the target"
        time.sleep(0.3)
    after = lab_exec(target, "docker", "exec", NAME, "cat", "/state/journal.log").stdout.split()
    assert after[:len(before)] == before and int(after[len(before)]) == int(before[-1]) + 1
    assert counts(target, NAME)[0] == int(before[-1]) + 1

    # The same changes to the image on both hosts (the source's container is kept, stopped).
    assert diff(target, NAME) == diff(source, NAME)
    listing = lab_exec(target, "docker", "exec", NAME, "sh", "-c",
                       "cat /root/new; ls /root; ls /bin/vi 2>&1; stat -c '%n %u:%g %a %h %F' /state/suid "
                       "/state/journal.hard /state/fifo /state/link; readlink /state/link").stdout
    assert "opaque\nnew\n" in listing and "No such file" in listing, listing
    assert "/state/suid 1234:5678 4750 1 regular empty file" in listing, listing
    assert "/state/journal.hard 0:0 644 2 regular file" in listing, listing
    assert "/state/fifo 0:0 644 1 fifo" in listing and "/state/blob" in listing, listing
    same_inode = lab_exec(target, "docker", "exec", NAME, "stat", "-c", "%i", "/state/journal.log",
                          "/state/journal.hard").stdout.split()
    assert same_inode[0] == same_inode[1]
    # Sparse: 1 GiB long, a few KiB on disk, as on the source.
    blocks = sh(target, f"stat -c '%s %b' {target_upper}/state/sparse").stdout.split()
    assert blocks[0] == str(1024 ** 3) and int(blocks[1]) * 512 < 1024 * 1024, blocks
    assert sha(target, f"{target_upper}/state/sparse") == sha(source, f"{source_upper}/state/sparse")
    assert sha(target, f"{target_upper}/state/blob") == sha(source, f"{source_upper}/state/blob")
    assert host_python(target, f"import os; print(os.getxattr('{target_upper}/state/blob', 'user.fleet'))") \
        == repr(b"kept\0here")
    # The root-only overlay marks came as they were: the replaced directory hides the image's.
    assert host_python(target, f"import os; print(os.getxattr('{target_upper}/root', 'trusted.overlay.opaque'))") \
        == "b'y'"

    # The volume's data: the same bytes, and the counter's last number moved on from the source's.
    source_data = lab_exec(source, "docker", "volume", "inspect", "-f", "{{.Mountpoint}}", VOLUME).stdout.strip()
    assert sha(target, f"{source_data}/big") == sha(source, f"{source_data}/big")
    assert last_written(target) > int(before[-1])
    # ... and the journal the process holds open in the volume goes on too.
    volume_before = sh(source, f"cat {source_data}/journal.log").stdout.split()
    volume_after = lab_exec(target, "docker", "exec", NAME, "cat", "/data/journal.log").stdout.split()
    assert volume_before == before and volume_after[:len(before)] == before and len(volume_after) > len(before)
    # Nothing of the transfer is left on the target beside the container's own directories.
    leftovers = sh(target, "ls -d /var/lib/docker/overlay2/*.fleet-* /var/lib/docker/overlay2/*/diff.fleet-* "
                           f"/var/lib/docker/volumes/{VOLUME}/_data.fleet-* 2>/dev/null; true").stdout
    assert leftovers.strip() == "", leftovers
    clean(source, target)


def test_without_its_writable_layer_the_restore_fails_and_nothing_is_left_on_the_target(fleet):
    """The issue's first finding, kept as the proof that the layer matters: the journal the process holds open is
    not on the target, CRIU cannot restore there, the container runs on the source again - and the target keeps
    neither the container nor the volume made for it."""
    source, target = fleet[1], fleet[2]
    clean(source, target)
    start_workload(source)
    rc, output = ansible_playbook(PLAYBOOKS / "migrate.yml", check=False, extra_vars={
        "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
        "fleet_checkpoint_migrate_containers": [NAME], "fleet_checkpoint_migrate_writable_layer": False})
    text = json.dumps(output)
    assert rc != 0 and "journal.log" in text, text[-3000:]
    assert inspect(source, NAME, "{{.State.Running}}") == "true"
    last = counts(source, NAME)
    assert last == list(range(1, len(last) + 1)), "restored on the source, the count goes on from where it was"
    assert lab_exec(target, "docker", "ps", "-aq", "--filter", f"name={NAME}").stdout.strip() == ""
    assert lab_exec(target, "docker", "volume", "ls", "-q", "--filter", f"name={VOLUME}").stdout.strip() == ""
    clean(source, target)


def test_a_login_other_than_root_relays_through_sudo(fleet):
    """AWX's machine credential is often a plain user with sudo: Ansible and the controller's relay log in as that
    user and become root with `sudo -n`. The stream (a pre-copy segment, then the checkpoint) gets through whole."""
    source, target = fleet[1], fleet[2]
    clean(source, target)
    for host in (source, target):
        sh(host, "id fleetop >/dev/null 2>&1 || useradd -m -s /bin/sh fleetop; "
                 "install -d -m 700 -o fleetop -g fleetop ~fleetop/.ssh; "
                 "install -m 600 -o fleetop -g fleetop /root/.ssh/authorized_keys ~fleetop/.ssh/authorized_keys; "
                 "echo 'fleetop ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/fleetop; chmod 440 /etc/sudoers.d/fleetop")
    lab_exec(source, "docker", "run", "--rm", "-v", f"{VOLUME}:/data", IMAGE, "sh", "-c",
             "head -c 4194304 /dev/urandom > /data/blob")
    lab_exec(source, "docker", "run", "-d", "--name", NAME, "-v", f"{VOLUME}:/data", "-e", "COUNTER_INTERVAL=0.2",
             IMAGE)
    try:
        time.sleep(2)
        output = ansible_playbook(PLAYBOOKS / "migrate.yml", extra_vars={
            "fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
            "fleet_checkpoint_migrate_containers": [NAME], "fleet_checkpoint_migrate_transfer": "controller",
            "ansible_user": "fleetop"})[1]
        tasks = {task["task"]["name"]: task["hosts"] for play in output["plays"] for task in play["tasks"]}
        sent = tasks["Collect the checkpoints' result from the source"][source]["results"][0]["sent"]
        assert sent["disk"]["precopy"]["bytes"] >= 4194304, sent
        counts_on(source, target)
        assert sha(target, f"/var/lib/docker/volumes/{VOLUME}/_data/blob") == \
            sha(source, f"/var/lib/docker/volumes/{VOLUME}/_data/blob")
        # The relay's own ends ran as fleetop through sudo (sudo's log names the command: the bridge on the source,
        # the relay into the FIFO on the target), not only Ansible's tasks.
        for host, code in ((source, "import errno, os, socket, sys, threading, time"),
                           (target, "import errno, os, stat, sys, time")):
            log = sh(host, "journalctl _COMM=sudo --no-pager -q -o cat | grep -F 'fleetop :' | tail -100").stdout
            assert any(code in line and "USER=root" in line for line in log.splitlines()), log[-2000:]
    finally:
        clean(source, target)
        for host in (source, target):
            sh(host, "rm -f /etc/sudoers.d/fleetop; userdel -r fleetop 2>/dev/null; true")


def test_the_relay_logs_in_with_what_ansible_cfg_says(fleet, tmp_path):
    """An inventory that names only the hosts' addresses and ports; the key, the host-key policy and the log level
    are in ansible.cfg's [ssh_connection] ssh_common_args, as many sites keep them. Ansible's own tasks and the
    controller's relay both log in with them: an image goes from one host to the other through the relay."""
    source, target = fleet[1], fleet[2]
    key = "/var/lib/fleet-lab/ssh/id_ed25519"
    ports = {host: inspect_port(host) for host in (source, target)}
    (tmp_path / "inventory.yml").write_text(json.dumps({"all": {"hosts": {
        host: {"ansible_host": "127.0.0.1", "ansible_port": port, "ansible_python_interpreter": "/usr/bin/python3"}
        for host, port in ports.items()}}}))
    (tmp_path / "ansible.cfg").write_text(
        "[defaults]\nremote_user = root\n[ssh_connection]\n"
        f"ssh_common_args = -i {key} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR\n")
    (tmp_path / "relay.yml").write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": [
        {"name": "relay", "fleet.checkpoint.stream_relay": {"source": source, "target": target, "image": IMAGE},
         "register": "relayed"},
        {"name": "show", "ansible.builtin.debug": {"var": "relayed"}}]}]))
    proc = run(["ansible-playbook", "-i", str(tmp_path / "inventory.yml"), str(tmp_path / "relay.yml")], check=False,
               env=dict(ansible_json_env(), ANSIBLE_CONFIG=str(tmp_path / "ansible.cfg")))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    assert result["bytes"] > 1024 * 1024 and "Loaded image" in result["loaded"], result


def inspect_port(host):
    """The SSH port the lab publishes for `host` on the machine (the lab inventory's ansible_port)."""
    return int(run(["docker", "port", host, "22/tcp"]).stdout.split(":")[-1].split()[0])


def test_replace_moves_over_a_stopped_namesake_on_the_target(fleet):
    """An earlier copy of the container, stopped on the target, stops a move - unless fleet_checkpoint_migrate_replace
    is set: then it is set aside, and removed once the moved container runs there."""
    source, target = fleet[1], fleet[2]
    clean(source, target)
    lab_exec(target, "docker", "create", "--name", NAME, "--label", "copy=old", IMAGE)
    lab_exec(source, "docker", "run", "-d", "--name", NAME, "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    time.sleep(2)
    extra = {"fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
             "fleet_checkpoint_migrate_containers": [NAME], "fleet_checkpoint_migrate_transfer": "controller"}
    rc, output = ansible_playbook(PLAYBOOKS / "migrate.yml", check=False, extra_vars=extra)
    assert rc != 0 and f"a container named {NAME} already exists on the target (created)" in json.dumps(output)
    ansible_playbook(PLAYBOOKS / "migrate.yml", extra_vars=dict(extra, fleet_checkpoint_migrate_replace=True))
    assert inspect(target, NAME, "{{.State.Running}}") == "true"
    assert inspect(target, NAME, "{{index .Config.Labels \"copy\"}}") == ""  # the moved one, not the old copy
    names = lab_exec(target, "docker", "ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert not [name for name in names if "-replaced-" in name], names
    counts_on(source, target)
    clean(source, target)


def test_rename_moves_beside_a_running_namesake_on_the_target(fleet):
    """A container of the same name runs on the target (another application): with fleet_checkpoint_migrate_rename
    the moved one gets another name there, with its writable layer, and the namesake is left as it was."""
    source, target = fleet[1], fleet[2]
    here = f"{NAME}-2"
    clean(source, target)
    lab_exec(target, "docker", "rm", "-f", here, check=False)
    lab_exec(target, "docker", "run", "-d", "--name", NAME, "--label", "copy=resident", IMAGE)
    resident = inspect(target, NAME, "{{.Id}}")
    lab_exec(source, "docker", "run", "-d", "--name", NAME, "-e", "COUNTER_INTERVAL=0.2", IMAGE)
    sh(source, f"docker exec {NAME} sh -c 'echo moved-layer > /layer-file'")
    time.sleep(2)
    extra = {"fleet_checkpoint_migrate_source": source, "fleet_checkpoint_migrate_target": target,
             "fleet_checkpoint_migrate_containers": [NAME], "fleet_checkpoint_migrate_transfer": "controller"}
    try:
        # The new name must be free as well: a taken one is refused before anything stops.
        lab_exec(target, "docker", "create", "--name", here, IMAGE)
        rc, output = ansible_playbook(PLAYBOOKS / "migrate.yml", check=False,
                                      extra_vars=dict(extra, fleet_checkpoint_migrate_rename={NAME: here}))
        assert rc != 0 and f"a container named {here} already exists on the target (created)" in json.dumps(output)
        assert inspect(source, NAME, "{{.State.Running}}") == "true"
        lab_exec(target, "docker", "rm", here)

        rc, output = ansible_playbook(PLAYBOOKS / "migrate.yml", check=False,
                                      extra_vars=dict(extra, fleet_checkpoint_migrate_rename={NAME: here}))
        assert rc == 0, json.dumps(output)[-3000:]
        row = output["global_custom_stats"]["fleet_checkpoint_migrate"]["containers"][0]
        assert row["container"] == NAME and row["target_container"] == here and row["moved"], row
        assert inspect(target, here, "{{.State.Running}}") == "true"
        assert sh(target, f"docker exec {here} cat /layer-file").stdout.strip() == "moved-layer"
        assert inspect(target, NAME, "{{.Id}}") == resident and inspect(target, NAME, "{{.State.Running}}") == "true"
        last = counts(source, NAME)[-1]
        deadline = time.monotonic() + 20
        while len(counts(target, here)) < 2:
            assert time.monotonic() < deadline, "the moved container does not count on the target"
            time.sleep(0.3)
        assert counts(target, here)[0] == last + 1
    finally:
        clean(source, target)
        lab_exec(target, "docker", "rm", "-f", here, check=False)
