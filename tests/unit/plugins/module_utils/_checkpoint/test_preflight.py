# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import preflight as engine
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import check_cache
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.preflight import (
    PreflightError,
    check_criu,
    check_criu_works,
    check_experimental,
    check_free_space,
    criu_preflight,
)


class FakeRun:
    def __init__(self, rc, out, err=""):
        self.answer = (rc, out, err)
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        return self.answer


def test_check_experimental():
    check_experimental({"ExperimentalBuild": True})
    for info in ({"ExperimentalBuild": False}, {}):
        with pytest.raises(PreflightError, match="experimental mode is off.*fleet.checkpoint.docker_experimental"):
            check_experimental(info)


def test_check_criu_missing():
    run = FakeRun(0, "Version: 4.2.1\n")
    with pytest.raises(PreflightError, match="CRIU is not installed.*criu_install"):
        check_criu(run, None, kernel_release="6.18.0")
    assert run.calls == []


@pytest.mark.parametrize("rc, out, err, fragment", [
    (0, "criu: unknown option\n", "", "criu: unknown option"),
    (1, "", "criu: cannot load libnl\n", "criu: cannot load libnl"),
    (1, "Version: 4.2.1\n", "", "Version: 4.2.1"),  # a failing command is not trusted, whatever it printed
])
def test_check_criu_bad_output(rc, out, err, fragment):
    with pytest.raises(PreflightError, match="`/usr/sbin/criu --version` failed") as info:
        check_criu(FakeRun(rc, out, err), "/usr/sbin/criu", kernel_release="6.18.0")
    assert fragment in str(info.value)
    assert "reinstall CRIU" in str(info.value)


def test_check_criu_too_old_for_the_kernel():
    run = FakeRun(0, "Version: 3.17.1\n")
    with pytest.raises(PreflightError, match=r"CRIU 3\.17\.1 is too old: kernel 6\.18\.0 needs CRIU 4\.1") as info:
        check_criu(run, "/usr/sbin/criu", kernel_release="6.18.0")
    assert "vDSO" in str(info.value)
    assert "fleet.checkpoint.criu_install" in str(info.value)
    assert run.calls == [["/usr/sbin/criu", "--version"]]


def test_check_criu_ok():
    assert check_criu(FakeRun(0, "Version: 4.2.1\nGitID: v4.2.1\n"), "/usr/sbin/criu", "6.18.0") == "4.2.1"
    assert check_criu(FakeRun(0, "Version: 4.1\n"), "/usr/sbin/criu", "6.13.0") == "4.1"
    # Below Linux 6.13 no kernel floor applies: the old Debian CRIU is enough.
    assert check_criu(FakeRun(0, "Version: 3.17.1\n"), "/usr/sbin/criu", "6.1.0-28-amd64") == "3.17.1"


def test_check_criu_uses_the_running_kernel_by_default(monkeypatch):
    monkeypatch.setattr(engine, "_kernel_release", lambda: "6.18.0")
    with pytest.raises(PreflightError, match="too old"):
        check_criu(FakeRun(0, "Version: 3.17.1\n"), "/usr/sbin/criu")
    monkeypatch.setattr(engine, "_kernel_release", lambda: "6.1.0")
    assert check_criu(FakeRun(0, "Version: 3.17.1\n"), "/usr/sbin/criu") == "3.17.1"


def test_check_free_space_ok(tmp_path):
    free = check_free_space(str(tmp_path), 1)
    stat = os.statvfs(tmp_path)
    assert 1 < free <= stat.f_blocks * stat.f_frsize


def test_check_free_space_not_enough(tmp_path):
    with pytest.raises(PreflightError, match=r"about 1073741824 MiB needed .* MiB free on the filesystem of") as info:
        check_free_space(str(tmp_path), 1024 ** 5)
    assert str(tmp_path) in str(info.value)


def test_check_free_space_walks_up_to_an_existing_directory(tmp_path):
    missing = tmp_path / "containers" / "ab" / "checkpoints" / "pre-reboot"
    assert check_free_space(str(missing), 1) > 0
    with pytest.raises(PreflightError, match=f"filesystem of {tmp_path}; "):
        check_free_space(str(missing), 1024 ** 5)
    assert not (tmp_path / "containers").exists()


def test_check_free_space_with_a_missing_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real_dirname = os.path.dirname
    calls = []

    def guarded_dirname(path):
        calls.append(path)
        if len(calls) > 100:
            raise RuntimeError("check_free_space does not stop walking up")
        return real_dirname(path)

    monkeypatch.setattr(os.path, "dirname", guarded_dirname)
    assert check_free_space("missing/dir", 1) > 0


def test_criu_check_passing_is_accepted():
    check_criu_works(FakeRun(0, "Warn (criu/kerndat.c:1): rlimit: Can't setup RLIMIT_NOFILE\nLooks good.\n", ""),
                     "/usr/sbin/criu")


