# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fast restore's linked pages, on a real directory tree laid out like Docker's."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import linked_pages as pages

CID = "9abd1e16c3bdd54bb6ba162a3af36ac28c2a4a5453151c09f7f2c410b211120e"


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "containers" / CID / "checkpoints" / "pre-reboot"
    path.mkdir(parents=True)
    (path / "pages-1.img").write_bytes(b"P1" * 1000)
    (path / "pages-2.img").write_bytes(b"P2" * 10)
    (path / "pagemap-1.img").write_bytes(b"map")
    (path / "inventory.img").write_bytes(b"inv")
    return path


def contents(path):
    return {name: (path / name).read_bytes() for name in sorted(os.listdir(path))}


def test_side_dir_is_beside_the_checkpoints_not_among_them(checkpoint):
    side = pages.side_dir(str(checkpoint))
    assert side == str(checkpoint.parent.parent / ".fleet-pages-pre-reboot")


def test_link_moves_only_the_pages_aside_root_only_and_links_them(checkpoint):
    before = contents(checkpoint)
    assert pages.link(str(checkpoint)) == ["pages-1.img", "pages-2.img"]
    side = pages.side_dir(str(checkpoint))
    assert sorted(os.listdir(side)) == ["pages-1.img", "pages-2.img"]
    assert os.stat(side).st_mode & 0o777 == 0o700
    for name in ("pages-1.img", "pages-2.img"):
        assert os.path.islink(checkpoint / name)
        assert not os.readlink(checkpoint / name).startswith("/")  # relative: see the module's docstring
    assert not os.path.islink(checkpoint / "pagemap-1.img")
    assert contents(checkpoint) == before  # read through the links: the same bytes
    assert pages.put_back(str(checkpoint)) == ["pages-1.img", "pages-2.img"]
    assert not os.path.exists(side)
    assert not any(os.path.islink(checkpoint / name) for name in os.listdir(checkpoint))
    assert contents(checkpoint) == before


def test_the_link_resolves_from_any_other_directory_like_containerds_unpacked_copy(checkpoint, tmp_path):
    pages.link(str(checkpoint))
    elsewhere = tmp_path / "tmp" / "ctrd-checkpoint123"
    elsewhere.mkdir(parents=True)
    # What containerd does with the tar's link: recreate it as it is, in another directory.
    os.symlink(os.readlink(checkpoint / "pages-1.img"), elsewhere / "pages-1.img")
    assert (elsewhere / "pages-1.img").read_bytes() == b"P1" * 1000
    assert pages.leftovers([str(tmp_path / "tmp")], pages.side_dir(str(checkpoint))) == [str(elsewhere)]
    pages.put_back(str(checkpoint))


def test_leftovers_ignore_other_restores_and_real_files(checkpoint, tmp_path):
    pages.link(str(checkpoint))
    temp = tmp_path / "tmp"
    other = temp / "ctrd-checkpoint1"  # another container's restore: links elsewhere
    other.mkdir(parents=True)
    os.symlink("../../elsewhere/pages-1.img", other / "pages-1.img")
    plain = temp / "ctrd-checkpoint2"  # a restore of Docker's own: real pages
    plain.mkdir()
    (plain / "pages-1.img").write_bytes(b"x")
    unrelated = temp / "something"
    unrelated.mkdir()
    os.symlink(os.readlink(checkpoint / "pages-1.img"), unrelated / "pages-1.img")
    assert pages.leftovers([str(temp), str(tmp_path / "missing")], pages.side_dir(str(checkpoint))) == []
    pages.put_back(str(checkpoint))


def test_put_back_repairs_a_run_interrupted_half_way(checkpoint):
    before = contents(checkpoint)
    side = pages.side_dir(str(checkpoint))
    os.mkdir(side, 0o700)
    os.rename(checkpoint / "pages-1.img", os.path.join(side, "pages-1.img"))  # moved, not linked yet
    os.rename(checkpoint / "pages-2.img", os.path.join(side, "pages-2.img"))
    os.symlink(pages.link_target(side, "pages-2.img"), checkpoint / "pages-2.img")
    assert pages.put_back(str(checkpoint)) == ["pages-1.img", "pages-2.img"]
    assert contents(checkpoint) == before and not os.path.exists(side)


