# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""consistent=true: the group's coordination - every member frozen before any is dumped, thawed only after the
last dump, undone when one fails; restores released together or not at all. The Engine is faked; each member's own
dump and restore (dump.py, restore.py, tested on their own) are stood in for, so that their order can be seen."""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import remove
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import restore_barrier
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import fleet_barrier
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.fleet_barrier import FleetBarrier

NAMES = ["web", "worker", "cache"]


def cid(name):
    return (name * 64)[:64]


NAME_OF = {cid(name): name for name in NAMES}


class FakeAPI:
    """The Engine's pause, unpause and inspect, logged in order; `paused` as Docker would say."""

    kind = "unix"

    def __init__(self, log, running=True):
        self.log = log
        self.paused = set()
        self.running = {cid(name): running for name in NAMES}

    def post(self, path, **unused):
        cid_, action = path.split("/")[2:4]
        self.log.append((action, cid_))
        if action == "pause":
            self.paused.add(cid_)
        elif action == "unpause":
            self.paused.discard(cid_)

    def get(self, path, **unused):
        ref = path.split("/")[2]
        full = ref if len(ref) == 64 else cid(ref)
        return {"Id": full, "Name": f"/{NAME_OF[full]}",
                "State": {"Running": self.running[full], "Paused": full in self.paused, "Pid": 0}}


def ctx_of(api, tmp_path, check_mode=False):
    return HostContext(api=api, root_dir=str(tmp_path), check_mode=check_mode, criu_log=None)


@pytest.fixture
def members(monkeypatch):
    """dump.plan and dump.execute stood in for: a plan per member; a dump logged, calling `dumped`, failing for the
    members named in `fail`."""
    state = {"fail": set(), "exists": set(), "log": None}

    def plan(ctx, ref, opts):
        result = {"container": ref, "id": cid(ref), "changed": True, "warnings": []}
        if ref in state["exists"] and not opts.force:
            return dict(result, changed=False, action="unchanged"), None
        return result, dump.DumpPlan({"Id": cid(ref), "State": {"Running": True}}, result, "", False, "containerd",
                                     {"Name": "no"}, [])

    def execute(ctx, planned, opts, dumped=None):
        ref = planned.result["container"]
        assert planned.inspect["Id"] in ctx.api.paused, f"{ref} dumped while not frozen"
        state["log"].append(("dump", cid(ref)))
        time.sleep(0.01)
        if ref in state["fail"]:
            raise OpError(f"checkpoint of {ref} failed: CRIU said no")
        state["log"].append(("dumped", cid(ref)))
        assert opts.group and opts.group["members"] == NAMES
        if dumped:
            dumped()
        return dict(planned.result, action="created")

    monkeypatch.setattr(dump, "plan", plan)
    monkeypatch.setattr(dump, "execute", execute)
    return state


def test_every_member_is_frozen_before_any_dump_and_thawed_after_the_last(members, tmp_path):
    log = members["log"] = []
    api = FakeAPI(log)
    results, group = group_dump.present_group(ctx_of(api, tmp_path), NAMES, dump.DumpOptions("gr", leave_running=True))
    assert [r["action"] for r in results] == ["created"] * 3 and group["members"] == NAMES
    actions = [action for action, unused in log]
    assert actions[:3] == ["pause"] * 3, log
    last_dump = max(i for i, (action, unused) in enumerate(log) if action == "dumped")
    first_thaw = min(i for i, (action, unused) in enumerate(log) if action == "unpause")
    assert last_dump < first_thaw and actions.count("unpause") == 3, log
    assert 0 <= group["freeze_seconds"] <= group["frozen_seconds"] <= group["thawed_after_seconds"]
    assert all(r["group"]["members"] == NAMES for r in results)


