# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A checkpoint's cgroup paths pointed at the container it is restored into (_criu/cgroup_image.py), on a cgroup image
CRIU 4.1 wrote for a Docker container (cgroupfs driver, cgroup v2) on the lab's QEMU host."""

from __future__ import annotations

import os

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import cgroup_image

SOURCE = "e6e48de4afe86a1e04589997a15f143b3a4d3fb78f8b0b67b56acc39e7811a4b"
TARGET = "0123456789abcdef" * 4
IMAGE = bytes.fromhex(
    "1943565430333859b60100000a520802124e0a0012482f646f636b65722f6536653438646534616665383661316530343538"
    "393939376131356631343362336134643366623738663862306236376235366163633339653738313161346218480a520803"
    "124e0a0012482f646f636b65722f653665343864653461666538366131653034353839393937613135663134336233613464"
    "336662373866386230623637623536616363333965373831316134621848128b020a001284020a47646f636b65722f653665"
    "3438646534616665383661316530343538393939376131356631343362336134643366623738663862306236376235366163"
    "63333965373831316134621a240a166367726f75702e737562747265655f636f6e74726f6c12001a0808a48302100018001a"
    "270a166367726f75702e6d61782e64657363656e64616e747312036d61781a0808a48302100018001a210a106367726f7570"
    "2e6d61782e646570746812036d61781a0808a48302100018001a1c0a0d6367726f75702e667265657a651201301a0808a483"
    "02100018001a1f0a0b6367726f75702e747970651206646f6d61696e1a0808a4830210001800220808ed8301100018001800")


def test_the_image_names_the_container_it_was_dumped_from():
    assert cgroup_image.paths(IMAGE) == [f"/docker/{SOURCE}"] * 2
    assert cgroup_image.container_cgroup(cgroup_image.paths(IMAGE)) == (f"/docker/{SOURCE}", SOURCE)


def test_same_driver_keeps_the_parent_and_changes_only_the_id():
    old = f"/docker/{SOURCE}"
    new = cgroup_image.target_cgroup(old, SOURCE, TARGET, "cgroupfs", "")
    assert new == f"/docker/{TARGET}"
    image, count = cgroup_image.retarget(IMAGE, old, new)
    assert count == 3  # two process sets, one directory
    assert image == IMAGE.replace(SOURCE.encode(), TARGET.encode())  # same length: only the ID's bytes differ
    assert cgroup_image.retarget(image, old=new, new=old)[0] == IMAGE


def test_another_driver_gets_docker_s_default_place_and_the_lengths_follow():
    old = f"/docker/{SOURCE}"
    new = cgroup_image.target_cgroup(old, SOURCE, TARGET, "systemd", "")
    assert new == f"/system.slice/docker-{TARGET}.scope"
    image, count = cgroup_image.retarget(IMAGE, old, new)
    assert count == 3
    assert cgroup_image.paths(image) == [new] * 2
    assert len(image) == len(IMAGE) + 3 * (len(new) - len(old))
    # Each member's cgns_prefix (the namespace root: the container's cgroup) is the new path's length.
    for _n, _w, cg_set in cgroup_image.decode(cgroup_image.decode(image[12:])[0][2]):
        if _n == 2:
            assert dict((n, v) for n, _w2, v in cgroup_image.decode(cg_set))[3] == len(new)
    # The directory keeps its properties, named without the leading '/'.
    controllers = [v for n, _w, v in cgroup_image.decode(image[12:]) if n == 2]
    (directory,) = [v for n, _w, v in cgroup_image.decode(controllers[0]) if n == 2]
    fields = cgroup_image.decode(directory)
    assert fields[0][2] == new[1:].encode()
    assert b"cgroup.max.depth" in directory
    assert cgroup_image.retarget(image, old=new, new=old)[0] == IMAGE  # and back, to the byte


@pytest.mark.parametrize("old, driver, parent, expected", [
    (f"/system.slice/docker-{SOURCE}.scope", "systemd", "", f"/system.slice/docker-{TARGET}.scope"),
    (f"/system.slice/docker-{SOURCE}.scope", "cgroupfs", "", f"/docker/{TARGET}"),
    (f"/system.slice/docker-{SOURCE}.scope", "cgroupfs", "/apps", f"/apps/{TARGET}"),
    (f"/docker/{SOURCE}", "systemd", "fleet-apps.slice", f"/fleet.slice/fleet-apps.slice/docker-{TARGET}.scope"),
    (f"/apps/{SOURCE}", "cgroupfs", "/apps", f"/apps/{TARGET}"),
])
def test_where_docker_puts_the_new_container(old, driver, parent, expected):
    assert cgroup_image.target_cgroup(old, SOURCE, TARGET, driver, parent) == expected


def test_paths_below_the_container_s_cgroup_move_with_it_and_others_stay():
    member = cgroup_image.encode([(1, 2, b""), (2, 2, f"/docker/{SOURCE}/worker".encode()), (3, 0, 72)])
    other = cgroup_image.encode([(1, 2, b""), (2, 2, b"/init.scope")])
    sets = [(1, 2, cgroup_image.encode([(1, 0, 2), (2, 2, member)])),
            (1, 2, cgroup_image.encode([(1, 0, 3), (2, 2, other)]))]
    entry = cgroup_image.encode(sets)
    image = IMAGE[:8] + len(entry).to_bytes(4, "little") + entry
    assert cgroup_image.container_cgroup(cgroup_image.paths(image)) == (f"/docker/{SOURCE}", SOURCE)
    moved, count = cgroup_image.retarget(image, f"/docker/{SOURCE}", f"/docker/{TARGET}")
    assert count == 1
    assert cgroup_image.paths(moved) == [f"/docker/{TARGET}/worker", "/init.scope"]


def test_the_file_is_rewritten_for_another_container_only(tmp_path):
    (tmp_path / "cgroup.img").write_bytes(IMAGE)
    assert cgroup_image.retarget_file(str(tmp_path), SOURCE, "cgroupfs", "") is None  # its own container
    assert (tmp_path / "cgroup.img").read_bytes() == IMAGE
    assert cgroup_image.retarget_file(str(tmp_path), TARGET, "systemd", "") == {
        "from": f"/docker/{SOURCE}", "to": f"/system.slice/docker-{TARGET}.scope"}
    assert cgroup_image.paths((tmp_path / "cgroup.img").read_bytes()) == [f"/system.slice/docker-{TARGET}.scope"] * 2
    assert os.stat(tmp_path / "cgroup.img").st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["cgroup.img"]
    assert cgroup_image.retarget_file(str(tmp_path / "none"), TARGET, "systemd", "") is None  # no cgroup image


@pytest.mark.parametrize("image, problem", [
    (b"\x19CVT", "too short"),
    (IMAGE[:-1], "one entry of 438 bytes was expected"),
    (IMAGE[:12] + b"\x0a\xff" + IMAGE[14:], "runs past its message"),
    (IMAGE[:12] + b"\x0b" + IMAGE[13:], "wire type 3"),
])
def test_a_damaged_image_is_refused_with_what_is_wrong(image, problem):
    with pytest.raises(cgroup_image.CgroupImageError, match=problem):
        cgroup_image.retarget(image, f"/docker/{SOURCE}", f"/docker/{TARGET}")
