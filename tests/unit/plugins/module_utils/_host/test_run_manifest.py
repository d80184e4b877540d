# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._host import run_manifest as hm

POLICY = {"Name": "unless-stopped", "MaximumRetryCount": 0}


def checkpointed(*names, failed=()):
    results = []
    for name in names:
        if name in failed:
            results.append({"container": name, "failed": True, "msg": f"{name} cannot be dumped", "action": "failed"})
        else:
            results.append({"container": name, "id": name * 8, "action": "created", "changed": True, "method": "api",
                            "size": 1000, "duration": 0.5, "restart_policy": POLICY, "stopped": True})
    return hm.new("host-1", "pre-reboot", "2026-11-23T16:00:00Z", results, False)


def test_new_records_every_container_and_is_open():
    manifest = checkpointed("web", "db", failed=("db",))
    assert manifest["format"] == hm.FORMAT and manifest["state"] == "checkpointed"
    web, db = manifest["containers"]
    assert web["status"] == "checkpointed" and web["restart_policy"] == POLICY and web["dump_seconds"] == 0.5
    assert db["status"] == "checkpoint_failed" and "cannot be dumped" in db["msg"]
    assert hm.pending(manifest) == ["web"]


def test_a_failed_dump_waits_for_the_restore_to_settle_it():
    manifest = checkpointed("db", failed=("db",))
    assert manifest["state"] == "checkpointed" and hm.failed_dumps(manifest) == ["db"] and hm.pending(manifest) == []
    kept = hm.apply_restore(manifest, [], "fail", failed_dumps_now={"db": "kept_running"})
    assert kept["containers"][0]["status"] == "kept_running" and kept["state"] == "restored"
    started = hm.apply_restore(manifest, [], "fail", failed_dumps_now={"db": (True, "started afresh")})
    assert started["containers"][0]["status"] == "cold_started" and started["containers"][0]["resumed"] is False
    lost = hm.apply_restore(manifest, [], "fail", failed_dumps_now={"db": (False, "no such container")})
    assert lost["containers"][0]["status"] == "restore_failed"
    assert checkpointed()["state"] == "restored"


def test_a_snapshot_run_leaves_nothing_to_restore():
    results = [{"container": "web", "action": "created", "changed": True, "stopped": False}]
    manifest = hm.new("host-1", "snap", "2026-11-23T16:00:00Z", results, True)
    assert manifest["containers"][0]["status"] == "snapshot" and manifest["state"] == "restored"
    assert hm.pending(manifest) == []


def test_a_container_found_running_is_not_called_restored():
    after = hm.apply_restore(checkpointed("web"), [{"container": "web", "action": "unchanged",
                                                    "msg": "already running"}], "fail")
    entry = after["containers"][0]
    assert entry["status"] == "found_running" and entry["resumed"] is None and after["state"] == "restored"


def test_a_container_removed_since_is_skipped_not_retried_forever():
    after = hm.apply_restore(checkpointed("web"), [{"container": "web", "failed": True,
                                                    "msg": "container 'web' not found on this host: check"}], "fail")
    assert after["containers"][0]["status"] == "skipped" and after["state"] == "restored"


def test_successful_restore_closes_the_manifest():
    manifest = checkpointed("web", "cache")
    results = [{"container": "web", "resumed": True, "duration": 0.4}, {"container": "cache", "resumed": True}]
    after = hm.apply_restore(manifest, results, "fail")
    assert [item["status"] for item in after["containers"]] == ["restored", "restored"]
    assert after["state"] == "restored" and hm.pending(after) == []
    assert after["containers"][0]["restore_seconds"] == 0.4
    assert manifest["state"] == "checkpointed", "the input manifest is not modified"


@pytest.mark.parametrize("fallback, cold, status, state", [
    ("cold_start", {"web": (True, "started afresh")}, "cold_started", "restored"),
    ("cold_start", {"web": (False, "no such image")}, "restore_failed", "checkpointed"),
    ("leave_stopped", {}, "left_stopped", "checkpointed"),
    ("fail", {}, "restore_failed", "checkpointed"),
])
def test_failed_restore_follows_the_fallback(fallback, cold, status, state):
    manifest = checkpointed("web")
    after = hm.apply_restore(manifest, [{"container": "web", "failed": True, "msg": "CRIU says no"}], fallback, cold)
    entry = after["containers"][0]
    assert entry["status"] == status and after["state"] == state
    assert "CRIU says no" in entry["restore_msg"]
    if status == "cold_started":
        assert entry["resumed"] is False


def test_a_retry_after_a_partial_failure_continues_from_the_manifest():
    manifest = checkpointed("web", "db")
    first = hm.apply_restore(manifest, [{"container": "web", "resumed": True},
                                        {"container": "db", "failed": True, "msg": "busy"}], "leave_stopped")
    assert hm.pending(first) == ["db"]
    second = hm.apply_restore(first, [{"container": "db", "resumed": True}], "leave_stopped")
    assert [item["status"] for item in second["containers"]] == ["restored", "restored"]
    assert "restore_msg" not in second["containers"][1]
    assert second["state"] == "restored"