def test_the_members_are_paused_at_once_and_one_that_will_not_freeze_thaws_the_others(members, tmp_path):
    """The pauses run side by side (each waits here until all three have arrived: one after the other they would
    not). One refused (paused already, by someone else): the others are thawed, that one is left as it was, and it
    is named; none is dumped."""
    log = members["log"] = []
    arrived = threading.Barrier(len(NAMES), timeout=5)
    other = cid(NAMES[1])

    class SlowAPI(FakeAPI):
        def post(self, path, **unused):
            if path.endswith("/pause"):
                arrived.wait()  # (BrokenBarrierError if the pauses came one at a time)
                if path.split("/")[2] == other:
                    raise DockerAPIError(f"Container {other} is already paused", status=409)
            super().post(path)

    api = SlowAPI(log)
    api.paused.add(other)
    results, group = group_dump.present_group(ctx_of(api, tmp_path), NAMES, dump.DumpOptions("gr", leave_running=True))
    assert all(r.get("failed") for r in results)
    assert f"could not be frozen: {NAMES[1]} (Container {other} is already paused)" in results[0]["msg"]
    assert api.paused == {other} and "dumped" not in [action for action, unused in log], log


def test_a_stopping_group_is_not_thawed_each_member_ends_with_its_dump(members, tmp_path):
    log = members["log"] = []
    results, group = group_dump.present_group(ctx_of(FakeAPI(log), tmp_path), NAMES, dump.DumpOptions("gr"))
    assert not any(r.get("failed") for r in results)
    assert "unpause" not in [action for action, unused in log] and group["thawed_after_seconds"] is None


def playbook(directory, answers):
    """The playbook's side of a barrier in another thread: on each marker of `answers` ({marker: reply}), the reply
    is written (each once); what it saw and when, logged."""
    seen = []

    def answer():
        deadline = time.monotonic() + 10
        pending = dict(answers)
        while pending and time.monotonic() < deadline:
            for marker, reply in list(pending.items()):
                if (directory / marker).exists():
                    seen.append(marker)
                    (directory / reply).write_text("")
                    del pending[marker]
            time.sleep(0.005)

    thread = threading.Thread(target=answer)
    thread.start()
    return thread, seen


def test_a_part_moved_from_several_hosts_freezes_only_once_every_host_is_prepared(members, tmp_path):
    log = members["log"] = []
    api = FakeAPI(log)
    barrier = FleetBarrier(str(tmp_path / "barrier"), 5)
    prepared = []

    def prepare(plans):
        assert not api.paused, "frozen before the connections were made"
        prepared.append(len(plans))

    thread, seen = playbook(tmp_path / "barrier", {"prepared": fleet_barrier.FREEZE, "frozen": fleet_barrier.GO})
    results, group = group_dump.present_group(ctx_of(api, tmp_path), NAMES, dump.DumpOptions("gr"), barrier=barrier,
                                              prepare=prepare)
    thread.join()
    assert prepared == [3] and seen == ["prepared", "frozen"], seen
    assert not any(r.get("failed") for r in results) and group["barrier"] == fleet_barrier.GO


def test_a_part_told_to_abort_before_the_freeze_freezes_nothing(members, tmp_path):
    log = members["log"] = []
    barrier = FleetBarrier(str(tmp_path / "barrier"), 5)
    thread, unused = playbook(tmp_path / "barrier", {"prepared": fleet_barrier.ABORT})
    results, group = group_dump.present_group(ctx_of(FakeAPI(log), tmp_path), NAMES, dump.DumpOptions("gr"),
                                              barrier=barrier, prepare=lambda plans: None)
    thread.join()
    assert log == [] and group["barrier"] == fleet_barrier.ABORT  # nothing paused, nothing dumped
    assert all(r["failed"] and "nothing was frozen" in r["msg"] for r in results), results
    assert (tmp_path / "barrier" / "ended").exists()


def test_one_member_refused_refuses_the_group_untouched(members, tmp_path, monkeypatch):
    log = members["log"] = []
    real_plan = dump.plan

    def plan(ctx, ref, opts):
        if ref == "cache":
            raise OpError("container cache is paused: a checkpoint needs a running container")
        return real_plan(ctx, ref, opts)

    monkeypatch.setattr(dump, "plan", plan)
    results, unused = group_dump.present_group(ctx_of(FakeAPI(log), tmp_path), NAMES, dump.DumpOptions("gr"))
    assert all(r["failed"] for r in results) and log == []
    assert "nothing was touched" in results[0]["msg"] and "cache is paused" in results[0]["msg"]


