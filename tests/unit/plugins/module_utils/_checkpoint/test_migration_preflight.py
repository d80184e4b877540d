# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A migration's pre-flight, on a faked Engine API and faked CRIU answers: every problem named at once."""

from __future__ import annotations

import base64
import json

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import migration_preflight as mp
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError

IMAGE_ID = "sha256:" + "1" * 64
INSPECT = {
    "Id": "ab" * 32, "Name": "/web", "Image": IMAGE_ID,
    "Config": {"Image": "busybox", "Cmd": ["counter"], "Env": ["DB_PASSWORD=hunter2"], "ExposedPorts": {"8080/tcp": {}}},
    "HostConfig": {"NetworkMode": "appnet", "PortBindings": {"8080/tcp": [{"HostIp": "", "HostPort": "18080"}],
                                                             "53/udp": [{"HostIp": "", "HostPort": "5353"}]}},
    "Mounts": [{"Type": "bind", "Source": "/etc/app", "Destination": "/etc/app", "RW": False}],
    "NetworkSettings": {"Networks": {"appnet": {"Aliases": ["web"]}}},
}
# /proc/net/tcp: a socket listening on 18080 (0x46A0); /proc/net/udp: one bound to 5353 (0x14E9).
TCP = ("  sl  local_address rem_address   st\n"
       "   0: 00000000:46A0 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1\n"
       "   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 2\n")
UDP = "  sl  local_address rem_address   st\n   0: 00000000:14E9 00000000:0000 07 00000000:00000000\n"


class FakeApi:
    def __init__(self, containers=None, images=None, networks=(), experimental=True, published=()):
        self.containers = containers or {}
        self.images = images or {}
        self.networks = set(networks)
        self.experimental = experimental
        self.published = list(published)  # /containers/json's Ports of the running containers

    def get(self, path, **query):
        if path == "/info":
            return {"ExperimentalBuild": self.experimental, "DockerRootDir": "/var/lib/docker"}
        if path == "/containers/json":
            return [{"Id": "c" * 64, "Ports": self.published}]
        parts = path.split("/")
        if parts[1] == "containers" and parts[-1] == "stats":
            return {"memory_stats": {"usage": 300 * 2**20}}
        name = parts[2]
        if parts[1] == "containers" and name in self.containers:
            return self.containers[name]
        if parts[1] == "images" and name in self.images:
            return {"Id": name, "Size": self.images[name]}
        if parts[1] == "networks" and name in self.networks:
            return {"Name": name}
        raise DockerAPIError(f"{path}: 404", status=404)


def criu(version="4.2.1", cpu_ok=True):
    calls = []

    def run(argv, **kwargs):
        calls.append(argv)
        if argv[1:] == ["--version"]:
            return 0, f"Version: {version}\n", ""
        if argv[1:3] == ["cpuinfo", "dump"]:
            with open(f"{argv[4]}/cpuinfo.img", "wb") as handle:
                handle.write(b"cpu")
            return 0, "", ""
        if argv[1:3] == ["cpuinfo", "check"]:
            with open(f"{argv[4]}/cpuinfo.img", "rb") as handle:
                assert handle.read() == b"cpu"
            return (0, "", "") if cpu_ok else (1, "", "Error: cpu feature avx512f missing")
        raise AssertionError(argv)
    run.calls = calls
    return run


def which(missing=()):
    return lambda name: None if name in missing else f"/usr/bin/{name}"


def the_plan(**kwargs):
    api = FakeApi(containers={"web": INSPECT}, images={IMAGE_ID: 500 * 2**20})
    return mp.plan(api, ["web", "ghost"], criu(**kwargs), which(), "6.18.44")


def test_the_plan_describes_what_moves():
    plan = the_plan()
    assert [c["name"] for c in plan["containers"]] == ["web"]  # ghost is the source's own pre-flight's to name
    web = plan["containers"][0]
    assert web["memory"] == 300 * 2**20 and web["image_size"] == 500 * 2**20
    assert web["config"]["image"]["id"] == IMAGE_ID and web["config"]["port_bindings"]
    assert "hunter2" not in str(plan) and "env" not in web["config"]  # no secrets in a task result
    assert plan["criu"] == "4.2.1" and plan["kernel"] == "6.18.44"
    assert base64.b64decode(plan["cpuinfo"]) == b"cpu"


