# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Self-tests of tools/sync_collection.py and tools/docsite_rst.py's writing (run by `make tools-tests`): refreshing
the collection copy takes nothing from under a gate that reads it."""

from __future__ import annotations

import subprocess

import sync_collection  # pytest puts this file's directory (tools/) on sys.path


def checkout(tmp_path):
    src = tmp_path / "src"
    (src / "plugins").mkdir(parents=True)
    (src / "plugins" / "a.py").write_text("A = 1\n")
    (src / ".gitignore").write_text("/ignored/\n")
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    return src


def test_a_refresh_removes_what_the_checkout_lost_and_keeps_the_rendered_guides(tmp_path):
    src, dest = checkout(tmp_path), tmp_path / "dest"
    assert sync_collection.sync(str(src), str(dest)) == (2, 0)
    (dest / "docs" / "docsite" / "rst").mkdir(parents=True)
    (dest / "docs" / "docsite" / "rst" / "guide.rst").write_text("rendered\n")
    (dest / "plugins" / "gone.py").write_text("")
    (dest / "ignored").mkdir()
    (dest / "ignored" / "out.txt").write_text("")
    assert sync_collection.sync(str(src), str(dest)) == (0, 1)
    assert not (dest / "plugins" / "gone.py").exists()
    assert (dest / "docs" / "docsite" / "rst" / "guide.rst").read_text() == "rendered\n"
    assert (dest / "ignored" / "out.txt").exists()
    before = (dest / "plugins" / "a.py").stat().st_mtime_ns
    assert sync_collection.sync(str(src), str(dest)) == (0, 0)
    assert (dest / "plugins" / "a.py").stat().st_mtime_ns == before
