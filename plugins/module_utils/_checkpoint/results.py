# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Turning per-container results into the module's answer: changed, failed, message, diff."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Dict

# One container's result (JSON-ish). typing.Dict, not dict[...]: an alias is evaluated at import, on the managed host's
# Python, and dict cannot be subscripted before Python 3.9.
Result = Dict[str, Any]

DIFF_FIELDS = {
    "present": ("checkpoint", "running"),
    "absent": ("checkpoint",),
    "restored": ("running",),
    "exported": ("archive",),
    "imported": ("checkpoint",),
}


def failure(container: str, message: str, partial: Mapping[str, Any] | None = None) -> Result:
    """A failed container's result; `partial` is what the operation had recorded before failing (its `changed`
    says whether something was already done to the container)."""
    result: Result = {"container": container, "changed": False, "warnings": []}
    if partial:
        result.update(partial)
        result["container"] = partial.get("container") or container
        result["changed"] = bool(partial.get("modified"))
    result.pop("modified", None)
    result.update(failed=True, msg=message, action="failed")
    return result


def _before_after(state: str, result: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    before: dict[str, Any]
    after: dict[str, Any]
    action = result.get("action")
    if state == "present" and action == "sent":  # an existing checkpoint sent to another host (send_to)
        before, after = {"checkpoint": "present", "sent_to": None}, {"checkpoint": "present",
                                                                     "sent_to": (result.get("sent") or {}).get("to")}
    elif state == "present":
        before = {"checkpoint": "present (older)" if action == "recreated" else "absent", "running": True}
        after = {"checkpoint": "present", "running": bool(result.get("leave_running"))}
        if "sent" in result:
            after["sent_to"] = result["sent"].get("to")
    elif state == "absent":
        before, after = {"checkpoint": "present"}, {"checkpoint": "absent"}
    elif state == "restored":
        before, after = {"running": bool(result.get("was_running"))}, {"running": True}
    elif state == "exported":
        before, after = {"archive": "absent or outdated"}, {"archive": result.get("archive")}
    else:
        before, after = {"checkpoint": "absent or different"}, {"checkpoint": "present"}
    return before, after


def diff(state: str, results: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """A before/after diff over every changed container (None when nothing changes)."""
    before: dict[str, dict[str, Any]]
    after: dict[str, dict[str, Any]]
    before, after = {}, {}
    for result in results:
        if not result.get("changed"):
            continue
        key = result["container"]
        before[key], after[key] = _before_after(state, result)
    if not before:
        return None
    return {"before": before, "after": after}


def summarize(results: Sequence[Mapping[str, Any]]) -> tuple[bool, bool, str]:
    """(changed, failed, message) for a list of per-container results, in the order given."""
    changed = any(result.get("changed") for result in results)
    failed = [result for result in results if result.get("failed")]
    if failed:
        details = "; ".join(f"{result['container']}: {result['msg']}" for result in failed)
        done = [result["container"] for result in results if not result.get("failed")]
        message = f"{len(failed)} of {len(results)} containers failed: {details}"
        if done:
            message += f" (done: {', '.join(done)})"
        return changed, True, message
    counts: dict[str, int] = {}
    for result in results:
        counts[result.get("action", "unchanged")] = counts.get(result.get("action", "unchanged"), 0) + 1
    parts = [f"{count} {action}" for action, count in sorted(counts.items())]
    return changed, False, f"{len(results)} containers: {', '.join(parts)}" if results else "no containers selected"


def warnings(results: Iterable[Mapping[str, Any]]) -> list[str]:
    return [warning for result in results for warning in result.get("warnings") or []]