def test_a_target_that_can_take_it_has_no_problems():
    api = FakeApi(networks=["appnet"], images={IMAGE_ID: 1})
    problems = mp.target_problems(api, the_plan(), "controller", "load", criu(), which(), "6.18.44",
                                  read=lambda path: "header\n", path_exists=lambda path: True,
                                  free_bytes=lambda path: 10 * 2**30)
    assert problems == []


def test_every_problem_is_named_at_once():
    api = FakeApi(containers={"web": {"State": {"Status": "running"}}}, experimental=False)
    proc = {"/proc/net/tcp": TCP, "/proc/net/udp": UDP}

    def read(path):
        if path not in proc:
            raise FileNotFoundError(path)
        return proc[path]
    problems = mp.target_problems(api, the_plan(version="4.2.1"), "controller", "load", criu("4.1", cpu_ok=False),
                                  which(missing=("python3",)), "6.18.44", read=read,
                                  path_exists=lambda path: False, free_bytes=lambda path: 100 * 2**20)
    text = "\n".join(problems)
    for fragment in ("python3 command is missing on the target", "experimental mode is off",
                     "CRIU 4.1 on the target is older than the source's 4.2.1", "avx512f",
                     "a container named web already exists on the target (running)",
                     "0.0.0.0:18080/tcp, which is taken", "0.0.0.0:5353/udp, which is taken",
                     "network appnet does not exist", "bind mount source /etc/app does not exist",
                     "100 MiB free in /var/lib/docker"):
        assert fragment in text, (fragment, problems)
    assert len(problems) == 10, problems


def test_the_disk_needed_counts_only_the_images_the_target_lacks():
    plan = the_plan()
    has = FakeApi(networks=["appnet"], images={IMAGE_ID: 1})
    lacks = FakeApi(networks=["appnet"])
    free = (300 + 256 + 100) * 2**20  # the memory and the margin fit, the 500 MiB image does not
    args = dict(read=lambda path: "", path_exists=lambda path: True, free_bytes=lambda path: free)
    assert mp.target_problems(has, plan, "controller", "load", criu(), which(), "6.18.44", **args) == []
    assert "MiB free" in mp.target_problems(lacks, plan, "controller", "load", criu(), which(), "6.18.44", **args)[0]
    assert mp.target_problems(lacks, plan, "controller", "pull", criu(), which(), "6.18.44", **args) == []


def test_no_criu_on_the_target_is_named():
    api = FakeApi(networks=["appnet"], images={IMAGE_ID: 1})
    problems = mp.target_problems(api, the_plan(), "direct", "load", criu(), which(missing=("criu",)), "6.18.44",
                                  read=lambda path: "", path_exists=lambda path: True,
                                  free_bytes=lambda path: 10 * 2**30)
    assert problems == ["CRIU is not installed on the target: run fleet.checkpoint.install there first"]


def test_the_commands_of_each_path():
    assert mp.missing_commands("source", "direct", which(missing=("scp",))) == [
        "the scp command is missing on the source (the direct path runs it there): install it"]
    assert mp.missing_commands("source", "controller", which(missing=("scp",))) == []


class DiskApi(FakeApi):
    """Volumes too: {name: (driver, options, mountpoint, users)}; the daemon's storage driver."""

    def __init__(self, volumes, driver="overlay2", **kwargs):
        super().__init__(**kwargs)
        self.volumes, self.driver = volumes, driver

    def get(self, path, **query):
        if path == "/info":
            return dict(super().get(path), Driver=self.driver)
        if path.startswith("/volumes/") and path[9:] in self.volumes:
            driver, options, mountpoint, _users = self.volumes[path[9:]]
            return {"Name": path[9:], "Driver": driver, "Options": options, "Mountpoint": mountpoint, "Labels": None}
        if path == "/containers/json":
            wanted = json.loads(query["filters"])["volume"][0]
            return [{"Id": cid, "Names": [f"/{name}"], "State": state} for cid, name, state in self.volumes[wanted][3]]
        if path == f"/containers/{INSPECT['Id']}/json":
            return dict(INSPECT, SizeRw=7 * 2**20)
        return super().get(path, **query)


def with_volumes(*names):
    inspect = dict(INSPECT, GraphDriver={"Name": "overlay2", "Data": {"UpperDir": "/nonexistent/diff"}})
    inspect["Mounts"] = INSPECT["Mounts"] + [{"Type": "volume", "Name": name, "Destination": f"/{name}"}
                                             for name in names]
    return inspect


