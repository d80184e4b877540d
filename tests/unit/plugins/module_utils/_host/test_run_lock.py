"""The run lock: one playbook run per host, across reboots; only the owner releases it; an expired lock is taken over."""

import json
import os
import stat

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._host.run_lock import LockHeld, acquire, give_back, read, release


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def record(owner, since=1000.0, expires=5000.0):
    return {"owner": owner, "purpose": "host_reboot", "controller": "awx-1", "since": since, "expires": expires}


def test_the_first_run_takes_it_root_only_and_taking_it_again_changes_nothing(tmp_path):
    path = str(tmp_path / "state" / "run.lock")
    clock = Clock()
    assert acquire(path, record("a"), clock=clock, sleep=clock.sleep) == (True, None)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert read(path)["owner"] == "a"
    assert acquire(path, record("a"), clock=clock, sleep=clock.sleep) == (False, None)


def test_the_holder_claiming_again_renews_its_lease_keeping_since(tmp_path):
    path = str(tmp_path / "run.lock")
    clock = Clock()
    acquire(path, record("a"), clock=clock, sleep=clock.sleep)
    assert acquire(path, record("a", since=3000.0, expires=9000.0), clock=clock, sleep=clock.sleep) == (False, None)
    assert (read(path)["since"], read(path)["expires"]) == (1000.0, 9000.0)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    # A shorter lease does not cut the one held; check mode writes nothing.
    acquire(path, record("a", expires=2000.0), clock=clock, sleep=clock.sleep)
    acquire(path, record("a", expires=99000.0), check_mode=True, clock=clock, sleep=clock.sleep)
    assert read(path)["expires"] == 9000.0
    assert sorted(os.listdir(tmp_path)) == ["run.lock"]


def test_a_second_run_waits_then_refuses_naming_the_holder(tmp_path):
    path = str(tmp_path / "run.lock")
    clock = Clock()
    acquire(path, record("a"), clock=clock, sleep=clock.sleep)
    with pytest.raises(LockHeld) as error:
        acquire(path, record("b"), timeout=30, clock=clock, sleep=clock.sleep)
    assert "'a'" in str(error.value) and "host_reboot" in str(error.value) and "awx-1" in str(error.value)
    assert "fleet_checkpoint_break_lock" in str(error.value)
    assert clock.now >= 1030
    assert read(path)["owner"] == "a"


def test_a_second_run_gets_it_when_the_first_releases_while_it_waits(tmp_path):
    path = str(tmp_path / "run.lock")
    clock = Clock()
    acquire(path, record("a"), clock=clock, sleep=clock.sleep)

    def sleep(seconds):
        clock.sleep(seconds)
        if clock.now > 1005 and read(path).get("owner") == "a":
            release(path, "a")

    assert acquire(path, record("b"), timeout=60, clock=clock, sleep=sleep) == (True, None)
    assert read(path)["owner"] == "b"


def test_an_expired_or_forced_lock_is_taken_over_and_reported(tmp_path):
    path = str(tmp_path / "run.lock")
    clock = Clock()
    acquire(path, record("a", expires=1500), clock=clock, sleep=clock.sleep)
    clock.now = 2000
    changed, previous = acquire(path, record("b"), clock=clock, sleep=clock.sleep)
    assert changed and previous["owner"] == "a"
    changed, previous = acquire(path, record("c"), force=True, clock=clock, sleep=clock.sleep)
    assert changed and previous["owner"] == "b" and read(path)["owner"] == "c"


def test_check_mode_predicts_without_writing(tmp_path):
    path = str(tmp_path / "run.lock")
    assert acquire(path, record("a"), check_mode=True) == (True, None)
    assert not os.path.exists(path)
    assert release(path, "a", check_mode=True) == (False, None)


def test_only_the_owner_releases_unless_forced(tmp_path):
    path = str(tmp_path / "run.lock")
    acquire(path, record("a"), clock=Clock(), sleep=Clock().sleep)
    with pytest.raises(LockHeld):
        release(path, "b")
    assert read(path)["owner"] == "a"
    changed, previous = release(path, "a")
    assert changed and previous["owner"] == "a" and not os.path.exists(path)
    assert release(path, "a") == (False, None)


def test_an_unreadable_lock_is_held_until_forced(tmp_path):
    path = tmp_path / "run.lock"
    path.write_text("{not json")
    with pytest.raises(LockHeld) as error:
        acquire(str(path), record("a"), clock=Clock(), sleep=Clock().sleep)
    assert "cannot be read" in str(error.value)
    assert acquire(str(path), record("a"), force=True, clock=Clock(), sleep=Clock().sleep)[0]
    assert json.loads(path.read_text())["owner"] == "a"


def test_an_unreadable_lock_expires_four_hours_after_it_was_written(tmp_path):
    path = tmp_path / "run.lock"
    path.write_text("")  # a run killed while writing it
    later = Clock(os.path.getmtime(path) + 4 * 3600 + 1)
    changed, previous = acquire(str(path), record("a"), clock=later, sleep=later.sleep)
    assert changed and previous["unreadable"] and read(str(path))["owner"] == "a"


def test_no_temporary_files_are_left_behind(tmp_path):
    path = tmp_path / "run.lock"
    acquire(str(path), record("a"), clock=Clock(), sleep=Clock().sleep)
    release(str(path), "a")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_give_back_releases_its_own_lock_and_leaves_another_runs_with_a_warning(tmp_path):
    path = str(tmp_path / "run.lock")
    clock = Clock()
    assert give_back("a", path) == (False, None)  # nobody holds it: nothing to give back, no error
    acquire(path, record("a"), clock=clock, sleep=clock.sleep)
    assert give_back("a", path, check_mode=True) == (False, None) and read(path)["owner"] == "a"
    assert give_back("a", path) == (True, None) and read(path) == {}
    acquire(path, record("b"), clock=clock, sleep=clock.sleep)
    released, warning = give_back("a", path)
    assert not released and "belongs to run 'b'" in warning and read(path)["owner"] == "b"
