# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Root-only files and directories: what is made is 0700/0600; what exists already and belongs to the user keeps
its mode, unless others could write into it."""

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._host import private_files as pf


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_existing_shared_directory_keeps_its_mode_and_sticky_bit(tmp_path):
    """archive_dir: /tmp (or a manifest in /tmp) used to turn /tmp into 0700 without its sticky bit."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    assert pf.ensure_private_dir(str(shared)) is False
    assert mode(shared) == 0o1777
    group = tmp_path / "group"
    group.mkdir()
    os.chmod(group, 0o750)
    assert pf.ensure_private_dir(str(group)) is False and mode(group) == 0o750


def test_a_directory_others_may_write_into_without_the_sticky_bit_is_refused(tmp_path):
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    with pytest.raises(pf.LooseDirectory, match=r"writable by other users \(mode 0777\) without the sticky bit"):
        pf.ensure_private_dir(str(loose))
    assert mode(loose) == 0o777
    (tmp_path / "file").write_text("x")
    assert pf.loose(str(tmp_path / "file")) == f"{tmp_path / 'file'} is not a directory"
    assert pf.loose(str(tmp_path / "missing")) is None


def test_missing_directories_are_made_root_only(tmp_path):
    old = os.umask(0)
    try:
        assert pf.ensure_private_dir(str(tmp_path / "a" / "b")) is True
    finally:
        os.umask(old)
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "b") == 0o700


def test_own_directories_are_made_0700_even_when_they_exist(tmp_path):
    own = tmp_path / "checkpoints"
    own.mkdir(mode=0o755)
    pf.make_private_dir(str(own))
    assert mode(own) == 0o700


def test_a_link_planted_beside_the_json_does_not_redirect_the_write(tmp_path):
    """The temporary file used to be `<path>.tmp`, opened without O_EXCL: a symbolic link of that name, planted by
    whoever may write into the directory, made root write the manifest through it."""
    victim = tmp_path / "victim"
    victim.write_text("untouched\n")
    path = tmp_path / "manifest.json"
    os.symlink(victim, f"{path}.tmp")
    pf.write_private_json(str(path), {"state": "checkpointed"})
    assert victim.read_text() == "untouched\n"
    assert json.loads(path.read_text()) == {"state": "checkpointed"} and mode(path) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["manifest.json", "manifest.json.tmp", "victim"]  # no temporary left
