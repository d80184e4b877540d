# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.store import (
    METADATA_NAME,
    checkpoint_dir,
    copy_checkpoint,
    list_checkpoints,
    read_metadata,
    secure_tree,
    write_metadata,
)

CID = "ab" * 32


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def make_checkpoint(root, name, files=None, metadata=None, mtime=None):
    path = root / "containers" / CID / "checkpoints" / name
    path.mkdir(parents=True)
    for relative, data in (files or {"pages-1.img": b"p" * 100}).items():
        target = path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    if metadata is not None:
        (path / METADATA_NAME).write_text(json.dumps(metadata), encoding="utf-8")
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def test_checkpoint_dir_is_under_the_containers_checkpoints():
    assert checkpoint_dir("/var/lib/docker", CID, "pre-reboot") == (
        f"/var/lib/docker/containers/{CID}/checkpoints/pre-reboot")


@pytest.mark.parametrize("name", ["", "x", "../etc", "a/b", "a..b", ".hidden", "-dash", "n" * 129, None])
def test_checkpoint_dir_rejects_bad_names(name):
    with pytest.raises(ValueError):
        checkpoint_dir("/var/lib/docker", CID, name)


def test_metadata_round_trip_is_root_only_and_atomic(tmp_path):
    data = {"created": 1700000000.5, "restart_policy": {"Name": "always"}, "tree": [{"pid": 1, "cmd": "sh"}]}
    write_metadata(str(tmp_path), data)
    assert read_metadata(str(tmp_path)) == data
    assert mode(tmp_path / METADATA_NAME) == 0o600
    assert sorted(os.listdir(tmp_path)) == [METADATA_NAME]  # no .tmp left behind

    # Overwriting replaces the file (new inode) instead of truncating it in place.
    before = os.stat(tmp_path / METADATA_NAME).st_ino
    (tmp_path / f"{METADATA_NAME}.tmp").write_text("stale", encoding="utf-8")
    write_metadata(str(tmp_path), {"created": 2})
    assert read_metadata(str(tmp_path)) == {"created": 2}
    assert os.stat(tmp_path / METADATA_NAME).st_ino != before
    assert mode(tmp_path / METADATA_NAME) == 0o600
    # A file named like the old fixed temporary name is not taken for one of ours (nor written through).
    assert sorted(os.listdir(tmp_path)) == [METADATA_NAME, f"{METADATA_NAME}.tmp"]
    assert (tmp_path / f"{METADATA_NAME}.tmp").read_text(encoding="utf-8") == "stale"


def test_write_metadata_fixes_a_loose_leftover_temp_file(tmp_path):
    leftover = tmp_path / f"{METADATA_NAME}.tmp"
    leftover.write_text("old", encoding="utf-8")
    os.chmod(leftover, 0o644)
    write_metadata(str(tmp_path), {"a": 1})
    assert mode(tmp_path / METADATA_NAME) == 0o600


@pytest.mark.parametrize("content", [None, "not json {", "[1, 2, 3]", '"a string"', "", "dir"])
def test_read_metadata_returns_empty_when_missing_invalid_or_unreadable(tmp_path, content):
    if content == "dir":  # unreadable even for root: open() on a directory fails
        (tmp_path / METADATA_NAME).mkdir()
    elif content is not None:
        (tmp_path / METADATA_NAME).write_text(content, encoding="utf-8")
    assert read_metadata(str(tmp_path)) == {}


def test_read_metadata_of_a_missing_directory_is_empty(tmp_path):
    assert read_metadata(str(tmp_path / "nope")) == {}


def test_secure_tree_makes_directories_0700_and_files_0600(tmp_path):
    cp = tmp_path / "cp"
    (cp / "sub" / "deeper").mkdir(parents=True)
    (cp / "pages-1.img").write_bytes(b"p")
    (cp / "sub" / "core.img").write_bytes(b"c")
    (cp / "sub" / "deeper" / "x.img").write_bytes(b"x")
    for path in (cp / "pages-1.img", cp / "sub" / "core.img", cp / "sub" / "deeper" / "x.img"):
        os.chmod(path, 0o644)
    os.chmod(cp / "sub" / "deeper", 0o755)
    os.chmod(cp / "sub", 0o600)
    os.chmod(cp, 0o600)  # as containerd creates it: no x bit, so not even traversable for non-root
    secure_tree(str(cp))
    assert mode(cp) == 0o700
    assert mode(cp / "sub") == 0o700
    assert mode(cp / "sub" / "deeper") == 0o700
    assert mode(cp / "pages-1.img") == 0o600
    assert mode(cp / "sub" / "core.img") == 0o600
    assert mode(cp / "sub" / "deeper" / "x.img") == 0o600


def test_secure_tree_leaves_link_targets_alone(tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"o")
    os.chmod(outside, 0o644)
    cp = tmp_path / "cp"
    cp.mkdir()
    (cp / "link").symlink_to(outside)
    secure_tree(str(cp))
    assert mode(outside) == 0o644