def test_link_first_repairs_then_links_again(checkpoint):
    pages.link(str(checkpoint))
    assert pages.link(str(checkpoint)) == ["pages-1.img", "pages-2.img"]  # an interrupted run, then a new restore
    pages.put_back(str(checkpoint))
    assert not os.path.exists(pages.side_dir(str(checkpoint)))


def test_nothing_to_link_and_nothing_to_put_back(tmp_path):
    path = tmp_path / "containers" / CID / "checkpoints" / "empty"
    path.mkdir(parents=True)
    (path / "inventory.img").write_bytes(b"inv")
    assert pages.link(str(path)) == []
    assert not os.path.exists(pages.side_dir(str(path)))
    assert pages.put_back(str(path)) == []


def test_a_failed_link_puts_everything_back(checkpoint):
    before = contents(checkpoint)
    os.mkdir(pages.side_dir(str(checkpoint)) + "-blocker")
    os.symlink(pages.side_dir(str(checkpoint)) + "-blocker", checkpoint / "pages-3.img")  # not a file: left alone
    side = pages.side_dir(str(checkpoint))
    with open(side, "w", encoding="utf-8"):  # a file where the side directory goes: mkdir fails
        pass
    with pytest.raises(OSError):
        pages.link(str(checkpoint))
    os.unlink(side)
    os.unlink(checkpoint / "pages-3.img")
    assert contents(checkpoint) == before


def test_containerd_temp_dirs_from_a_real_process_named_containerd(tmp_path):
    fake = tmp_path / "containerd"
    os.symlink(shutil.which("sleep"), fake)
    proc = subprocess.Popen([str(fake), "30"], env={"XDG_RUNTIME_DIR": "/run/user/4242", "PATH": "/usr/bin:/bin"})
    try:
        deadline = time.monotonic() + 5
        while "/run/user/4242" not in pages.containerd_temp_dirs() and time.monotonic() < deadline:
            time.sleep(0.05)
        dirs = pages.containerd_temp_dirs()
        assert "/run/user/4242" in dirs and dirs[-1] == "/tmp"
    finally:
        proc.kill()
        proc.wait()


def test_pages_left_aside_are_counted_where_they_wait(checkpoint):
    """Check mode does not repair an interrupted fast restore: it must still see the checkpoint whole."""
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import integrity
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store

    whole = integrity.images(str(checkpoint))
    size = store.tree_size(str(checkpoint))
    pages.link(str(checkpoint))
    os.unlink(checkpoint / "pages-2.img")  # killed between moving a file and linking it
    assert set(pages.aside(str(checkpoint))) == {"pages-1.img", "pages-2.img"}
    assert integrity.images(str(checkpoint)) == whole
    listed = store.list_checkpoints(str(checkpoint.parent.parent.parent.parent), CID)
    assert [(item["name"], item["size"]) for item in listed] == [("pre-reboot", size)]
    pages.put_back(str(checkpoint))
    assert pages.aside(str(checkpoint)) == {}


def test_containerds_plain_copy_of_this_checkpoint_is_found_and_no_other(checkpoint, tmp_path):
    temp = tmp_path / "tmp"
    ours = temp / "ctrd-checkpoint123"
    shutil.copytree(checkpoint, ours)
    (checkpoint / "fleet-checkpoint.json").write_text("{}")
    (ours / "fleet-checkpoint.json").write_text('{"rewritten": "since"}')
    other = temp / "ctrd-checkpoint456"  # another container: the same sizes, other small images
    shutil.copytree(ours, other)
    (other / "inventory.img").write_bytes(b"INV")
    linked = temp / "ctrd-checkpoint789"  # a linked restore's leftover: links, not files
    shutil.copytree(ours, linked)
    os.unlink(linked / "pages-1.img")
    os.symlink("../elsewhere", linked / "pages-1.img")
    (temp / "unrelated").mkdir()
    found = pages.copies([str(temp), str(tmp_path / "missing")], str(checkpoint), unchecked=("fleet-checkpoint.json",))
    assert found == [str(ours)]
    assert pages.copies([str(temp)], str(tmp_path / "gone")) == []
