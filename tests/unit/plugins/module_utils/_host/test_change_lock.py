# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._host.change_lock import HostLock, LockTimeout


def test_lock_is_root_only_and_released(tmp_path):
    path = tmp_path / "state" / "lock"
    with HostLock(str(path), timeout=1, what="present pre-reboot") as lock:
        assert lock.waited < 1
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
        assert '"present pre-reboot"' in path.read_text()
    with HostLock(str(path), timeout=1):
        pass
    assert path.read_text() == ""


def test_a_second_holder_waits_then_refuses_naming_the_first(tmp_path):
    path = str(tmp_path / "lock")
    with HostLock(path, timeout=1, what="restored pre-reboot"):
        with pytest.raises(LockTimeout, match=r"pid \d+, restored pre-reboot, since .*within 0.3s"):
            with HostLock(path, timeout=0.3, interval=0.05):
                pass