def test_criu_check_failing_names_criu_lines_and_the_remedy():
    with pytest.raises(PreflightError, match="vdso: Unexpected rt vDSO area bounds.*criu_install"):
        check_criu_works(FakeRun(1, "", "Error (criu/vdso.c:1): vdso: Unexpected rt vDSO area bounds\n"),
                         "/usr/sbin/criu")


class ScriptedRun:
    """`criu --version` and `criu check` answered as a working CRIU 4.2 would; records the commands."""

    def __init__(self, check_passes=True):
        self.calls = []
        self.check_passes = check_passes

    def __call__(self, argv):
        self.calls.append(argv[1])
        if argv[1] == "--version":
            return 0, "Version: 4.2\n", ""
        return (0, "Looks good.\n", "") if self.check_passes else (1, "", "Error: kernel too old\n")


@pytest.fixture
def criu_binary(tmp_path):
    path = tmp_path / "criu"
    path.write_bytes(b"#!/bin/sh\n")
    return str(path)


def test_preflight_asks_criu_once_per_boot_and_binary(tmp_path, criu_binary):
    cache = str(tmp_path / "run" / "fleet-checkpoint")
    run = ScriptedRun()
    assert criu_preflight(run, criu_binary, works=True, cache_dir=cache) == "4.2"
    assert run.calls == ["--version", "check"]
    assert oct(os.stat(cache).st_mode & 0o777) == "0o700"
    assert oct(os.stat(os.path.join(cache, check_cache.FILE_NAME)).st_mode & 0o777) == "0o600"
    assert criu_preflight(run, criu_binary, works=True, cache_dir=cache) == "4.2"
    assert run.calls == ["--version", "check"]  # answered from the record
    os.utime(criu_binary, ns=(1, 1))  # an upgraded binary: asked again
    assert criu_preflight(run, criu_binary, works=True, cache_dir=cache) == "4.2"
    assert run.calls == ["--version", "check", "--version", "check"]


def test_preflight_in_check_mode_records_nothing(tmp_path, criu_binary):
    cache = str(tmp_path / "cache")
    run = ScriptedRun()
    assert criu_preflight(run, criu_binary, works=True, cache_dir=cache, record=False) == "4.2"
    assert not os.path.exists(cache)


def test_preflight_records_a_version_without_a_check_then_adds_the_check(tmp_path, criu_binary):
    cache = str(tmp_path / "cache")
    run = ScriptedRun()
    criu_preflight(run, criu_binary, works=False, cache_dir=cache)
    criu_preflight(run, criu_binary, works=True, cache_dir=cache)
    criu_preflight(run, criu_binary, works=True, cache_dir=cache)
    assert run.calls == ["--version", "check"]


def test_preflight_never_records_a_failing_check(tmp_path, criu_binary):
    cache = str(tmp_path / "cache")
    run = ScriptedRun(check_passes=False)
    for _attempt in range(2):
        with pytest.raises(PreflightError, match="does not pass"):
            criu_preflight(run, criu_binary, works=True, cache_dir=cache)
    assert run.calls == ["--version", "check", "--version", "check"]  # nothing recorded
    assert not os.path.exists(cache)


def test_preflight_still_refuses_a_criu_too_old_for_the_kernel(tmp_path, criu_binary, monkeypatch):
    cache = str(tmp_path / "cache")
    key = check_cache.cache_key(criu_binary)
    assert check_cache.write(key, "3.17.1", True, cache)
    monkeypatch.setattr(engine, "_kernel_release", lambda: "6.18.0")
    with pytest.raises(PreflightError, match="too old"):
        criu_preflight(ScriptedRun(), criu_binary, works=True, cache_dir=cache)


def test_preflight_without_criu():
    with pytest.raises(PreflightError, match="CRIU is not installed"):
        criu_preflight(ScriptedRun(), None, works=True)


@pytest.mark.parametrize("spoil", ["world-writable dir", "world-writable file", "other key", "not json", "symlink"])
def test_a_record_that_is_not_exactly_ours_is_ignored(tmp_path, criu_binary, spoil):
    cache = tmp_path / "cache"
    key = check_cache.cache_key(criu_binary)
    assert check_cache.write(key, "4.2", True, str(cache))
    record = cache / check_cache.FILE_NAME
    if spoil == "world-writable dir":
        os.chmod(cache, 0o777)
    elif spoil == "world-writable file":
        os.chmod(record, 0o666)
    elif spoil == "other key":
        assert check_cache.write(dict(key, boot_id="another boot"), "4.2", True, str(cache))
    elif spoil == "not json":
        record.write_text("{")
    else:
        real = tmp_path / "elsewhere.json"
        record.rename(real)
        record.symlink_to(real)
    assert check_cache.read(key, str(cache)) == {}
    run = ScriptedRun()
    criu_preflight(run, criu_binary, works=True, cache_dir=str(cache))
    assert run.calls == ["--version", "check"]


def test_no_record_without_a_boot_id(tmp_path, criu_binary):
    assert check_cache.cache_key(criu_binary, boot_id_path=str(tmp_path / "missing")) is None
    assert check_cache.read(None, str(tmp_path)) == {}
    assert check_cache.write(None, "4.2", True, str(tmp_path)) is False