def test_a_group_partly_checkpointed_already_is_refused(members, tmp_path):
    log = members["log"] = []
    members["exists"] = {"web"}
    results, unused = group_dump.present_group(ctx_of(FakeAPI(log), tmp_path), NAMES, dump.DumpOptions("gr"))
    assert all(r["failed"] for r in results) and log == []
    assert "web already has checkpoint 'gr' and worker, cache do not" in results[1]["msg"]
    members["exists"] = set(NAMES)
    results, unused = group_dump.present_group(ctx_of(FakeAPI(log), tmp_path), NAMES, dump.DumpOptions("gr"))
    assert [r["changed"] for r in results] == [False] * 3 and log == []


def test_a_failed_dump_undoes_the_group(members, tmp_path, monkeypatch):
    log = members["log"] = []
    members["fail"] = {"worker"}
    brought_back, dropped = [], []
    monkeypatch.setattr(restore, "restored", lambda ctx, ref, opts: brought_back.append(ref) or {})
    monkeypatch.setattr(remove, "absent", lambda ctx, ref, name: dropped.append(ref) or {})
    api = FakeAPI(log)
    results, group = group_dump.present_group(ctx_of(api, tmp_path), NAMES, dump.DumpOptions("gr"))
    assert group["undone"] and all(r["failed"] for r in results)
    assert "CRIU said no" in results[1]["msg"]
    assert "restored from the group's instant" in results[0]["msg"], results[0]["msg"]
    assert sorted(brought_back) == sorted([cid("web"), cid("cache")]) == sorted(dropped)
    assert api.paused == set(), "a member was left frozen"


# -- restore ---------------------------------------------------------------------------------------------------------
@pytest.fixture
def barrier_here(tmp_path, monkeypatch):
    """The barrier's files under tmp_path; restore.restored stood in for by CRIU's part: a member restored marks
    itself ready and waits for go (True) or abort (False), as the action script does."""
    real = restore_barrier.RestoreBarrier

    def here(ids, seconds):
        return real(ids, seconds, runc_conf=str(tmp_path / "runc.conf"), directory=str(tmp_path / "barrier"),
                    script=str(tmp_path / "script"))

    monkeypatch.setattr(group_restore, "RestoreBarrier", here)
    outcome = {"fail": set(), "released": {}}

    def restored(ctx, ref, opts):
        if ref in outcome["fail"]:
            time.sleep(0.05)
            raise OpError(f"restore of {ref} failed: CRIU said no")
        directory = tmp_path / "barrier"
        (directory / "ready" / cid(ref)).write_text("")
        while not (directory / "go").exists():
            if (directory / "abort").exists():
                outcome["released"][ref] = False
                raise OpError(f"restore of {ref} failed: the post-restore script failed")
            time.sleep(0.005)
        outcome["released"][ref] = True
        return {"container": ref, "changed": True, "action": "restored", "warnings": []}

    monkeypatch.setattr(restore, "restored", restored)
    for name in NAMES:
        path = store.checkpoint_dir(str(tmp_path), cid(name), "gr")
        os.makedirs(path)
    return outcome


def test_the_members_are_released_together(barrier_here, tmp_path):
    ctx = ctx_of(FakeAPI([], running=False), tmp_path)
    results, group = group_restore.restored_group(ctx, NAMES, restore.RestoreOptions("gr"))
    assert [r["action"] for r in results] == ["restored"] * 3 and group["held_seconds"] > 0
    assert barrier_here["released"] == dict.fromkeys(NAMES, True)
    assert not (tmp_path / "runc.conf").exists()  # made for the restore, removed after


