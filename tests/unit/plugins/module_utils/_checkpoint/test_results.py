# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.results import (
    DIFF_FIELDS,
    diff,
    failure,
    summarize,
    warnings,
)


def ok(container, action, changed=True, **extra):
    return {"container": container, "changed": changed, "failed": False, "action": action, "warnings": [], **extra}


def test_failure_result():
    assert failure("web", "CRIU failed") == {"container": "web", "changed": False, "failed": True,
                                             "msg": "CRIU failed", "action": "failed", "warnings": []}


def test_summarize_all_ok_counts_actions_sorted():
    results = [ok("web", "created"), ok("db", "unchanged", changed=False), ok("cache", "created"),
               ok("queue", "recreated")]
    assert summarize(results) == (True, False, "4 containers: 2 created, 1 recreated, 1 unchanged")


def test_summarize_nothing_changed():
    results = [ok("web", "unchanged", changed=False), {"container": "db"}]
    assert summarize(results) == (False, False, "2 containers: 2 unchanged")


def test_summarize_mixed_failures_name_every_container():
    results = [ok("web", "created"), failure("db", "not running"), ok("cache", "unchanged", changed=False),
               failure("queue", "CRIU 3.17 is too old")]
    changed, failed, message = summarize(results)
    assert (changed, failed) == (True, True)
    assert message == ("2 of 4 containers failed: db: not running; queue: CRIU 3.17 is too old "
                       "(done: web, cache)")


def test_summarize_all_failed_has_no_done_list():
    changed, failed, message = summarize([failure("db", "boom")])
    assert (changed, failed) == (False, True)
    assert message == "1 of 1 containers failed: db: boom"


def test_summarize_empty():
    assert summarize([]) == (False, False, "no containers selected")


def test_diff_is_none_when_nothing_changed():
    assert diff("present", []) is None
    assert diff("present", [ok("web", "unchanged", changed=False), failure("db", "x")]) is None


def test_diff_present():
    results = [ok("web", "created"), ok("db", "recreated", leave_running=True), ok("idle", "unchanged", changed=False)]
    assert diff("present", results) == {
        "before": {"web": {"checkpoint": "absent", "running": True},
                   "db": {"checkpoint": "present (older)", "running": True}},
        "after": {"web": {"checkpoint": "present", "running": False},
                  "db": {"checkpoint": "present", "running": True}},
    }


@pytest.mark.parametrize("state, result, before, after", [
    ("absent", ok("web", "removed"), {"checkpoint": "present"}, {"checkpoint": "absent"}),
    ("restored", ok("web", "restored"), {"running": False}, {"running": True}),
    ("exported", ok("web", "exported", archive="/srv/web-cp.tar.zst"), {"archive": "absent or outdated"},
     {"archive": "/srv/web-cp.tar.zst"}),
    ("imported", ok("web", "imported"), {"checkpoint": "absent or different"}, {"checkpoint": "present"}),
])
def test_diff_per_state(state, result, before, after):
    assert diff(state, [result]) == {"before": {"web": before}, "after": {"web": after}}
    assert set(before) == set(DIFF_FIELDS[state]) == set(after)


def test_diff_fields_match_what_diff_reports_for_present():
    result = diff("present", [ok("web", "created")])
    assert set(result["before"]["web"]) == set(DIFF_FIELDS["present"]) == set(result["after"]["web"])


def test_warnings_are_collected_in_order():
    results = [ok("web", "created", warnings=["a", "b"]), failure("db", "x"), {"container": "c", "warnings": None},
               ok("q", "created", warnings=["c"])]
    assert warnings(results) == ["a", "b", "c"]
    assert warnings([]) == []


def test_diff_says_where_a_checkpoint_was_sent():
    to = "root@web-2:/var/lib/fleet-checkpoint/migrate/web-move.stream"
    made = {"container": "web", "changed": True, "action": "created", "sent": {"to": to}}
    found = {"container": "db", "changed": True, "action": "sent", "sent": {"to": to}}
    got = diff("present", [made, found])
    assert got["after"]["web"] == {"checkpoint": "present", "running": False, "sent_to": to}
    assert got["before"]["db"] == {"checkpoint": "present", "sent_to": None}
    assert got["after"]["db"] == {"checkpoint": "present", "sent_to": to}
