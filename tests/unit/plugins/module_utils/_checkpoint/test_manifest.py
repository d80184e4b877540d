# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import copy
import re

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import (
    ManifestError,
    build,
    container_config,
    validate,
)

INSPECT = {
    "Id": "f" * 64,
    "Name": "/counter",
    "Image": "sha256:" + "a" * 64,
    "Config": {"Image": "fleet-lab-workload:busybox", "Cmd": ["/usr/local/bin/counter"], "Entrypoint": None,
               "Env": ["PATH=/usr/local/bin:/bin", "COUNTER_INTERVAL=1"], "Labels": {"app": "counter"},
               "WorkingDir": "/", "User": "", "Hostname": "f" * 12, "Tty": False, "OpenStdin": False,
               "ExposedPorts": {"8080/tcp": {}}},
    "HostConfig": {"RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}, "NetworkMode": "bridge",
                   "PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "18080"}]}},
    "Mounts": [{"Type": "volume", "Name": "data", "Source": "/var/lib/docker/volumes/data/_data",
                "Destination": "/data", "RW": True, "Driver": "local"}],
    "NetworkSettings": {"Networks": {"bridge": {"Aliases": None, "IPAddress": "172.17.0.2"}}},
}
FILES = {"pages-1.img": {"size": 4096, "sha256": "b" * 64}, "core-1.img": {"size": 10, "sha256": "c" * 64}}
VERSIONS = {"criu": "4.2.1", "docker": "26.1.5+dfsg1", "kernel": "6.18.44", "other": "ignored"}


def manifest():
    return build("pre-reboot", INSPECT, FILES, VERSIONS, "containerd", "2026-11-23T15:00:00Z")


def test_container_config_keeps_what_recreating_needs():
    config = container_config(INSPECT)
    assert config["name"] == "counter"
    assert config["image"] == {"id": "sha256:" + "a" * 64, "reference": "fleet-lab-workload:busybox"}
    assert config["restart_policy"] == {"Name": "unless-stopped", "MaximumRetryCount": 0}
    assert config["mounts"] == [{"type": "volume", "name": "data", "source": "/var/lib/docker/volumes/data/_data",
                                 "destination": "/data", "rw": True}]
    assert config["port_bindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": "18080"}]}
    assert config["networks"] == {"bridge": {"aliases": []}}
    assert config["env"][1] == "COUNTER_INTERVAL=1" and config["exposed_ports"] == ["8080/tcp"]


def test_container_config_of_a_minimal_inspect():
    config = container_config({"Id": "x", "Name": "/x"})
    assert config["restart_policy"] == {"Name": "no"} and config["mounts"] == [] and config["env"] == []


def test_build_sums_sizes_sorts_files_and_keeps_known_versions():
    data = manifest()
    assert data["size"] == 4106
    assert list(data["files"]) == ["core-1.img", "pages-1.img"]
    assert data["versions"] == {"criu": "4.2.1", "docker": "26.1.5+dfsg1", "kernel": "6.18.44"}
    assert validate(data) is data


def test_build_refuses_bad_names_and_methods():
    with pytest.raises(ValueError):
        build("../x", INSPECT, FILES, VERSIONS, "api", "now")
    with pytest.raises(ValueError, match="method"):
        build("cp1", INSPECT, FILES, VERSIONS, "podman", "now")


def mutate(path, value):
    data = copy.deepcopy(manifest())
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


@pytest.mark.parametrize(
    "data, fragment",
    [
        ([1, 2], "not a JSON object"),
        (mutate(["format"], "docker-save"), "not a fleet.checkpoint archive"),
        (mutate(["format_version"], 9), "not supported"),
        (mutate(["checkpoint"], "../../etc"), "'checkpoint'"),
        (mutate(["checkpoint"], 7), "must be str"),
        (mutate(["method"], "magic"), "'method'"),
        (mutate(["container"], KeyError), "no 'container'"),
        (mutate(["container", "restart_policy"], "always"), "restart_policy"),
        (mutate(["files"], {}), "lists no files"),
        (mutate(["files", "../../etc/shadow"], {"size": 1, "sha256": "d" * 64}), "not a safe relative path"),
        (mutate(["files", "/etc/shadow"], {"size": 1, "sha256": "d" * 64}), "not a safe relative path"),
        (mutate(["files", "pages-1.img", "size"], -1), "non-negative integer"),
        (mutate(["files", "pages-1.img", "size"], True), "non-negative integer"),
        (mutate(["files", "pages-1.img", "sha256"], "B" * 64), "64 lowercase hex"),
        (mutate(["size"], 1), "not the sum"),
    ],
)
def test_malformed_manifests_are_refused_naming_the_field(data, fragment):
    with pytest.raises(ManifestError, match=fragment.replace("(", r"\(").replace(".", r"\.")):
        validate(data)


def _memory_manifest(**changes):
    data = build("move", {"Id": "a" * 64, "Name": "/web", "Config": {"Image": "busybox"}, "HostConfig": {}},
                 {"pages-1.img": {"size": 3, "sha256": "0" * 64}}, {"criu": "4.1"}, "api", 1.0)
    data.update(changes)
    return data


@pytest.mark.parametrize("changes, expected", [
    ({"phase": "memory"}, "a round number from 1"),
    ({"phase": "memory", "round": 0}, "a round number from 1"),
    ({"phase": "memory", "round": True}, "a round number from 1"),
    ({"phase": "memory", "round": 1, "disk": {}}, "carries no disk state"),
    ({"phase": "rounds"}, "is not checkpoint, precopy or memory"),
    ({"memory_rounds": -1}, "memory_rounds must be a number of rounds"),
    ({"memory_rounds": "2"}, "memory_rounds must be a number of rounds"),
    ({"memory_rounds": 31}, "memory_rounds must be a number of rounds (0 to 30)"),
    ({"phase": "memory", "round": 31}, "a round number from 1"),
    ({"memory_rounds": 2, "lazy": True}, "memory rounds come without disk state and without post-copy"),
])
def test_memory_rounds_in_a_manifest_are_checked(changes, expected):
    with pytest.raises(ManifestError, match=re.escape(expected)):
        validate(_memory_manifest(**changes))


def test_a_memory_round_and_a_final_dump_that_builds_on_rounds_are_valid():
    assert validate(_memory_manifest(phase="memory", round=2))["round"] == 2
    assert validate(_memory_manifest(memory_rounds=3))["memory_rounds"] == 3


def test_container_config_keeps_the_addresses_the_container_was_given():
    inspect = dict(INSPECT, NetworkSettings={"Networks": {
        "appnet": {"Aliases": ["web"], "IPAMConfig": {"IPv4Address": "172.31.240.10"}, "IPAddress": "172.31.240.10"},
        "bridge": {"Aliases": None, "IPAMConfig": None, "IPAddress": "172.17.0.2"}}})
    assert container_config(inspect)["networks"] == {"appnet": {"aliases": ["web"], "ipv4_address": "172.31.240.10"},
                                                     "bridge": {"aliases": []}}


@pytest.mark.parametrize("bad", [["shared"], {"../x": "web"}, {"shared": ""}, {"shared": 3}])
def test_volumes_from_names_volumes_and_members(bad):
    good = dict(manifest(), volumes_from={"shared": "web"})
    assert validate(good) is good
    with pytest.raises(ManifestError, match="volumes_from must map volume names"):
        validate(dict(manifest(), volumes_from=bad))