def test_settled_containers_are_not_touched_by_a_later_result():
    manifest = hm.apply_restore(checkpointed("web"), [{"container": "web", "resumed": True}], "fail")
    again = hm.apply_restore(manifest, [{"container": "web", "failed": True, "msg": "late"}], "fail")
    assert again["containers"][0]["status"] == "restored"


def test_unknown_fallback_is_refused():
    with pytest.raises(ValueError, match="fallback"):
        hm.apply_restore(checkpointed("web"), [], "pray")


def test_write_and_read_round_trip_root_only(tmp_path):
    path = tmp_path / "state" / "manifest.json"
    manifest = checkpointed("web")
    hm.write(str(path), manifest)
    assert hm.read(str(path)) == manifest
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert not (tmp_path / "state" / "manifest.json.tmp").exists()


def test_read_of_a_missing_manifest_is_none(tmp_path):
    assert hm.read(str(tmp_path / "none.json")) is None


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "not valid JSON"),
    (json.dumps({"format": "other"}), "not a fleet.checkpoint host manifest"),
    (json.dumps({"format": hm.FORMAT, "format_version": 9}), "format_version"),
    (json.dumps({"format": hm.FORMAT, "format_version": 1, "checkpoint": "x"}), "list of containers"),
    (json.dumps({"format": hm.FORMAT, "format_version": 1, "checkpoint": "x", "containers": [{"container": "a"}]}),
     "needs a container name and a status"),
])
def test_bad_manifests_are_refused_with_the_reason(tmp_path, content, fragment):
    path = tmp_path / "manifest.json"
    path.write_text(content)
    with pytest.raises(hm.HostManifestError, match=fragment):
        hm.read(str(path))


def test_summary_rows():
    manifest = hm.apply_restore(checkpointed("web"), [{"container": "web", "resumed": True, "duration": 0.3}], "fail")
    assert hm.summary(manifest) == [{
        "container": "web", "checkpoint": "pre-reboot", "status": "restored", "resumed": True, "size": 1000,
        "method": "api", "dump_seconds": 0.5, "restore_seconds": 0.3, "msg": "",
    }]


def _restored_then(statuses, state="checkpointed"):
    manifest = checkpointed(*statuses)
    for item in manifest["containers"]:
        item["status"] = statuses[item["container"]]
        item["started_at"] = "T1" if item["status"] == "restored" else None
    manifest["state"] = state
    return manifest


def test_an_unfinished_run_restores_again_only_what_a_daemon_restart_killed():
    manifest = _restored_then({"killed": "restored", "afresh": "restored", "fine": "restored", "exited": "restored",
                               "other": "restored", "cold": "cold_started", "waiting": "restore_failed"})
    states = {"killed": (False, "T1", 137), "afresh": (True, "T2", 0), "fine": (True, "T1", 0),
              "exited": (False, "T1", 0), "other": (False, "T5", 137), "cold": (False, "T3", 137)}
    updated, reopened = hm.reopen_lost(manifest, states)
    assert reopened == ["killed"]
    status = {item["container"]: item["status"] for item in updated["containers"]}
    assert status == {"killed": "checkpointed", "afresh": "cold_started", "fine": "restored", "exited": "restored",
                      "other": "restored", "cold": "cold_started", "waiting": "restore_failed"}
    assert sorted(hm.pending(updated)) == ["killed", "waiting"]
    assert "restored again" in updated["containers"][0]["restore_msg"]
    assert manifest["containers"][0]["status"] == "restored"  # the input is not modified


def test_a_finished_manifest_is_left_alone_even_if_a_container_was_stopped_since():
    manifest = _restored_then({"stopped": "restored"}, state="restored")
    updated, reopened = hm.reopen_lost(manifest, {"stopped": (False, "T1", 137)})
    assert reopened == [] and updated is manifest


def test_a_successful_restore_records_the_start_time_it_checks_later():
    manifest = checkpointed("web")
    updated = hm.apply_restore(manifest, [{"container": "web", "action": "restored", "changed": True, "resumed": True,
                                           "started_at": "T9"}], "fail")
    assert updated["containers"][0]["started_at"] == "T9" and updated["state"] == "restored"


def test_a_daemon_outage_is_retried_not_sent_to_the_fallback():
    manifest = checkpointed("web")
    # Even if a cold start had been made for it, a daemon outage is not the checkpoint's fault: no fallback.
    updated = hm.apply_restore(manifest, [{"container": "web", "failed": True, "daemon_unavailable": True,
                                           "msg": "the Docker daemon did not answer"}], "cold_start",
                               {"web": (True, "")})
    assert updated["containers"][0]["status"] == "restore_failed" and hm.pending(updated) == ["web"]


def test_containers_lost_before_the_run_ends_are_restored_again():
    manifest = hm.apply_restore(checkpointed("a", "b", "c"), [
        {"container": name, "action": "restored", "changed": True, "resumed": True, "started_at": "T1"}
        for name in ("a", "b", "c")], "fail")
    updated, lost = hm.confirm_restored(manifest, {"a": (True, "T1"), "b": (False, "T1"), "c": None})
    assert lost == ["b", "c"]
    assert [item["status"] for item in updated["containers"]] == ["restored", "checkpointed", "restore_failed"]
    assert updated["state"] == "checkpointed" and hm.pending(updated) == ["b", "c"]
