# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import container_config
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.container_create import (
    CreateError,
    HostAccess,
    create,
    create_body,
    host_access_problems,
    missing_host_parts,
    missing_prerequisites,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError

IMAGE_ID = "sha256:" + "1" * 64
INSPECT = {
    "Id": "ab" * 32,
    "Name": "/web",
    "Image": IMAGE_ID,
    "Config": {"Image": "fleet-lab-workload:busybox", "Cmd": ["counter"], "Entrypoint": None,
               "Env": ["A=1", "SECRET=x"], "Labels": {"app": "web"}, "Hostname": "abababababab", "WorkingDir": "/srv",
               "User": "1000", "Tty": False, "OpenStdin": False, "ExposedPorts": {"8080/tcp": {}}},
    "HostConfig": {"NetworkMode": "appnet", "PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "18080"}]},
                   "RestartPolicy": {"Name": "unless-stopped", "MaximumRetryCount": 0}},
    "Mounts": [{"Type": "volume", "Name": "data", "Source": "/var/lib/docker/volumes/data/_data",
                "Destination": "/data", "RW": True},
               {"Type": "bind", "Source": "/etc/app", "Destination": "/etc/app", "RW": False}],
    "NetworkSettings": {"Networks": {"appnet": {"Aliases": ["web", "abababababab"]}}},
}


class FakeApi:
    def __init__(self, images=None, networks=()):
        self.images = images or {}
        self.networks = set(networks)
        self.posts = []

    def get(self, path, **query):
        kind, name = path.split("/")[1], path.split("/", 2)[2].rsplit("/json", 1)[0]
        if kind == "images" and name in self.images:
            return {"Id": self.images[name]}
        if kind == "networks" and name in self.networks:
            return {"Name": name}
        raise DockerAPIError(f"{path}: 404", status=404)

    def post(self, path, body=None, **query):
        self.posts.append((path, body, query))
        return {"Id": "cd" * 32}


def config():
    return container_config(INSPECT)


def test_create_body_recreates_the_configuration_with_restart_policy_no():
    body = create_body(config())
    assert body["Image"] == "fleet-lab-workload:busybox" and body["Cmd"] == ["counter"]
    assert body["Env"] == ["A=1", "SECRET=x"] and body["Labels"] == {"app": "web"}
    assert body["Hostname"] == "abababababab" and body["WorkingDir"] == "/srv" and body["User"] == "1000"
    assert body["ExposedPorts"] == {"8080/tcp": {}}
    host = body["HostConfig"]
    assert host["RestartPolicy"] == {"Name": "no"}
    assert host["PortBindings"] == {"8080/tcp": [{"HostIp": "", "HostPort": "18080"}]}
    assert host["Mounts"] == [
        {"Type": "volume", "Source": "data", "Target": "/data", "ReadOnly": False},
        {"Type": "bind", "Source": "/etc/app", "Target": "/etc/app", "ReadOnly": True},
    ]
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"appnet": {"Aliases": ["web"]}}}


def test_default_networks_need_no_endpoint_config():
    data = config()
    data["networks"] = {"bridge": {"aliases": []}}
    assert "NetworkingConfig" not in create_body(data)


def test_a_manifest_without_an_image_is_refused():
    data = config()
    data["image"] = {}
    with pytest.raises(CreateError, match="no image"):
        create_body(data)


def test_what_the_host_lacks_is_named():
    problems = missing_prerequisites(FakeApi(), config(), lambda path: False)
    text = " | ".join(problems)
    assert "image fleet-lab-workload:busybox is not on this host" in text
    assert "network appnet does not exist" in text
    assert "bind mount source /etc/app does not exist" in text


def test_a_different_image_under_the_same_name_is_refused():
    api = FakeApi(images={"fleet-lab-workload:busybox": "sha256:" + "2" * 64}, networks=["appnet"])
    problems = missing_prerequisites(api, config(), lambda path: True)
    assert len(problems) == 1 and "load the same image" in problems[0]


def test_create_posts_once_everything_is_there():
    api = FakeApi(images={IMAGE_ID: IMAGE_ID}, networks=["appnet"])
    assert create(api, "web", config(), lambda path: True) == "cd" * 32
    path, body, query = api.posts[0]
    # The tag is not on this host (the image came by id): created from the id.
    assert path == "/containers/create" and query == {"name": "web"} and body["Image"] == IMAGE_ID


def test_created_under_another_name_it_does_not_keep_its_old_name_as_an_alias():
    """A moved container renamed on the target (beside a namesake) must not answer to the namesake's name there."""
    api = FakeApi(images={IMAGE_ID: IMAGE_ID}, networks=["appnet"])
    create(api, "web-2", config(), lambda path: True)
    assert api.posts[0][1]["NetworkingConfig"] == {"EndpointsConfig": {"appnet": {"Aliases": []}}}
    create(api, "web", config(), lambda path: True)
    assert api.posts[1][1]["NetworkingConfig"] == {"EndpointsConfig": {"appnet": {"Aliases": ["web"]}}}


def test_create_uses_the_tag_when_it_names_the_recorded_image():
    api = FakeApi(images={IMAGE_ID: IMAGE_ID, "fleet-lab-workload:busybox": IMAGE_ID}, networks=["appnet"])
    create(api, "web", config(), lambda path: True)
    assert api.posts[0][1]["Image"] == "fleet-lab-workload:busybox"


def test_create_changes_nothing_when_something_is_missing():
    api = FakeApi()
    with pytest.raises(CreateError, match="not on this host"):
        create(api, "web", config(), lambda path: True)
    assert api.posts == []


