# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The pre-copy sender's dumps under a time limit: a round that runs out of time is stopped and the container it
left frozen is thawed; one that ends on its own is left alone. (The rounds themselves run on the QEMU lab hosts:
tests/integration/test_precopy.py.)"""

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import precopy_send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError

DUMP = ["/usr/bin/runc", "--root", "/run/docker/runtime-runc/moby", "checkpoint", "--pre-dump", "c1"]


def host(answers, tmp_path):
    ran = []

    def run(argv):
        ran.append(argv)
        return answers.pop(0)

    return HostContext(api=None, root_dir=str(tmp_path), run=run), ran  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def commands(monkeypatch):
    monkeypatch.setattr(precopy_send, "which", lambda name: f"/usr/bin/{name}")


@pytest.mark.parametrize("code", [124, 137])
def test_a_round_out_of_time_is_stopped_and_the_container_thawed(tmp_path, code):
    ctx, ran = host([(code, "", "criu: still dumping"), (0, "", "")], tmp_path)
    rc, _out, err = precopy_send.dump_in_time(ctx, "/usr/bin/runc", "c1", DUMP, 30)
    assert ran == [["/usr/bin/timeout", "-k", "10", "30", *DUMP],
                   ["/usr/bin/runc", "--root", "/run/docker/runtime-runc/moby", "resume", "c1"]]
    ended = "did not end within" if code == 124 else "was killed (after its time limit, or by the kernel) within"
    assert rc == code and err == (f"it {ended} 30 s and was stopped; CRIU could not tidy up behind it, so the "
                                  "container's TCP connections may not survive. criu: still dumping")


def test_a_container_that_was_not_left_frozen_is_not_an_error(tmp_path):
    ctx, _ran = host([(124, "", ""), (1, "", "container not paused")], tmp_path)
    assert precopy_send.dump_in_time(ctx, "/usr/bin/runc", "c1", DUMP, 30)[2].endswith(
        "TCP connections may not survive.")


def test_a_thaw_that_fails_is_said(tmp_path):
    ctx, _ran = host([(124, "", ""), (1, "", "permission denied")], tmp_path)
    assert "thawing the container failed too: permission denied" in precopy_send.dump_in_time(
        ctx, "/usr/bin/runc", "c1", DUMP, 30)[2]


@pytest.mark.parametrize("code", [0, 1])
def test_a_dump_that_ends_on_its_own_is_left_alone(tmp_path, code):
    ctx, ran = host([(code, "done", "")], tmp_path)
    assert precopy_send.dump_in_time(ctx, "/usr/bin/runc", "c1", DUMP, 30) == (code, "done", "")
    assert len(ran) == 1


def test_a_host_without_room_for_the_memory_refuses_before_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(precopy_send.container, "host_pids", lambda ctx, cid: [1])
    monkeypatch.setattr(precopy_send.procs, "rss_bytes", lambda pids: 1 << 60)  # an exabyte: no disk holds it
    ctx, ran = host([], tmp_path)
    with pytest.raises(OpError, match=r"^web cannot be moved.*nothing was touched: not enough free disk for the dump"):
        precopy_send.check_room(ctx, "c1", str(tmp_path / "checkpoints" / "move"),
                                "web cannot be moved with pre-copy rounds, so nothing was touched")
    assert ran == []


def test_a_later_round_needs_room_for_about_what_the_round_before_wrote(tmp_path, monkeypatch):
    monkeypatch.setattr(precopy_send.container, "host_pids", lambda ctx, cid: [1])
    monkeypatch.setattr(precopy_send.procs, "rss_bytes", lambda pids: 1 << 60)  # the whole memory would not fit
    ctx, _ran = host([], tmp_path)
    precopy_send.check_room(ctx, "c1", str(tmp_path / "move"), "round 2 was not begun", 8 << 20)  # 8 MiB: fits
    with pytest.raises(OpError, match="^round 2 was not begun: not enough free disk"):
        precopy_send.check_room(ctx, "c1", str(tmp_path / "move"), "round 2 was not begun", 1 << 60)