def test_the_source_names_volumes_that_cannot_travel_and_each_bind_mount(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "rows").write_bytes(b"r" * 8192)
    mine = (INSPECT["Id"], "web", "running")
    api = DiskApi({"db": ("local", None, str(tmp_path / "db"), [mine, ("ef" * 32, "old-job", "exited")]),
                   "shared": ("local", None, str(tmp_path), [mine, ("cd" * 32, "worker", "running")]),
                   "nfs": ("local", {"type": "nfs", "device": ":/export"}, "/x", [mine])},
                  containers={"web": with_volumes("db")}, images={IMAGE_ID: 1})
    good = mp.plan(api, ["web"], criu(), which(), "6.18.44", True, "all")
    assert good["problems"] == []
    assert good["containers"][0]["disk"] == {"rootfs": True, "volumes": ["db"], "bytes": 7 * 2**20 + 8192}
    assert good["notices"] == ["web: bind mount /etc/app -> /etc/app is host-local - its contents do not move; the "
                               "target's own /etc/app is mounted there"]
    assert mp.plan(api, ["web"], criu(), which(), "6.18.44", False, "none")["containers"][0]["disk"] == {
        "rootfs": False, "volumes": [], "bytes": 0}
    api.containers["web"] = with_volumes("shared")
    assert "also used by worker, running" in mp.plan(api, ["web"], criu(), which(), "6.18.44", True, "all")["problems"][0]
    api.containers["web"] = with_volumes("nfs")
    assert "not a plain local volume" in mp.plan(api, ["web"], criu(), which(), "6.18.44", True, "named")["problems"][0]


def test_a_group_moved_together_carries_a_volume_only_its_members_share_once(tmp_path):
    worker = dict(with_volumes("shared"), Id="cd" * 32, Name="/worker")
    mine, theirs = (INSPECT["Id"], "web", "running"), ("cd" * 32, "worker", "running")
    api = DiskApi({"shared": ("local", None, str(tmp_path), [mine, theirs])},
                  containers={"web": with_volumes("shared"), "worker": worker}, images={IMAGE_ID: 1})
    alone = mp.plan(api, ["web", "worker"], criu(), which(), "6.18.44", False, "all")["problems"]
    assert len(alone) == 2 and "move them with it as one group (consistent=true)" in alone[0]
    moved = mp.plan(api, ["web", "worker"], criu(), which(), "6.18.44", False, "all", group=True)
    assert moved["problems"] == []
    assert [row["disk"]["volumes"] for row in moved["containers"]] == [["shared"], []]


def test_the_target_refuses_a_volume_it_has_and_a_layer_it_cannot_hold():
    api = DiskApi({"db": ("local", None, "/var/lib/docker/volumes/db/_data", [])}, driver="btrfs")
    problems = mp.disk_problems(api, api.get("/info"), "web", {"rootfs": True, "volumes": ["db", "logs"]})
    assert len(problems) == 2
    assert "btrfs storage driver, not overlay2" in problems[0]
    assert "volume db already exists on the target" in problems[1]
    assert mp.disk_problems(api, {"Driver": "overlay2"}, "web", {"rootfs": True, "volumes": ["logs"]}) == []


def test_replace_lets_a_stopped_namesake_through_and_still_refuses_a_running_one():
    plan = {"containers": [{"name": "web", "config": {}}, {"name": "db", "config": {}}], "criu": None}
    api = FakeApi(containers={"web": {"State": {"Status": "exited", "Running": False}},
                              "db": {"State": {"Status": "running", "Running": True}}})
    replaced = []
    problems = mp.target_problems(api, plan, "controller", "load", criu(), which(), "6.18.44",
                                  read=lambda path: "", free_bytes=lambda path: 2**40, replaced=replaced)
    assert replaced == ["web"]
    assert [p for p in problems if "named" in p] == [
        "a container named db runs on the target: fleet_checkpoint_migrate_replace replaces only a stopped one - stop "
        "it there first, or set fleet_checkpoint_migrate_rename to give the moving one another name"]
    refused = mp.target_problems(api, plan, "controller", "load", criu(), which(), "6.18.44",
                                 read=lambda path: "", free_bytes=lambda path: 2**40)
    assert "a container named web already exists on the target (exited)" in " ".join(refused)


