# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which older checkpoints go after a successful checkpoint or restore (keep_last, max_age), and removing them."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import linked_pages as pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext

_AGE = re.compile(r"(\d+)\s*([smhdw]?)")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class Retention:
    """keep_last (the new or restored checkpoint counts) and max_age in seconds; None: no limit."""

    keep_last: int | None = None
    max_age: int | None = None


def parse_age(value: Any) -> int:
    """'7d', '12h', '30m', '90s', '2w' or a number of seconds -> seconds. Raise ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError(f"max_age {value!r} is not a duration")
    if isinstance(value, int):
        seconds = value
    else:
        match = _AGE.fullmatch(str(value).strip())
        if not match:
            raise ValueError(f"max_age {value!r} is not a duration: use a number of seconds or e.g. 90m, 12h, 7d, 2w")
        seconds = int(match.group(1)) * _AGE_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"max_age {value!r} must be longer than zero")
    return seconds


def select_pruned(checkpoints: list[dict[str, Any]], keep: str, keep_last: int | None = None,
                  max_age: float | None = None, now: float | None = None) -> list[str]:
    """Names of checkpoints to prune after a new one, `keep`, was made.

    Only checkpoints made by fleet.checkpoint (metadata with its format) are candidates; `keep` never is. keep_last counts the
    new checkpoint; max_age is in seconds. Either limit alone prunes; with both, a checkpoint goes when either says so.
    """
    candidates = [item for item in checkpoints if store.is_managed(item["metadata"]) and item["name"] != keep]
    candidates.sort(key=lambda item: (item["created"], item["name"]), reverse=True)  # newest first
    pruned = set()
    if keep_last is not None:
        for item in candidates[max(keep_last - 1, 0):]:
            pruned.add(item["name"])
    if max_age is not None and now is not None:
        for item in candidates:
            if now - item["created"] > max_age:
                pruned.add(item["name"])
    return [item["name"] for item in sorted(candidates, key=lambda item: (item["created"], item["name"]))
            if item["name"] in pruned]


def prune(ctx: HostContext, container_id: str, keep: str, retention: Retention, now: float) -> list[str]:
    """Remove the container's checkpoints that `retention` lets go (through Docker's API); their names."""
    if retention.keep_last is None and retention.max_age is None:
        return []
    existing = store.list_checkpoints(ctx.root_dir, container_id)
    pruned = select_pruned(existing, keep, keep_last=retention.keep_last, max_age=retention.max_age, now=now)
    for name in pruned:
        ctx.api.delete(f"/containers/{container_id}/checkpoints/{name}")
        pages.put_back(store.checkpoint_dir(ctx.root_dir, container_id, name))  # pages left aside by a killed run
    return pruned
