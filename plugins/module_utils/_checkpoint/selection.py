# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which containers a docker_checkpoint call works on."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.store import checkpoint_dir

if TYPE_CHECKING:
    from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPI


def engine_filters(filters: Mapping[str, Any] | None) -> str | None:
    """The module's filters dict as the Engine's `filters` query value ({key: [values]}, JSON)."""
    encoded: dict[str, list[str]] = {}
    for key, value in (filters or {}).items():
        values = value if isinstance(value, list) else [value]
        encoded[str(key)] = [str(item) for item in values]
    return json.dumps(encoded) if encoded else None


def _excluded(summary: Mapping[str, Any], exclude: Iterable[str]) -> bool:
    names = {name.lstrip("/") for name in summary.get("Names") or []}
    cid = summary.get("Id", "")
    return any(ref.lstrip("/") in names or (len(ref) >= 12 and cid.startswith(ref)) for ref in exclude)


def select_containers(api: DockerAPI, params: Mapping[str, Any], root_dir: str) -> list[str]:
    """Container references (names as given, or names found by all_running), without duplicates, in order."""
    if params.get("container") is not None:
        return [params["container"].lstrip("/")]
    if params.get("containers"):
        seen, refs = set(), []
        for ref in params["containers"]:
            ref = ref.lstrip("/")
            if ref not in seen:
                seen.add(ref)
                refs.append(ref)
        return refs
    if not params.get("all_running"):
        return []
    query: dict[str, str] = {}
    encoded = engine_filters(params.get("filters"))
    if encoded:
        query["filters"] = encoded
    running_only = params["state"] == "present"
    if not running_only:
        query["all"] = "1"
    refs = []
    for summary in api.get("/containers/json", **query) or []:
        if _excluded(summary, params.get("exclude") or []):
            continue
        if not running_only and not os.path.isdir(checkpoint_dir(root_dir, summary["Id"], params["name"])):
            continue
        # Legacy links add names like /web/db; the container's own name has no inner '/'.
        names = [name.lstrip("/") for name in summary.get("Names") or [] if "/" not in name.lstrip("/")]
        refs.append(names[0] if names else summary["Id"])
    return refs


def unique_by_id(api: DockerAPI, refs: Iterable[str]) -> list[str]:
    """Drop references naming a container already listed (a name and its id): one worker per container.

    References that cannot be inspected are kept, so that the operation reports them (not found).
    """
    seen, unique = set(), []
    for ref in refs:
        try:
            cid = (api.get(f"/containers/{ref}/json") or {}).get("Id")
        except Exception:  # pylint: disable=broad-exception-caught
            cid = None
        if cid and cid in seen:
            continue
        if cid:
            seen.add(cid)
        unique.append(ref)
    return unique
