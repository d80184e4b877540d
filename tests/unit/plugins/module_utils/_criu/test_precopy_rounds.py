# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pre-copy rounds (_criu/precopy_rounds.py): when to pre-dump again, runc's command lines, and the chain of image
directories made one tree of regular files on a real directory tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import precopy_rounds

MIB = 1024 * 1024


@pytest.mark.parametrize("rounds, max_rounds, goal, again", [
    ([], 5, 70, True),  # the first round always runs
    ([], 0, 70, False),  # no rounds asked for
    ([64 * MIB], 5, 70, True),  # one round: nothing to compare yet
    ([64 * MIB, 21 * MIB], 5, 70, True),  # 67% in sync, below the goal of 70%, and shrinking
    ([64 * MIB, 19 * MIB], 5, 70, False),  # 70.3% in sync: the goal is reached
    ([64 * MIB, 21 * MIB], 5, 60, False),  # a lower goal stops earlier
    ([64 * MIB, 60 * MIB, 61 * MIB], 5, 70, False),  # no longer shrinking: the container writes as fast as it is sent
    ([64 * MIB, 40 * MIB, 30 * MIB], 3, 70, False),  # the round cap
    ([64 * MIB, 40 * MIB, 30 * MIB], 4, 70, True),
    ([0, 0], 5, 70, False),  # nothing to send at all
])
def test_another_round_follows_the_goal_the_cap_and_progress(rounds, max_rounds, goal, again):
    assert precopy_rounds.another_round(rounds, max_rounds, goal) is again


def test_runc_is_told_the_round_before_relative_to_the_images():
    first = precopy_rounds.dump_argv("/usr/sbin/runc", "c1d", "/w/round-1", "/w/work-1", None, pre_dump=True)
    assert first == ["/usr/sbin/runc", "--root", "/run/docker/runtime-runc/moby", "checkpoint", "--image-path",
                     "/w/round-1", "--work-path", "/w/work-1", "--pre-dump", "--tcp-established", "c1d"]
    final = precopy_rounds.dump_argv("runc", "c1d", "/w/final", "/w/work-final", "/w/round-3", pre_dump=False,
                                     shell_job=True)
    assert final[final.index("--parent-path") + 1] == "../round-3"  # runc wants it relative to the image path
    assert "--pre-dump" not in final and final[-2:] == ["--shell-job", "c1d"]


def _round(path, pages, parent=None):
    os.makedirs(path)
    with open(os.path.join(path, "pages-1.img"), "wb") as handle:
        handle.write(pages)
    with open(os.path.join(path, "pagemap-1.img"), "wb") as handle:
        handle.write(b"map")
    if parent:
        os.symlink(os.path.join("..", os.path.basename(parent)), os.path.join(path, "parent"))


def test_nest_makes_the_chain_one_tree_without_links(tmp_path):
    one, two, final = str(tmp_path / "round-1"), str(tmp_path / "round-2"), str(tmp_path / "final")
    _round(one, b"a" * 100)
    _round(two, b"b" * 10, parent=one)
    _round(final, b"c", parent=two)
    assert precopy_rounds.images_bytes(two) == 13  # the link is not counted
    precopy_rounds.nest(final, [one, two])
    assert not os.path.exists(one) and not os.path.exists(two)
    links = [os.path.join(root, name) for root, dirs, files in os.walk(final) for name in dirs + files
             if os.path.islink(os.path.join(root, name))]
    assert links == []
    assert (tmp_path / "final" / "parent" / "pages-1.img").read_bytes() == b"b" * 10
    assert (tmp_path / "final" / "parent" / "parent" / "pages-1.img").read_bytes() == b"a" * 100
    assert not (tmp_path / "final" / "parent" / "parent" / "parent").exists()


def test_nest_takes_rounds_whose_links_were_already_removed(tmp_path):
    one, final = str(tmp_path / "r1"), str(tmp_path / "f")
    _round(one, b"a")
    _round(final, b"c")  # (the receiving end gets the rounds as plain directories)
    precopy_rounds.nest(final, [one])
    assert (tmp_path / "f" / "parent" / "pages-1.img").read_bytes() == b"a"


def test_nest_refuses_a_parent_that_is_not_a_link(tmp_path):
    one, final = str(tmp_path / "r1"), str(tmp_path / "f")
    _round(one, b"a")
    _round(final, b"c")
    os.makedirs(os.path.join(final, "parent"))
    with pytest.raises(OSError, match="is not CRIU's link"):
        precopy_rounds.nest(final, [one])
    assert os.path.isdir(one)  # nothing moved


def test_chain_files_lists_each_round_as_deep_as_it_is_nested(tmp_path):
    one, two, final = str(tmp_path / "round-1"), str(tmp_path / "round-2"), str(tmp_path / "final")
    _round(one, b"a" * 100)
    _round(two, b"b" * 10)
    _round(final, b"c")
    listed = precopy_rounds.chain_files({"pages-1.img": 1, "pagemap-1.img": 2}, [{"pages-1.img": 100}, {"pages-1.img": 10}])
    assert listed == {"pages-1.img": 1, "pagemap-1.img": 2, "parent/pages-1.img": 10, "parent/parent/pages-1.img": 100}
    precopy_rounds.nest(final, [one, two])
    on_disk = {os.path.relpath(os.path.join(root, name), final) for root, _dirs, files in os.walk(final)
               for name in files if name == "pages-1.img"}
    assert on_disk == {name for name in listed if name.endswith("pages-1.img")}


def test_without_a_timeout_command_the_dump_runs_unbounded():
    argv = ["runc", "checkpoint", "c1"]
    assert precopy_rounds.bounded(argv, None, 600) == argv
    assert precopy_rounds.bounded(argv, "/usr/bin/timeout", 0) == argv
    assert precopy_rounds.bounded(argv, "/usr/bin/timeout", 600) == ["/usr/bin/timeout", "-k", "10", "600", *argv]
    assert precopy_rounds.resume_argv("/usr/bin/runc", "c1") == [
        "/usr/bin/runc", "--root", "/run/docker/runtime-runc/moby", "resume", "c1"]


def _gone(pid):
    """No such process, or only its zombie (its parent, the shell, was killed with it)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("script, code", [
    ("sleep 30 & echo $!; wait", 124),  # runc waits on CRIU; both get timeout's TERM
    ("trap '' TERM; sleep 30 & echo $!; wait; sleep 30", -9),  # a runc that ignores TERM is killed after kill_after
])
def test_a_dump_that_hangs_is_stopped_with_the_processes_it_started(script, code):
    """The real timeout(1): what ran out of time ends with its children (CRIU under runc), in the exit code the
    pre-copy sender reads as timed out."""
    timeout = shutil.which("timeout")
    assert timeout, "coreutils' timeout is missing"
    proc = subprocess.run(precopy_rounds.bounded(["sh", "-c", script], timeout, 1, kill_after=1),
                          capture_output=True, text=True, timeout=20, check=False)
    assert proc.returncode == code and code in precopy_rounds.TIMED_OUT, proc
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 5
    while not _gone(child):
        assert time.monotonic() < deadline, f"the dump's child {child} outlived the timeout"
        time.sleep(0.05)