def test_a_manifest_cannot_reach_into_the_host_unless_allowed():
    """An archive's manifest that binds / and the Docker socket, in the host's network: each setting is named."""
    hostile = dict(config(), network_mode="host", mounts=[
        {"type": "bind", "source": "/", "destination": "/host", "rw": True},
        {"type": "bind", "source": "/var/run/docker.sock", "destination": "/var/run/docker.sock", "rw": True},
        {"type": "bind", "source": "/srv/billing/../../etc", "destination": "/etc2", "rw": True},
        {"type": "volume", "name": "data", "destination": "/data", "rw": True}])
    assert host_access_problems(hostile, HostAccess()) == [
        "a bind mount of the host's / at /host (allow it with allow_bind_mounts)",
        "a bind mount of the host's /var/run/docker.sock at /var/run/docker.sock (allow it with allow_bind_mounts)",
        "a bind mount of the host's /srv/billing/../../etc at /etc2 (allow it with allow_bind_mounts)",
        "network mode host (allow it with allow_network_modes: [host])"]
    allowed = HostAccess(bind_mounts=("/", "/var/run/docker.sock", "/srv/billing"), network_modes=("host",))
    assert host_access_problems(hostile, allowed) == []
    # A prefix allows what is below it, not a sibling that shares its start; ../ is resolved first.
    below = HostAccess(bind_mounts=("/srv/billing",))
    assert host_access_problems(dict(config(), mounts=[
        {"type": "bind", "source": "/srv/billing/data", "destination": "/d"}]), below) == []
    assert len(host_access_problems(dict(config(), mounts=[
        {"type": "bind", "source": "/srv/billing-other", "destination": "/d"},
        {"type": "bind", "source": "/srv/billing/../../etc", "destination": "/e"}]), below)) == 2
    assert host_access_problems(dict(config(), network_mode="container:db", mounts=[]), HostAccess()) == [
        "network mode container:db (allow it with allow_network_modes: [container])"]
    assert host_access_problems(dict(config(), network_mode="appnet", mounts=[]), HostAccess()) == []


def test_the_addresses_a_container_was_given_come_back_well_formed_only():
    """A restore binds the container's TCP sockets back to its old address: a fixed one (--ip, --ip6) is given
    again; anything that is not an address of its kind is left out (the manifest crossed hosts)."""
    data = config()
    data["networks"] = {"appnet": {"aliases": [], "ipv4_address": "172.31.240.10", "ipv6_address": "fd00::10"},
                        "other": {"aliases": [], "ipv4_address": "fd00::11", "ipv6_address": "--ip=1"}}
    endpoints = create_body(data)["NetworkingConfig"]["EndpointsConfig"]
    assert endpoints["appnet"] == {"Aliases": [], "IPAMConfig": {"IPv4Address": "172.31.240.10",
                                                                 "IPv6Address": "fd00::10"}}
    assert endpoints["other"] == {"Aliases": []}


class SubnetApi(FakeApi):
    def get(self, path, **query):
        if path == "/networks/appnet":
            return {"Name": "appnet", "IPAM": {"Config": [{"Subnet": "172.31.240.0/24"}, {"Subnet": "fd00::/64"}]}}
        return super().get(path, **query)


def test_a_fixed_address_needs_a_subnet_that_holds_it_here():
    data = config()
    data["mounts"] = []
    data["networks"] = {"appnet": {"aliases": [], "ipv4_address": "172.31.240.10", "ipv6_address": "fd00::10"}}
    assert missing_host_parts(SubnetApi(), data, lambda path: True) == []
    data["networks"]["appnet"]["ipv4_address"] = "10.9.0.10"
    (problem,) = missing_host_parts(SubnetApi(), data, lambda path: True)
    assert problem.startswith("address 10.9.0.10 is not in network appnet's subnets on this host (172.31.240.0/24, "
                              "fd00::/64)")


class HeldApi(FakeApi):
    def get(self, path, **query):
        if path == "/networks/appnet":
            return {"Name": "appnet", "IPAM": {"Config": [{"Subnet": "172.31.240.0/24"}, {"Subnet": "fd00::/64"}]},
                    "Containers": {"c1": {"Name": "squatter", "IPv4Address": "172.31.240.10/24", "IPv6Address": ""},
                                   "c2": {"Name": "web", "IPv4Address": "172.31.240.12/24",
                                          "IPv6Address": "fd00::12/64"}}}
        return super().get(path, **query)


def test_a_fixed_address_a_running_container_holds_here_is_named():
    """Docker would refuse to start the container with it: refused before anything (the migration's pre-flight), the
    holder named; an address nobody holds (written in another form too) is no problem."""
    data = config()
    data["mounts"] = []
    data["networks"] = {"appnet": {"aliases": [], "ipv4_address": "172.31.240.10", "ipv6_address": "fd00::10"}}
    (problem,) = missing_host_parts(HeldApi(), data, lambda path: True)
    assert problem.startswith("address 172.31.240.10 on network appnet is held by container squatter on this host"), \
        problem
    data["networks"]["appnet"] = {"aliases": [], "ipv4_address": "172.31.240.11", "ipv6_address": "fd00::0:12"}
    (problem,) = missing_host_parts(HeldApi(), data, lambda path: True)
    assert problem.startswith("address fd00::0:12 on network appnet is held by container web"), problem
    data["networks"]["appnet"]["ipv6_address"] = "fd00::13"
    assert missing_host_parts(HeldApi(), data, lambda path: True) == []
