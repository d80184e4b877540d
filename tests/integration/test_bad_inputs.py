"""The bad-input corpus beyond docker_checkpoint's own (test_docker_checkpoint.py): every other module, the
encryption options, and the playbooks' job variables. Each input must be refused with a message naming it and the
fix, and the host must be exactly as before (containers, PIDs, policies, checkpoints, archives, daemon.json, state
files).
"""

import json

import pytest
import yaml

from conftest import ROOT, ansible_playbook, lab_exec, ready, sh

IMAGE = "fleet-lab-workload:busybox"
PLAYBOOKS = ROOT / "playbooks"
KEY = "correct horse battery staple 42"


def snapshot(host):
    return sh(host, "for c in $(docker ps -aq); do docker inspect -f "
                    "'{{.Name}} {{.State.Status}} {{.State.Pid}} {{.HostConfig.RestartPolicy.Name}}' $c; done | sort; "
                    "find /var/lib/docker/containers -path '*/checkpoints*' | sort; "
                    "find /root/archives /var/lib/fleet-checkpoint /etc/criu /etc/docker -printf '%p %m %s\\n' "
                    "2>/dev/null | sort; md5sum /etc/docker/daemon.json /etc/criu/runc.conf 2>/dev/null; "
                    "systemctl show -p MainPID --value docker.service; "
                    "cat /proc/sys/kernel/random/boot_id; systemctl show -p UserspaceTimestamp --value; "
                    "stat -c '%n %a' /tmp /tmp/loose-dir 2>/dev/null; true").stdout


@pytest.fixture(scope="module")
def hosts(trixie_hosts):
    first, second = ready(trixie_hosts[:2])
    for host in (first, second):
        lab_exec(host, "docker", "run", "-d", "--name", "victim", "--restart", "always", IMAGE)
    sh(first, "apt-get install -y -qq python3-cryptography >/dev/null 2>&1 || "
              "(apt-get update -qq && apt-get install -y -qq python3-cryptography) >/dev/null")
    return first, second


