# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Turning per-container results into the module's answer: changed, failed, message, diff."""

from __future__ import annotations

DIFF_FIELDS = {
    "present": ("checkpoint", "running"),
    "absent": ("checkpoint",),
    "restored": ("running",),
    "exported": ("archive",),
    "imported": ("checkpoint",),
}


def failure(container, message, partial=None):
    """A failed container's result; `partial` is what the operation had recorded before failing (its `changed`
    says whether something was already done to the container)."""
    result = {"container": container, "changed": False, "warnings": []}
    if partial:
        result.update(partial)
        result["container"] = partial.get("container") or container
        result["changed"] = bool(partial.get("modified"))
    result.pop("modified", None)
    result.update(failed=True, msg=message, action="failed")
    return result


def _before_after(state, result):
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


def diff(state, results):
    """A before/after diff over every changed container (None when nothing changes)."""
    before, after = {}, {}
    for result in results:
        if not result.get("changed"):
            continue
        key = result["container"]
        before[key], after[key] = _before_after(state, result)
    if not before:
        return None
    return {"before": before, "after": after}


def summarize(results):
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
    counts = {}
    for result in results:
        counts[result.get("action", "unchanged")] = counts.get(result.get("action", "unchanged"), 0) + 1
    parts = [f"{count} {action}" for action, count in sorted(counts.items())]
    return changed, False, f"{len(results)} containers: {', '.join(parts)}" if results else "no containers selected"


def warnings(results):
    return [warning for result in results for warning in result.get("warnings") or []]