def test_one_member_that_cannot_be_restored_releases_none(barrier_here, tmp_path):
    barrier_here["fail"] = {"cache"}
    ctx = ctx_of(FakeAPI([], running=False), tmp_path)
    results, group = group_restore.restored_group(ctx, NAMES, restore.RestoreOptions("gr"))
    assert group["aborted"] and all(r["failed"] for r in results)
    assert barrier_here["released"] == {"web": False, "worker": False}
    assert "CRIU said no" in results[2]["msg"]
    assert "stopped before any member ran, because cache could not be restored" in results[0]["msg"]


def test_a_partly_running_group_and_a_missing_checkpoint_are_refused(barrier_here, tmp_path):
    api = FakeAPI([], running=False)
    api.running[cid("web")] = True
    results, unused = group_restore.restored_group(ctx_of(api, tmp_path), NAMES, restore.RestoreOptions("gr"))
    assert all(r["failed"] for r in results) and "web is running and the others are not" in results[1]["msg"]
    os.rmdir(store.checkpoint_dir(str(tmp_path), cid("cache"), "gr"))
    api.running[cid("web")] = False
    results, unused = group_restore.restored_group(ctx_of(api, tmp_path), NAMES, restore.RestoreOptions("gr"))
    assert "cache has no checkpoint 'gr'" in results[0]["msg"] and barrier_here["released"] == {}


def test_a_checkpoint_made_as_a_group_needs_all_its_members(barrier_here, tmp_path):
    path = store.checkpoint_dir(str(tmp_path), cid("web"), "gr")
    store.write_metadata(path, {"group": {"members": NAMES, "ids": [cid(name) for name in NAMES]}})
    ctx = ctx_of(FakeAPI([], running=False), tmp_path)
    results, unused = group_restore.restored_group(ctx, ["web", "worker"], restore.RestoreOptions("gr"))
    assert all(r["failed"] for r in results) and "made as one group with cache" in results[0]["msg"]


def test_nothing_to_restore_is_nothing_done(tmp_path):
    """A host manifest whose group was undone lists nothing to restore: no barrier, no runc.conf change."""
    results, group = group_restore.restored_group(ctx_of(FakeAPI([]), tmp_path), [], restore.RestoreOptions("gr"))
    assert results == [] and group["members"] == []


def test_a_member_restored_without_being_held_does_not_hold_back_the_others(barrier_here, tmp_path, monkeypatch):
    """(Its restore did not read runc.conf: it runs already; the others are released rather than killed.)"""
    held_restore = restore.restored

    def unheld_web(ctx, ref, opts):
        if ref == "web":
            barrier_here["released"][ref] = "unheld"
            return {"container": ref, "changed": True, "action": "restored", "warnings": []}
        return held_restore(ctx, ref, opts)

    monkeypatch.setattr(restore, "restored", unheld_web)
    results, group = group_restore.restored_group(ctx_of(FakeAPI([], running=False), tmp_path), NAMES,
                                                  restore.RestoreOptions("gr"))
    assert [r["action"] for r in results] == ["restored"] * 3 and group["not_held"] == ["web"]
    assert barrier_here["released"] == {"web": "unheld", "worker": True, "cache": True}
    assert "ran as soon as it was restored" in results[0]["warnings"][0]


def test_an_undone_group_puts_back_the_checkpoints_it_was_replacing(tmp_path, monkeypatch):
    """force=true: each member's older checkpoint of that name is kept aside until the whole group is made; when
    the group is undone, it is put back."""
    path, old = tmp_path / "gr", tmp_path / ".gr.fleet-old"
    path.mkdir()
    (path / "new").write_text("")
    old.mkdir()
    (old / "old").write_text("")
    monkeypatch.setattr(remove, "absent", lambda ctx, ref, name: shutil.rmtree(path))
    planned = dump.DumpPlan({"Id": cid("web")}, {}, str(path), True, "containerd", {"Name": "no"}, [], str(old))
    result = {"container": "web", "warnings": []}
    group_dump._drop(ctx_of(FakeAPI([]), tmp_path), planned, "gr", result)  # pylint: disable=protected-access
    assert os.listdir(path) == ["old"] and not old.exists() and result["warnings"] == []