MODULE_CASES = [
    # (module, args, check_mode_too, fragment of the message)
    ("fleet.checkpoint.docker_checkpoint_info", {"container": "no good"}, "is not a container name or id"),
    ("fleet.checkpoint.docker_checkpoint_info", {"container": "ghost"}, "'ghost' not found on this host"),
    ("fleet.checkpoint.docker_checkpoint_info", {"name": "../x"}, "contains a path separator"),
    ("fleet.checkpoint.docker_checkpoint_info", {"container": "victim", "api_timeout": "soon"}, "api_timeout"),
    ("fleet.checkpoint.run_lock", {"owner": " "}, "owner must not be empty"),
    ("fleet.checkpoint.run_lock", {"owner": "r1", "lease": 5}, "lease must be at least 60 seconds"),
    ("fleet.checkpoint.run_lock", {"owner": "r1", "timeout": -1}, "timeout must be 0 or more"),
    ("fleet.checkpoint.run_lock", {"owner": "r1", "state": "held"}, "value of state must be one of"),
    ("fleet.checkpoint.run_lock", {"state": "absent"}, "missing required arguments: owner"),
    ("fleet.checkpoint.criu_install", {"min_version": "banana"}, "min_version must be a version like"),
    ("fleet.checkpoint.criu_install", {"state": "sideways"}, "value of state must be one of"),
    ("fleet.checkpoint.criu_install", {"required_capabilities": ["teleport"]}, "required_capabilities"),
    ("fleet.checkpoint.criu_install", {"self_test": "sometimes"}, "value of self_test must be one of"),
    ("fleet.checkpoint.docker_experimental", {"live_restore": "maybe"}, "live_restore must be true, false or keep"),
    ("fleet.checkpoint.docker_experimental", {"restart": "sometimes"}, "value of restart must be one of"),
    ("fleet.checkpoint.docker_experimental", {"timeout": "soon"}, "timeout"),
    ("fleet.checkpoint.docker_experimental", {"state": "on"}, "value of state must be one of"),
    # Directories the user names are not made 0700 (nor taken) when others may write into them (issue 20, 5).
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "cp", "leave_running": True,
                                            "manifest_path": "/tmp/loose-dir/run.json"},
     "manifest_path: /tmp/loose-dir is writable by other users (mode 0777) without the sticky bit"),
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "cp", "state": "restored",
                                            "archive_dir": "/tmp/loose-dir", "receive_timeout": 1, "create": True},
     "archive_dir: /tmp/loose-dir is writable by other users"),
    # Encryption of archives.
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "enc", "state": "exported",
                                            "archive_dir": "/root/archives", "encryption_key": "short"},
     "use at least 16 characters"),  # the value itself is masked (no_log): "too ********"
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "enc", "state": "exported",
                                            "archive_dir": "/root/archives", "encryption_key_file": "/root/loose.key"},
     "chmod 600 /root/loose.key"),
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "enc", "state": "exported",
                                            "archive_dir": "/root/archives", "encryption_key": KEY,
                                            "encryption_key_file": "/root/tight.key"},
     "mutually exclusive"),
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "enc", "encryption_key": KEY},
     "used only with an archive"),
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "enc", "state": "imported", "force": True,
                                            "archive_path": "/root/archives/victim-enc.tar.zst.enc"},
     "is encrypted: give encryption_key or encryption_key_file"),
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "enc", "state": "imported", "force": True,
                                            "archive_path": "/root/archives/victim-enc.tar.zst.enc",
                                            "encryption_key": "wrong horse battery staple 42"},
     "wrong encryption key, or the archive was altered"),
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "enc", "state": "imported", "force": True,
                                            "archive_path": "/root/archives/victim-plain.tar.zst",
                                            "encryption_key": KEY},
     "is not encrypted, but an encryption key was given"),
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "enc", "state": "imported", "force": True,
                                            "archive_path": "/root/archives/victim-tampered.tar.zst.enc",
                                            "encryption_key": KEY},
     "wrong encryption key, or the archive was altered"),
    # An encrypted archive is bound to its container and checkpoint (issue 20, finding 4): victim's 'enc' archive,
    # imported as another checkpoint (or, the same, copied to another container's name), is refused without force.
    ("fleet.checkpoint.docker_checkpoint", {"container": "victim", "name": "other", "state": "imported",
                                            "archive_path": "/root/archives/victim-enc.tar.zst.enc",
                                            "encryption_key": KEY},
     "was exported for container 'victim', checkpoint 'enc', not for 'victim', 'other'"),
]


@pytest.mark.bad_inputs
def test_bad_module_inputs_are_refused_and_change_nothing(hosts, tmp_path, record_bad_inputs):
    host = hosts[0]
    # An encrypted and a plain archive of a real checkpoint, a tampered copy, and two key files.
    sh(host, "mkdir -p -m 0700 /root/archives; mkdir -p /tmp/loose-dir; chmod 0777 /tmp/loose-dir; "
             f"printf '%s\\n' '{KEY}' > /root/tight.key; chmod 600 /root/tight.key; "
             f"printf '%s\\n' '{KEY}' > /root/loose.key; chmod 644 /root/loose.key")
    setup = tmp_path / "setup.yml"
    setup.write_text(yaml.safe_dump([{"hosts": host, "gather_facts": False, "become": True, "tasks": [
        {"name": "checkpoint", "fleet.checkpoint.docker_checkpoint": {
            "container": "victim", "name": "enc", "leave_running": True}},
        {"name": "export encrypted", "fleet.checkpoint.docker_checkpoint": {
            "container": "victim", "name": "enc", "state": "exported", "archive_dir": "/root/archives",
            "encryption_key_file": "/root/tight.key"}},
        {"name": "export plain", "fleet.checkpoint.docker_checkpoint": {
            "container": "victim", "name": "enc", "state": "exported",
            "archive_path": "/root/archives/victim-plain.tar.zst"}},
    ]}]))
    ansible_playbook(setup)
    sh(host, "cd /root/archives && cp victim-enc.tar.zst.enc victim-tampered.tar.zst.enc && "
             "size=$(stat -c %s victim-tampered.tar.zst.enc) && "
             "printf 'X' | dd of=victim-tampered.tar.zst.enc bs=1 seek=$((size / 2)) conv=notrunc status=none")
    before = snapshot(host)
    tasks = [{"name": f"case {index}", module: args, "ignore_errors": True}
             for index, (module, args, _fragment) in enumerate(MODULE_CASES)]
    playbook = tmp_path / "bad-module-inputs.yml"
    playbook.write_text(yaml.safe_dump([
        {"hosts": host, "gather_facts": False, "become": True, "check_mode": check, "tasks": tasks}
        for check in (True, False)]))
    output = ansible_playbook(playbook)[1]
    for play in output["plays"]:
        for (module, args, fragment), task in zip(MODULE_CASES, play["tasks"]):
            result = task["hosts"][host]
            assert result.get("failed"), f"{module} {args} did not fail: {result}"
            assert fragment in result["msg"], f"{module} {args}: expected {fragment!r} in {result['msg']!r}"
            assert KEY not in json.dumps(result) and "wrong horse" not in json.dumps(result), "a key leaked"
    assert snapshot(host) == before
    record_bad_inputs("other modules and encryption", len(MODULE_CASES), len(MODULE_CASES))