def test_rename_checks_the_new_name_and_leaves_the_old_one_alone():
    """web is taken on the target (running): renamed to web-2 it can move; a new name that is taken is named."""
    plan = {"containers": [{"name": "web", "config": {}}, {"name": "db", "config": {}}], "criu": None}
    api = FakeApi(containers={"web": {"State": {"Status": "running", "Running": True}},
                              "db-old": {"State": {"Status": "exited", "Running": False}}})

    def problems(rename, **kwargs):
        return mp.target_problems(api, plan, "controller", "load", criu(), which(), "6.18.44", read=lambda path: "",
                                  free_bytes=lambda path: 2**40, rename=rename, **kwargs)
    assert problems({"web": "web-2"}) == []
    assert problems({"web": "web-2", "db": "db-old"}) == [
        "a container named db-old already exists on the target (exited): remove or rename it there first, set "
        "fleet_checkpoint_migrate_rename to give the moving one another name, or fleet_checkpoint_migrate_replace to "
        "replace a stopped one"]
    replaced = []
    assert problems({"web": "web-2", "db": "db-old"}, replaced=replaced) == [] and replaced == ["db-old"]
    assert problems({"web": "db"}) == ["rename gives two moving containers the same name (db): give each its own"]
    assert problems({"cache": "c2", "web": "w 2"}) == [
        "rename names 'cache', which is not one of the containers that move (web, db): rename only those",
        "rename.web must be a container name (at least 2 of letters, digits, '_', '.', '-', starting with a letter "
        "or digit), not 'w 2'"]


def test_a_target_kernel_older_than_the_sources_is_refused_unless_allowed():
    plan = {"containers": [], "criu": None, "kernel": "6.18.44"}

    def problems(kernel, **kwargs):
        return mp.target_problems(FakeApi(), plan, "controller", "load", criu(), which(), kernel,
                                  read=lambda path: "", free_bytes=lambda path: 2**40, **kwargs)
    assert problems("6.18.2") == [] and problems("6.19.0-rc1") == [] and problems("7.0.1") == []
    refused = problems("6.12.57+deb13-amd64")
    assert len(refused) == 1 and refused[0].startswith(
        "the target's kernel 6.12.57+deb13-amd64 is older than the source's 6.18.44"), refused
    assert "fleet_checkpoint_migrate_allow_older_kernel" in refused[0]
    assert problems("6.12.57+deb13-amd64", allow_older_kernel=True) == []
    assert mp.kernel_problems("", "6.1.0") == []  # a plan without a kernel (an older source side): nothing to compare


def test_a_port_docker_publishes_without_a_proxy_socket_is_taken_and_addresses_count():
    """userland-proxy=false: no socket listens, Docker still publishes the port. A binding to one address does not
    collide with a listener on another one."""
    plan = {"containers": [{"name": "web", "config": {"port_bindings": {
        "8080/tcp": [{"HostIp": "", "HostPort": "18080"}], "9090/tcp": [{"HostIp": "127.0.0.1", "HostPort": "19090"}],
        "53/udp": [{"HostIp": "", "HostPort": "5353"}]}}}], "criu": None}
    api = FakeApi(published=[{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 18080, "Type": "tcp"},
                             {"IP": "::", "PrivatePort": 80, "PublicPort": 18080, "Type": "tcp"},
                             {"PrivatePort": 443, "Type": "tcp"}])
    # A listener on 10.0.0.5:19090 (0x4A92) only, and nothing on UDP.
    tcp = "  sl  local_address\n   0: 0500000A:4A92 00000000:0000 0A 00000000:00000000\n"
    problems = mp.target_problems(api, plan, "controller", "load", criu(), which(), "6.18.44",
                                  read=lambda path: tcp if path == "/proc/net/tcp" else "",
                                  free_bytes=lambda path: 2**40)
    assert problems == ["web publishes 0.0.0.0:18080/tcp, which is taken on the target: free it, or move the container "
                        "that holds it first"]


def test_the_disk_needed_counts_an_image_two_containers_share_once():
    config = {"image": {"id": IMAGE_ID}}
    plan = {"containers": [{"name": name, "config": config, "memory": 0, "image_size": 500 * 2**20}
                           for name in ("web", "worker")], "criu": None}
    free = (500 + 256 + 100) * 2**20  # one copy of the image and the margin fit; two would not
    assert mp.target_problems(FakeApi(), plan, "controller", "load", criu(), which(), "6.18.44",
                              read=lambda path: "", free_bytes=lambda path: free) == []