def test_list_checkpoints_skips_dot_names_links_and_files_and_sorts_by_created(tmp_path):
    make_checkpoint(tmp_path, "newest", metadata={"created": 3000}, mtime=10)
    make_checkpoint(tmp_path, "oldest", metadata={"created": 1000}, mtime=9000)
    make_checkpoint(tmp_path, "middle", metadata={"created": 2000.5}, mtime=5)
    make_checkpoint(tmp_path, ".newest.fleet-copy", metadata={"created": 1})
    base = tmp_path / "containers" / CID / "checkpoints"
    (base / "plain-file").write_bytes(b"not a checkpoint")
    (base / "link").symlink_to(base / "middle")
    found = list_checkpoints(str(tmp_path), CID)
    assert [item["name"] for item in found] == ["oldest", "middle", "newest"]
    assert [item["created"] for item in found] == [1000, 2000.5, 3000]
    first = found[0]
    assert first["path"] == str(base / "oldest")
    assert first["metadata"] == {"created": 1000}
    assert first["size"] == 100 + len(json.dumps({"created": 1000}))


def test_list_checkpoints_falls_back_to_mtime(tmp_path):
    make_checkpoint(tmp_path, "docker-made", mtime=1500)
    make_checkpoint(tmp_path, "bad-created", metadata={"created": "yesterday"}, mtime=500)
    make_checkpoint(tmp_path, "ours", metadata={"created": 1000}, mtime=99999)
    found = list_checkpoints(str(tmp_path), CID)
    assert [(item["name"], item["created"]) for item in found] == [
        ("bad-created", 500), ("ours", 1000), ("docker-made", 1500)]
    assert found[2]["metadata"] == {}


def test_list_checkpoints_of_a_container_without_checkpoints_is_empty(tmp_path):
    assert list_checkpoints(str(tmp_path), CID) == []
    assert list_checkpoints(str(tmp_path / "no-root"), CID) == []


def test_copy_checkpoint_is_root_only(tmp_path):
    source = make_checkpoint(tmp_path, "src", files={"pages-1.img": b"p" * 10, "sub/core.img": b"c"},
                             metadata={"created": 1})
    os.chmod(source / "pages-1.img", 0o644)
    os.chmod(source / "sub", 0o755)
    destination = tmp_path / "export" / "nested" / "copy"
    copy_checkpoint(str(source), str(destination))
    assert (destination / "pages-1.img").read_bytes() == b"p" * 10
    assert (destination / "sub" / "core.img").read_bytes() == b"c"
    assert read_metadata(str(destination)) == {"created": 1}
    assert mode(destination) == 0o700
    assert mode(destination / "sub") == 0o700
    assert mode(destination.parent) == 0o700  # created parent
    for path in (destination / "pages-1.img", destination / "sub" / "core.img", destination / METADATA_NAME):
        assert mode(path) == 0o600
    assert sorted(os.listdir(destination.parent)) == ["copy"]
    assert mode(source / "pages-1.img") == 0o644  # the source is untouched


def test_copy_checkpoint_replaces_a_stale_temp_dir(tmp_path):
    source = make_checkpoint(tmp_path, "src")
    stale = tmp_path / "out" / ".copy.fleet-copy"
    stale.mkdir(parents=True)
    (stale / "junk").write_bytes(b"j")
    copy_checkpoint(str(source), str(tmp_path / "out" / "copy"))
    assert sorted(os.listdir(tmp_path / "out")) == ["copy"]
    assert sorted(os.listdir(tmp_path / "out" / "copy")) == ["pages-1.img"]


def test_copy_checkpoint_refuses_an_existing_destination(tmp_path):
    source = make_checkpoint(tmp_path, "src")
    destination = tmp_path / "copy"
    destination.mkdir()
    (destination / "keep").write_bytes(b"k")
    with pytest.raises(FileExistsError, match="already exists"):
        copy_checkpoint(str(source), str(destination))
    assert sorted(os.listdir(destination)) == ["keep"]


@pytest.mark.parametrize("where", [".", "sub"])
def test_copy_checkpoint_refuses_symlinks_and_leaves_nothing_behind(tmp_path, where):
    source = make_checkpoint(tmp_path, "src", files={"a.img": b"a", "sub/b.img": b"b"})
    (source / where / "z-link").symlink_to("/etc/passwd")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        copy_checkpoint(str(source), str(out / "copy"))
    assert os.listdir(out) == []


def test_secure_tree_does_not_follow_a_link_to_a_directory(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.chmod(outside, 0o755)
    cp = tmp_path / "cp"
    cp.mkdir()
    (cp / "dlink").symlink_to(outside)
    secure_tree(str(cp))
    assert mode(outside) == 0o755


def test_copy_checkpoint_refuses_a_link_to_a_directory(tmp_path):
    source = make_checkpoint(tmp_path, "src")
    (source / "dlink").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="not a regular file"):
        copy_checkpoint(str(source), str(tmp_path / "copy"))
    assert not (tmp_path / "copy").exists()