PLAYBOOK_CASES = [
    # (playbook, extra vars, fragment of a failure message)
    ("host_reboot.yml", {"fleet_checkpoint_reboot": "sometimes"},
     "fleet_checkpoint_reboot must be one of: if_required, always"),
    ("host_reboot.yml", {"fleet_checkpoint_reboot_timeout": "soon"}, "fleet_checkpoint_reboot_timeout"),
    ("host_reboot.yml", {"fleet_checkpoint_max_fail_percentage": "some"}, "fleet_checkpoint_max_fail_percentage"),
    # The roles' variables are checked by the pre-flight, before any host is touched (not after the reboot).
    ("host_reboot.yml", {"restore_fallback": "sometimes", "fleet_checkpoint_reboot": "always"}, "restore_fallback"),
    ("host_reboot.yml", {"checkpoint_leave_running": True, "fleet_checkpoint_reboot": "always"},
     "cannot be used with host_reboot"),
    ("host_reboot.yml", {"checkpoint_name": "../escape", "fleet_checkpoint_reboot": "always"},
     "contains a path separator"),
    ("host_reboot.yml", {"fleet_checkpoint_pre_reboot_tasks": "/nonexistent/drain.yml",
                         "fleet_checkpoint_reboot": "always"}, "drain.yml"),
    ("restore.yml", {"restore_fallback": "sometimes"}, "restore_fallback"),
    ("checkpoint.yml", {"checkpoint_containers": ["no good"]}, "is not a container name or id"),
    ("checkpoint.yml", {"checkpoint_containers": ["ghost"]}, "ghost"),
    ("migrate.yml", {"fleet_checkpoint_migrate_image": "carry", "fleet_checkpoint_migrate_containers": ["victim"]},
     "fleet_checkpoint_migrate_image must be one of: load, pull"),
    ("migrate.yml", {"fleet_checkpoint_migrate_target": "SOURCE", "fleet_checkpoint_migrate_containers": ["victim"]},
     "two different inventory hosts"),
    ("migrate.yml", {"fleet_checkpoint_migrate_containers": []}, "fleet_checkpoint_migrate_containers"),
    ("migrate.yml", {"fleet_checkpoint_migrate_containers": ["ghost"]}, "ghost"),
    ("migrate.yml", {"fleet_checkpoint_migrate_target": "no-such-host",
                     "fleet_checkpoint_migrate_containers": ["victim"]}, "no-such-host"),
    ("migrate.yml", {"fleet_checkpoint_migrate_source": "no-such-source",
                     "fleet_checkpoint_migrate_containers": ["victim"]}, "no-such-source, named by this move, is not"),
    # A Limit (or an AWX job slice) that leaves the target out: the move is refused, not half made.
    ("migrate.yml", {"--limit": "SOURCE", "fleet_checkpoint_migrate_containers": ["victim"]},
     "named by this move, is not among this run's hosts"),
    ("migrate.yml", {"--limit": "SOURCE", "fleet_checkpoint_migrate_source": "no-such-source",
                     "fleet_checkpoint_migrate_containers": ["victim"]}, "named by this move, are not among"),
    ("migrate.yml", {"fleet_checkpoint_migrate_transfer": "carrier-pigeon",
                     "fleet_checkpoint_migrate_containers": ["victim"]}, "fleet_checkpoint_migrate_transfer"),
    # Survey answers that ssh or scp would read as options (issue 20, finding 7).
    ("migrate.yml", {"fleet_checkpoint_migrate_target_user": "-oProxyCommand=touch /tmp/pwned",
                     "fleet_checkpoint_migrate_containers": ["victim"]}, "nothing else goes on the source's ssh"),
    ("migrate.yml", {"fleet_checkpoint_migrate_target_address": "-oProxyCommand=touch /tmp/pwned",
                     "fleet_checkpoint_migrate_containers": ["victim"]}, "nothing else goes on the source's ssh"),
    ("migrate.yml", {"fleet_checkpoint_migrate_ssh_port": "22 -oProxyCommand=x",
                     "fleet_checkpoint_migrate_containers": ["victim"]}, "fleet_checkpoint_migrate_ssh_port"),
    # A post-copy move goes straight to the target and carries memory only (issue 21).
    ("migrate.yml", {"fleet_checkpoint_migrate_mode": "lazy", "fleet_checkpoint_migrate_transfer": "controller",
                     "fleet_checkpoint_migrate_volumes": "none", "fleet_checkpoint_migrate_writable_layer": False,
                     "fleet_checkpoint_migrate_containers": ["victim"]}, "not controller"),
    ("migrate.yml", {"fleet_checkpoint_migrate_mode": "rounds", "fleet_checkpoint_migrate_containers": ["victim"]},
     "fleet_checkpoint_migrate_mode must be one of: stop, lazy, precopy"),
    # Pre-copy (issue 21): memory only, straight to the target, 1-30 rounds, a known fallback.
    ("migrate.yml", {"fleet_checkpoint_migrate_mode": "precopy", "fleet_checkpoint_migrate_containers": ["victim"]},
     "does not carry disk state yet"),
    ("migrate.yml", {"fleet_checkpoint_migrate_mode": "precopy", "fleet_checkpoint_migrate_precopy_rounds": 0,
                     "fleet_checkpoint_migrate_volumes": "none", "fleet_checkpoint_migrate_writable_layer": False,
                     "fleet_checkpoint_migrate_containers": ["victim"]},
     "fleet_checkpoint_migrate_precopy_rounds must be from 1 to 30"),
    ("migrate.yml", {"fleet_checkpoint_migrate_mode": "precopy", "fleet_checkpoint_migrate_precopy_fallback": "cold",
                     "fleet_checkpoint_migrate_containers": ["victim"]},
     "fleet_checkpoint_migrate_precopy_fallback must be one of: refuse, stop, lazy"),
]


