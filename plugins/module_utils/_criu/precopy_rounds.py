# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pre-copy (memory sent in rounds while the container runs) through runc, as run on the lab's VM hosts (Debian's
6.12 kernel, Docker 26.1, runc 1.1.15, CRIU 4.1).

- Each round is `runc checkpoint --pre-dump` on Docker's own runc state: CRIU freezes the container only while it
  collects its pages, writes them, and lets it run on. From the second round on, `--parent-path` names the round
  before: the kernel's soft-dirty bits (CONFIG_MEM_SOFT_DIRTY; `criu check --feature mem_dirty_track`) tell CRIU which
  pages changed since, and only those are written. Without soft-dirty CRIU cannot pre-dump at all.
- The final dump (`runc checkpoint --parent-path`, the container then ends) writes only what changed since the last
  round; its pagemap refers the rest to its parent.
- CRIU links each image directory to its parent with a symbolic link `parent`. A restore follows `parent` from the
  final images: `nest` replaces the links by the directories themselves (final/parent/parent/...), so that the chain
  is one tree of regular files, which Docker's restore (`docker start --checkpoint`) carries whole to runc.
"""

from __future__ import annotations

import os
from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.lazy_pages import RUNC_ROOT

PARENT = "parent"  # CRIU's link from an image directory to its parent's


def dump_argv(runc: str, container_id: str, image_dir: str, work_dir: str, parent: str | None, pre_dump: bool,
              tcp_established: bool = True, shell_job: bool = False, root: str = RUNC_ROOT) -> list[str]:
    """runc's pre-dump round (pre_dump) or final dump of a Docker container; `parent` the previous round's image
    directory (a sibling of image_dir), or None for the first round."""
    argv = [runc, "--root", root, "checkpoint", "--image-path", image_dir, "--work-path", work_dir]
    argv += ["--pre-dump"] if pre_dump else []
    argv += ["--parent-path", os.path.join("..", os.path.basename(parent))] if parent else []
    argv += ["--tcp-established"] if tcp_established else []
    argv += ["--shell-job"] if shell_job else []
    return argv + [container_id]


KILL_AFTER = 10  # seconds timeout(1) waits after its TERM before it kills runc and CRIU
# timeout(1)'s exit when the command ran out of time (124), or had to be killed: timeout then kills its own process
# group, itself with it (-9 as Python's subprocess reports it, 137 through a shell).
TIMED_OUT = (124, 137, -9)


def bounded(argv: list[str], timeout_path: str | None, seconds: int, kill_after: int = KILL_AFTER) -> list[str]:
    """argv run under timeout(1), so that a round or dump that hangs (a stuck process, a full disk that blocks) ends
    after `seconds`: runc and CRIU are in timeout's process group and all get its signal. argv itself without a
    timeout command."""
    if not timeout_path or seconds <= 0:
        return argv
    return [timeout_path, "-k", str(kill_after), str(int(seconds)), *argv]


def resume_argv(runc: str, container_id: str, root: str = RUNC_ROOT) -> list[str]:
    """runc's resume of a container left frozen: CRIU freezes the container's cgroup while it collects its pages and
    thaws it when it is done; a CRIU that was killed midway leaves it frozen (runc then sees it paused)."""
    return [runc, "--root", root, "resume", container_id]


def images_bytes(image_dir: str) -> int:
    """The bytes of the regular files of an image directory (the pages a round wrote, and their maps)."""
    total = 0
    for name in os.listdir(image_dir):
        full = os.path.join(image_dir, name)
        if not os.path.islink(full) and os.path.isfile(full):
            total += os.path.getsize(full)
    return total


def another_round(rounds: list[int], max_rounds: int, goal: int) -> bool:
    """Whether to pre-dump again, from the bytes each round so far wrote (the first: the whole memory): not past
    max_rounds; not once `goal` percent of the memory was in sync (the last round wrote at most 100 - goal percent
    of the first); not when a round wrote as much as the one before (the container dirties memory as fast as it is
    sent: more rounds would not shorten the freeze)."""
    if len(rounds) >= max_rounds:
        return False
    if len(rounds) < 2:
        return True
    first, previous, last = rounds[0], rounds[-2], rounds[-1]
    if first <= 0 or last * 100 <= first * (100 - goal):
        return False
    return last < previous


def nest(final_dir: str, rounds: list[str]) -> None:
    """Make the chain final_dir -> rounds[-1] -> ... -> rounds[0] one tree: each `parent` link (if any) is removed
    and the round directory itself moved in its place."""
    holder = final_dir
    for round_dir in reversed(rounds):
        link = os.path.join(holder, PARENT)
        if os.path.islink(link):
            os.unlink(link)
        elif os.path.lexists(link):
            raise OSError(f"{link} is not CRIU's link to the round before: the chain cannot be nested")
        os.rename(round_dir, link)
        holder = link
    stale = os.path.join(holder, PARENT)
    if os.path.islink(stale):
        os.unlink(stale)


def unlink_parent(image_dir: str) -> None:
    """Remove CRIU's `parent` link from an image directory (the rounds travel as directories of their own)."""
    link = os.path.join(image_dir, PARENT)
    if os.path.islink(link):
        os.unlink(link)


def chain_files(final: dict[str, Any], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The file list ({relative path: size and sha256}) of a nested chain: the final dump's files, then each round's
    under as many `parent/` as it is deep (rounds[-1], the last round, one deep)."""
    files = dict(final)
    for depth, round_files in enumerate(reversed(rounds), start=1):
        prefix = f"{PARENT}/" * depth
        files.update({prefix + name: info for name, info in round_files.items()})
    return files
