# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import (
    ArchiveError,
    file_inventory,
    safe_extract,
    verify_inventory,
)


def make_tar(path, entries, mode="w:gz"):
    """entries: (name, kind, data_or_target)."""
    with tarfile.open(path, mode) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                info.mode = 0o666
                tar.addfile(info, io.BytesIO(data))
                continue
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, data
            elif kind == "hard":
                info.type, info.linkname = tarfile.LNKTYPE, data
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            tar.addfile(info)
    return str(path)


def test_good_archive_is_unpacked_root_only(tmp_path):
    archive = make_tar(tmp_path / "cp.tar.gz", [("images", "dir", None), ("images/pages-1.img", "file", b"x" * 100),
                                                ("./manifest.json", "file", b"{}")])
    dest = tmp_path / "out"
    assert sorted(safe_extract(archive, str(dest))) == ["images/pages-1.img", "manifest.json"]
    assert stat.S_IMODE(dest.stat().st_mode) == 0o700
    assert stat.S_IMODE((dest / "images").stat().st_mode) == 0o700
    assert stat.S_IMODE((dest / "images" / "pages-1.img").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "entry, fragment",
    [
        (("/etc/passwd", "file", b"x"), "absolute path"),
        (("../../etc/cron.d/x", "file", b"x"), "climbs out"),
        (("images/../../x", "file", b"x"), "climbs out"),
        (("link", "sym", "/etc/shadow"), "is a link"),
        (("link", "sym", "pages-1.img"), "is a link"),
        (("hard", "hard", "/etc/shadow"), "is a link"),
        (("null", "chr", None), "device or FIFO"),
        (("pipe", "fifo", None), "device or FIFO"),
    ],
)
def test_unsafe_entries_are_refused_before_anything_is_written(tmp_path, entry, fragment):
    archive = make_tar(tmp_path / "bad.tar", [("ok.img", "file", b"fine"), entry], mode="w")
    dest = tmp_path / "out"
    with pytest.raises(ArchiveError, match=fragment):
        safe_extract(archive, str(dest))
    assert not dest.exists()


def test_not_an_archive_and_existing_destination_are_refused(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 40)
    with pytest.raises(ArchiveError, match="not a readable tar"):
        safe_extract(str(junk), str(tmp_path / "out"))
    archive = make_tar(tmp_path / "cp.tar", [("a.img", "file", b"a")], mode="w")
    (tmp_path / "exists").mkdir()
    with pytest.raises(ArchiveError, match="already exists"):
        safe_extract(archive, str(tmp_path / "exists"))


def test_inventory_catches_corruption_truncation_and_extra_files(tmp_path):
    cp = tmp_path / "cp"
    (cp / "sub").mkdir(parents=True)
    (cp / "pages-1.img").write_bytes(b"p" * 4096)
    (cp / "sub" / "core.img").write_bytes(b"c" * 10)
    expected = file_inventory(str(cp))
    assert set(expected) == {"pages-1.img", "sub/core.img"}
    assert verify_inventory(str(cp), expected) == []

    (cp / "pages-1.img").write_bytes(b"p" * 4000)
    (cp / "sub" / "core.img").write_bytes(b"X" * 10)
    (cp / "extra.img").write_bytes(b"e")
    problems = verify_inventory(str(cp), expected)
    assert any("pages-1.img has 4000 bytes" in p for p in problems)
    assert any("core.img does not match its sha256" in p for p in problems)
    assert any("extra.img is not in the manifest" in p for p in problems)
    os.unlink(cp / "pages-1.img")
    assert any("pages-1.img is missing" in p for p in verify_inventory(str(cp), expected))


def test_inventory_refuses_links(tmp_path):
    cp = tmp_path / "cp"
    cp.mkdir()
    (cp / "link").symlink_to("/etc/passwd")
    with pytest.raises(ArchiveError, match="not a regular file"):
        file_inventory(str(cp))