def failures(output):
    found = []
    for play in output.get("plays", []):
        for task in play["tasks"]:
            for result in task["hosts"].values():
                if result.get("failed") or result.get("unreachable"):
                    found.append(str(result.get("msg", "")))
                    found.extend(str(item.get("msg", "")) for item in result.get("results", []) if item.get("failed"))
    return " | ".join(found)


@pytest.mark.bad_inputs
def test_bad_job_variables_are_refused_and_change_nothing(hosts, record_bad_inputs):
    source, target = hosts
    before = {host: snapshot(host) for host in hosts}
    refused = 0
    for playbook, extra, fragment in PLAYBOOK_CASES:
        extra = dict(extra)
        if playbook == "migrate.yml":
            extra.setdefault("fleet_checkpoint_migrate_source", source)
            extra.setdefault("fleet_checkpoint_migrate_target", target)
            if extra["fleet_checkpoint_migrate_target"] == "SOURCE":
                extra["fleet_checkpoint_migrate_target"] = source
        else:
            extra["fleet_checkpoint_hosts"] = source
        limit = {"SOURCE": source}.get(extra.get("--limit"), extra.get("--limit"))
        extra.pop("--limit", None)
        rc, output = ansible_playbook(PLAYBOOKS / playbook, check=False, extra_vars=extra, limit=limit)
        case = f"{playbook} {extra}" + (f" --limit {limit}" if limit else "")
        assert rc != 0, f"{case} was not refused"
        messages = failures(output)
        assert fragment in messages, f"{case}: expected {fragment!r} in {messages!r}"
        assert {host: snapshot(host) for host in hosts} == before, f"{case} changed a host"
        refused += 1
    record_bad_inputs("playbook job variables", len(PLAYBOOK_CASES), refused)
