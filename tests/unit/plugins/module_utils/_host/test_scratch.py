# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The local scratch for plaintext: root-only, removed when done, swept after a killed run."""

from __future__ import annotations

import os
import stat

from ansible_collections.fleet.checkpoint.plugins.module_utils._host import scratch


def test_new_directories_are_root_only_and_go_with_their_base(tmp_path):
    base = tmp_path / "tmp"
    first, second = scratch.new_dir(str(base)), scratch.new_dir(str(base))
    assert stat.S_IMODE(os.stat(base).st_mode) == 0o700 and stat.S_IMODE(os.stat(first).st_mode) == 0o700
    scratch.remove(first, str(base))
    assert base.exists()  # the other one is still in use
    scratch.remove(second, str(base))
    assert not base.exists()


def test_a_killed_runs_leftovers_are_swept(tmp_path):
    base = tmp_path / "tmp"
    left = scratch.new_dir(str(base))
    with open(os.path.join(left, "archive.decrypted"), "wb") as handle:
        handle.write(b"plaintext memory")
    (base / "stray").write_text("x")
    assert len(scratch.sweep(str(base))) == 2 and not base.exists()
    assert scratch.sweep(str(base)) == []
