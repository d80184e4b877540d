# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How the controller's relay logs in to each host, from the host's Ansible variables."""

from __future__ import annotations

import shlex

import pytest

from ansible_collections.fleet.checkpoint.plugins.plugin_utils import _ssh_relay as ssh_relay


def test_a_lab_host_logs_in_as_ansible_does():
    host = ssh_relay.login("fleet-lab-1", {
        "ansible_host": "127.0.0.1", "ansible_port": 2221, "ansible_user": "root",
        "ansible_ssh_private_key_file": "/var/lib/fleet-lab/ssh/id_ed25519",
        "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"})
    argv = ssh_relay.ssh_argv(host, ["python3", "-c", "print('a b')", "/x y"])
    assert argv[:1] == ["ssh"] and "BatchMode=yes" in argv
    assert argv[argv.index("-p") + 1] == "2221" and argv[argv.index("-l") + 1] == "root"
    assert argv[argv.index("-i") + 1] == "/var/lib/fleet-lab/ssh/id_ed25519"
    assert "StrictHostKeyChecking=no" in argv
    assert argv[-3:-1] == ["--", "127.0.0.1"]
    assert shlex.split(argv[-1]) == ["python3", "-c", "print('a b')", "/x y"]


def test_the_play_defaults_fill_in_and_sudo_makes_root():
    host = ssh_relay.login("web-2", {}, remote_user="deploy", private_key_file="/keys/awx",
                           host_key_checking=False)
    argv = ssh_relay.ssh_argv(host, ["docker", "load"])
    assert argv[-2] == "web-2" and argv[argv.index("-l") + 1] == "deploy" and "-p" not in argv
    assert argv[argv.index("-i") + 1] == "/keys/awx" and "UserKnownHostsFile=/dev/null" in argv
    assert shlex.split(argv[-1]) == ["sudo", "-n", "--", "docker", "load"]
    agent = ssh_relay.ssh_argv(ssh_relay.login("web-3", {}), ["true"])
    assert "-l" not in agent and "-i" not in agent and shlex.split(agent[-1]) == ["true"]


@pytest.mark.parametrize("hostvars, words", [
    ({"ansible_connection": "community.docker.docker"}, "needs SSH"),
    ({"ansible_password": "x"}, "password"),
    ({"ansible_user": "deploy", "ansible_become_method": "su"}, "sudo"),
])
def test_logins_the_relay_cannot_make_are_refused(hostvars, words):
    with pytest.raises(ssh_relay.RelayError, match=words):
        ssh_relay.login("web-1", hostvars)


def test_the_hosts_own_ssh_options_come_first_so_that_they_win():
    host = ssh_relay.login("web-1", {"ansible_ssh_common_args": "-o Ciphers=aes256-ctr -o ProxyJump=bastion"})
    argv = ssh_relay.ssh_argv(host, ["true"])
    ours = argv.index(f"Ciphers={ssh_relay.CIPHERS}")
    assert argv.index("Ciphers=aes256-ctr") < ours and "ProxyJump=bastion" in argv


def test_ansible_configuration_fills_in_what_the_host_does_not_say(monkeypatch):
    """ansible.cfg and ANSIBLE_* environment variables, resolved by Ansible for the host (the action's ssh_options),
    as the ssh connection reads them: ssh_common_args, ssh_extra_args, ssh_args when set, remote_port, the key; the
    host's own variables still win."""
    from ansible.plugins.loader import init_plugin_loader

    from ansible_collections.fleet.checkpoint.plugins.action.stream_relay import ssh_options

    init_plugin_loader()
    monkeypatch.setenv("ANSIBLE_SSH_COMMON_ARGS", "-o ProxyJump=bastion")
    monkeypatch.setenv("ANSIBLE_SSH_EXTRA_ARGS", "-o ServerAliveInterval=7")
    monkeypatch.setenv("ANSIBLE_REMOTE_PORT", "2200")
    monkeypatch.setenv("ANSIBLE_PRIVATE_KEY_FILE", "/keys/from-cfg")
    argv = ssh_relay.ssh_argv(ssh_relay.login("web-1", {}, options=ssh_options({})), ["true"])
    assert "ProxyJump=bastion" in argv and "ServerAliveInterval=7" in argv
    assert argv[argv.index("-p") + 1] == "2200" and argv[argv.index("-i") + 1] == "/keys/from-cfg"
    assert "ControlPersist=60s" not in argv and "-C" not in argv  # Ansible's default ssh_args: not for the relay
    monkeypatch.setenv("ANSIBLE_SSH_ARGS", "-o IPQoS=throughput")
    hostvars = {"ansible_port": 2221, "ansible_ssh_common_args": "-o ProxyJump=other"}
    argv = ssh_relay.ssh_argv(ssh_relay.login("web-1", hostvars, options=ssh_options(hostvars)), ["true"])
    assert "IPQoS=throughput" in argv and argv[argv.index("-p") + 1] == "2221"
    assert "ProxyJump=other" in argv and "ProxyJump=bastion" not in argv


def test_options_come_in_ansibles_order_and_compression_stays_off(monkeypatch):
    """ssh takes an option's first value: as in Ansible's ssh connection, a site-wide ssh_common_args cannot override
    a host's port or user, ssh_args come first, and ansible.cfg's host key policy applies to the relay too."""
    from ansible.plugins.loader import init_plugin_loader

    from ansible_collections.fleet.checkpoint.plugins.action.stream_relay import ssh_options

    init_plugin_loader()
    monkeypatch.setenv("ANSIBLE_SSH_COMMON_ARGS", "-o User=everyone -o Port=2022")
    monkeypatch.setenv("ANSIBLE_SSH_ARGS", "-C -o ControlMaster=auto -o ControlPersist=60s")
    monkeypatch.setenv("ANSIBLE_HOST_KEY_CHECKING", "False")
    hostvars = {"ansible_port": 2221, "ansible_user": "deploy"}
    argv = ssh_relay.ssh_argv(ssh_relay.login("web-1", hostvars, options=ssh_options(hostvars)), ["true"])
    assert argv.index("-p") < argv.index("Port=2022") and argv.index("-l") < argv.index("User=everyone")
    assert argv.index("ControlMaster=auto") < argv.index("-p")
    assert "-C" not in argv and "Compression=no" in argv
    assert "StrictHostKeyChecking=no" in argv