@pytest.mark.parametrize("side, version, expected", [
    ("target", "1.41", ["post-copy: Docker here serves API 1.41, older than 1.43"]),
    ("target", "1.45", []),
    ("target", None, []),  # not known: Docker did not answer, which is said already
    ("source", "1.41", []),  # the source's Docker creates nothing for a lazy move
])
def test_post_copy_needs_a_target_docker_that_takes_annotations(monkeypatch, side, version, expected):
    monkeypatch.setattr(mp.lazy_pages, "read_host_facts", lambda: ("", 0))
    monkeypatch.setattr(mp.lazy_pages, "lazy_problems", lambda *args: [])
    problems = mp.mode_problems(side, "lazy", lambda *args, **kwargs: (0, "", ""), lambda name: f"/usr/bin/{name}",
                                version)
    assert [problem[:len(want)] for problem, want in zip(problems, expected)] == expected and \
        len(problems) == len(expected), problems


def part(name, volumes=(), ports=None, address=None, memory=0, image=None, image_size=0):
    """One container of a source's plan, as docker_migration_preflight side=source describes it."""
    config = {"port_bindings": ports or {}, "networks": {"appnet": {"aliases": [name]}}}
    if address:
        config["networks"]["appnet"]["ipv4_address"] = address
    if image:
        config["image"] = {"id": image}
    return {"name": name, "config": config, "memory": memory, "image_size": image_size,
            "disk": {"volumes": list(volumes), "bytes": 0}}


class SubnetApi(FakeApi):
    """appnet has the subnet of the fixed addresses."""

    def get(self, path, **query):
        if path == "/networks/appnet":
            return {"Name": "appnet", "IPAM": {"Config": [{"Subnet": "172.31.243.0/24"}]}}
        return super().get(path, **query)


def test_the_parts_of_a_group_from_several_sources_are_checked_against_each_other():
    """Each source's part is pre-flighted alone on the target: a volume name, a host port or a fixed address that
    two sources bring is found only with the other parts alongside."""
    mine = {"containers": [part("producer", volumes=["data"], ports={"80/tcp": [{"HostIp": "", "HostPort": "8080"}]},
                                address="172.31.243.11")], "criu": None}
    theirs = {"containers": [part("consumer", volumes=["data", "logs"],
                                  ports={"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
                                  address="172.31.243.11")]}
    args = dict(read=lambda path: "", path_exists=lambda path: True, free_bytes=lambda path: 2**40)
    alone = mp.target_problems(SubnetApi(networks=["appnet"]), mine, "direct", "load", criu(), which(), "6.18.44", **args)
    assert alone == []
    problems = mp.target_problems(SubnetApi(networks=["appnet"]), mine, "direct", "load", criu(), which(), "6.18.44",
                                  alongside={"web-2": theirs}, **args)
    assert problems == [
        "producer and consumer (from web-2) both carry a volume named data, and the target can hold only one: on one "
        "source, copy it into a volume of another name and recreate its container with that one",
        "producer and consumer (from web-2) both publish 0.0.0.0:8080/tcp on the target: publish another port for "
        "one of them, or move them to different targets",
        "producer and consumer (from web-2) both have the address 172.31.243.11 on network appnet: give one of them "
        "another address, or move them to different targets"]
    # Different names, ports and addresses: nothing in common.
    apart = {"containers": [part("consumer", volumes=["logs"], ports={"80/tcp": [{"HostIp": "", "HostPort": "8081"}]},
                                 address="172.31.243.10")]}
    assert mp.target_problems(SubnetApi(networks=["appnet"]), mine, "direct", "load", criu(), which(), "6.18.44",
                              alongside={"web-2": apart}, **args) == []


def test_the_disk_of_a_group_from_several_sources_is_counted_together():
    """Two parts of 300 MiB each and one image they share: the target must hold both checkpoints, the image once."""
    mine = {"containers": [part("producer", memory=300 * 2**20, image=IMAGE_ID, image_size=500 * 2**20)],
            "criu": None}
    theirs = {"containers": [part("consumer", memory=300 * 2**20, image=IMAGE_ID, image_size=500 * 2**20)]}
    free = (300 + 500 + 256 + 100) * 2**20  # this part, the image and the margin fit; the other part too would not

    def check(alongside):
        return mp.target_problems(SubnetApi(networks=["appnet"]), mine, "direct", "load", criu(), which(), "6.18.44",
                                  read=lambda path: "", free_bytes=lambda path: free, alongside=alongside)
    assert check({}) == []
    assert [problem for problem in check({"web-2": theirs}) if "MiB free" in problem] == [
        "the target has 1156 MiB free in /var/lib/docker, the images it lacks and the checkpoints (with the group's "
        "other parts) need about 1356 MiB: free some space there"]
