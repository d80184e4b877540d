# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.dockerd_flags import (
    Conflict,
    exec_start,
    expand,
    find_conflicts,
    parse_env_file,
    parse_systemctl_cat,
)

DEBIAN_UNIT = """# /usr/lib/systemd/system/docker.service
[Unit]
Description=Docker Application Container Engine

[Service]
Type=notify
EnvironmentFile=-/etc/default/docker
ExecStart=/usr/sbin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock $DOCKER_OPTS
ExecReload=/bin/kill -s HUP $MAINPID
"""

DROP_IN = """
# /etc/systemd/system/docker.service.d/override.conf
[Service]
ExecStart=
ExecStart=/usr/sbin/dockerd -H fd:// \\
    --experimental --log-level=warn
"""


def files(mapping):
    return mapping.get


def test_plain_debian_unit_has_no_conflict():
    assert find_conflicts(["experimental", "live-restore"], "/etc/docker/daemon.json", DEBIAN_UNIT, files({})) == []


def test_flag_in_a_drop_in_is_found_with_its_file():
    found = find_conflicts(["experimental"], "/etc/docker/daemon.json", DEBIAN_UNIT + DROP_IN, files({}))
    assert found == [Conflict("experimental", "--experimental", "/etc/systemd/system/docker.service.d/override.conf")]


def test_empty_execstart_resets_and_the_last_one_wins():
    unit = DEBIAN_UNIT + DROP_IN
    command, source = exec_start(parse_systemctl_cat(unit))
    assert command.split() == ["/usr/sbin/dockerd", "-H", "fd://", "--experimental", "--log-level=warn"]
    assert source.endswith("override.conf")


def test_flag_from_etc_default_docker_is_found_with_the_variable():
    env = files({"/etc/default/docker": '# options\nDOCKER_OPTS="--dns 8.8.8.8 --experimental=true"\n'})
    found = find_conflicts(["experimental"], "/etc/docker/daemon.json", DEBIAN_UNIT, env)
    assert found == [Conflict("experimental", "--experimental=true", "/etc/default/docker (DOCKER_OPTS)")]


def test_live_restore_flag_only_matters_for_keys_we_write():
    env = files({"/etc/default/docker": 'DOCKER_OPTS="--live-restore"\n'})
    assert find_conflicts(["experimental"], "/etc/docker/daemon.json", DEBIAN_UNIT, env) == []
    assert find_conflicts(["live-restore"], "/etc/docker/daemon.json", DEBIAN_UNIT, env) == [
        Conflict("live-restore", "--live-restore", "/etc/default/docker (DOCKER_OPTS)")
    ]


def test_config_file_elsewhere_is_a_conflict_but_the_same_file_is_not():
    unit = DEBIAN_UNIT.replace("$DOCKER_OPTS", "--config-file /srv/docker/daemon.json")
    assert find_conflicts([], "/etc/docker/daemon.json", unit, files({})) == [
        Conflict("config-file", "--config-file /srv/docker/daemon.json", "/usr/lib/systemd/system/docker.service")
    ]
    assert find_conflicts([], "/srv/docker/daemon.json", unit, files({})) == []
    unit_eq = DEBIAN_UNIT.replace("$DOCKER_OPTS", "--config-file=/srv/docker/daemon.json")
    assert [c.flag for c in find_conflicts([], "/etc/docker/daemon.json", unit_eq, files({}))] == [
        "--config-file /srv/docker/daemon.json"
    ]


def test_without_systemd_the_init_defaults_are_read():
    env = files({"/etc/sysconfig/docker": "OPTIONS='--selinux-enabled --experimental'\n"})
    assert find_conflicts(["experimental"], "/etc/docker/daemon.json", None, env) == [
        Conflict("experimental", "--experimental", "/etc/sysconfig/docker (OPTIONS)")
    ]


def test_env_file_parsing():
    env = parse_env_file('export A="x y"\n# B=1\nC=\'q\'  # note\nnot a line\nD=plain\n')
    assert env == {"A": "x y", "C": "q", "D": "plain"}


def test_braced_variable_is_one_word_and_plain_variable_splits():
    words = expand("/usr/sbin/dockerd ${ONE} $MANY", {"ONE": "a b", "MANY": "--x --y"}, {"MANY": "f (MANY)"})
    assert words == [("/usr/sbin/dockerd", None), ("a b", None), ("--x", "f (MANY)"), ("--y", "f (MANY)")]


def test_experimental_in_another_flag_name_is_not_a_conflict():
    unit = DEBIAN_UNIT.replace("$DOCKER_OPTS", "--experimental-feature-x --label experimental")
    assert find_conflicts(["experimental"], "/etc/docker/daemon.json", unit, files({})) == []
