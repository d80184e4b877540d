# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import os
import subprocess

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._host.processes import (
    alive,
    compare,
    dump_estimate,
    host_pids,
    process_info,
    process_tree,
    rss_bytes,
    start_time,
    time_namespace,
    wait_gone,
)

HOST_TIME_NS = "time:[4026531834]"
TITLES = ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]


def add_process(proc, host_pid, ns_pids, argv, rss_kb=None, time_ns=None):
    """A /proc/<pid> like the kernel's: status with NSpid (host first, innermost last), NUL-separated cmdline."""
    directory = proc / str(host_pid)
    directory.mkdir(parents=True)
    lines = [f"Name:\t{argv[0].rsplit('/', 1)[-1] if argv else 'kthread'}", "State:\tS (sleeping)",
             f"Pid:\t{host_pid}"]
    if ns_pids is not None:
        lines.append("NSpid:\t" + "\t".join(str(pid) for pid in ns_pids))
    if rss_kb is not None:
        lines.append(f"VmRSS:\t{rss_kb:>8} kB")
    lines.append("Threads:\t1")
    (directory / "status").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (directory / "cmdline").write_bytes(b"".join(arg.encode("utf-8") + b"\0" for arg in argv))
    if time_ns is not None:
        (directory / "ns").mkdir()
        (directory / "ns" / "time").symlink_to(time_ns)
    return directory


@pytest.fixture
def proc(tmp_path):
    root = tmp_path / "proc"
    add_process(root, 1354, [1354, 1], ["/bin/sh", "-c", "while true; do sleep 1; done"], rss_kb=1024,
                time_ns="time:[4026532801]")
    add_process(root, 1400, [1400, 7], ["/usr/local/bin/counter", "--interval", "1"], rss_kb=2048,
                time_ns="time:[4026532801]")
    add_process(root, 1401, [1401, 12], ["sleep", "1"], rss_kb=256)
    add_process(root, 1, [1], ["/sbin/init"], rss_kb=10000, time_ns=HOST_TIME_NS)
    return str(root)


def test_process_info_reads_the_innermost_pid_and_the_command_line(proc):
    assert process_info(1354, proc) == {"pid": 1, "cmd": "/bin/sh -c while true; do sleep 1; done"}
    assert process_info("1400", proc) == {"pid": 7, "cmd": "/usr/local/bin/counter --interval 1"}
    assert process_info(1, proc) == {"pid": 1, "cmd": "/sbin/init"}


def test_process_info_of_a_vanished_process_is_none(proc, tmp_path):
    assert process_info(99999, proc) is None
    half = tmp_path / "proc" / "555"
    half.mkdir()
    (half / "status").write_text("NSpid:\t555\t3\n", encoding="utf-8")  # cmdline already gone
    assert process_info(555, proc) is None


def test_process_info_without_nspid_uses_the_host_pid_and_empty_cmdline(tmp_path):
    root = tmp_path / "proc"
    add_process(root, 2, None, [])  # an old kernel (no NSpid line) and a kernel thread (empty cmdline)
    assert process_info(2, str(root)) == {"pid": 2, "cmd": ""}


def test_process_info_replaces_undecodable_bytes(tmp_path):
    root = tmp_path / "proc"
    add_process(root, 3, [3, 2], ["x"])
    (root / "3" / "cmdline").write_bytes(b"caf\xe9\0--x\0\0")
    assert process_info(3, str(root)) == {"pid": 2, "cmd": "caf\ufffd --x"}


def test_host_pids_from_the_engine_top_answer():
    top = {"Titles": TITLES, "Processes": [
        ["root", "1354", "1333", "0", "14:00", "?", "00:00:00", "/bin/sh -c while true"],
        ["root", "1400", "1354", "0", "14:00", "?", "00:00:01", "/usr/local/bin/counter"],
        ["root", "not-a-pid", "1", "0", "14:00", "?", "00:00:00", "junk"],
        ["short"],
    ]}
    assert host_pids(top) == [1354, 1400]


def test_host_pids_finds_the_pid_column_wherever_it_is():
    top = {
        "Titles": ["PID", "USER", "TIME", "COMMAND"],
        "Processes": [["42", "root", "0:00", "sleep 1"], [43, "root", "0:00", "sh"]],
    }
    assert host_pids(top) == [42, 43]


@pytest.mark.parametrize("top", [
    {},
    {"Titles": None, "Processes": None},
    {"Titles": ["UID", "CMD"], "Processes": [["root", "sh"]]},
    {"Titles": TITLES, "Processes": None},
])
def test_host_pids_without_a_pid_column_or_processes_is_empty(top):
    assert host_pids(top) == []


def test_process_tree_is_sorted_by_container_pid_and_leaves_out_vanished(proc):
    tree = process_tree([1401, 1400, 99999, 1354], proc)
    assert tree == [
        {"pid": 1, "cmd": "/bin/sh -c while true; do sleep 1; done"},
        {"pid": 7, "cmd": "/usr/local/bin/counter --interval 1"},
        {"pid": 12, "cmd": "sleep 1"},
    ]
    assert process_tree([], proc) == []


def test_time_namespace(proc):
    assert time_namespace(1354, proc) == "time:[4026532801]"
    assert time_namespace(1, proc) == HOST_TIME_NS
    assert time_namespace(1401, proc) is None  # no ns/time: a kernel without time namespaces
    assert time_namespace(99999, proc) is None


def test_rss_bytes_sums_vmrss_and_counts_vanished_as_zero(proc, tmp_path):
    assert rss_bytes([1354], proc) == 1024 * 1024
    assert rss_bytes([1354, 1400, 1401, 99999], proc) == (1024 + 2048 + 256) * 1024
    add_process(tmp_path / "proc", 4, [4], [])  # a kernel thread has no VmRSS line
    assert rss_bytes([4, 1401], proc) == 256 * 1024
    assert rss_bytes([], proc) == 0


def test_dump_estimate_adds_slack_and_a_floor():
    assert dump_estimate(0) == 16 * 1024 * 1024
    assert dump_estimate(100 * 1024 * 1024) == 110 * 1024 * 1024 + 16 * 1024 * 1024
    assert dump_estimate(1000, slack=0.5, floor=1) == 1501
    assert isinstance(dump_estimate(333), int)


RECORDED = [{"pid": 1, "cmd": "/bin/sh -c loop"}, {"pid": 7, "cmd": "counter"}, {"pid": 12, "cmd": "sleep 1"}]


def test_compare_restored_tree_is_resumed():
    result = compare(RECORDED, list(RECORDED), init_time_ns="time:[4026532801]", host_time_ns=HOST_TIME_NS)
    assert result == {"matched": 3, "recorded": 3, "missing": [], "resumed": True, "reason": ""}


def test_compare_short_lived_child_missing_is_still_resumed():
    result = compare(RECORDED, RECORDED[:2], init_time_ns="time:[4026532801]", host_time_ns=HOST_TIME_NS)
    assert result["resumed"] is True
    assert result["matched"] == 2
    assert result["recorded"] == 3
    assert result["missing"] == [{"pid": 12, "cmd": "sleep 1"}]


def test_compare_without_time_namespaces_relies_on_the_tree():
    assert compare(RECORDED, RECORDED)["resumed"] is True
    assert compare(RECORDED, RECORDED, init_time_ns=None, host_time_ns=HOST_TIME_NS)["resumed"] is True


@pytest.mark.parametrize("current", [
    [{"pid": 7, "cmd": "counter"}],  # main process gone
    [{"pid": 1, "cmd": "/bin/sh -c other"}, {"pid": 7, "cmd": "counter"}],  # pid 1 runs something else
    [{"pid": 2, "cmd": "/bin/sh -c loop"}, {"pid": 7, "cmd": "counter"}],  # same command, fresh pid
    [],
])
def test_compare_main_process_missing_is_not_resumed(current):
    result = compare(RECORDED, current, init_time_ns="time:[4026532801]", host_time_ns=HOST_TIME_NS)
    assert result["resumed"] is False
    assert "main process (pid 1 in the container, '/bin/sh -c loop') is not back" in result["reason"]
    assert {"pid": 1, "cmd": "/bin/sh -c loop"} in result["missing"]


def test_compare_host_time_namespace_means_a_cold_start():
    result = compare(RECORDED, RECORDED, init_time_ns=HOST_TIME_NS, host_time_ns=HOST_TIME_NS)
    assert result["resumed"] is False
    assert "host's time namespace" in result["reason"]
    assert result["matched"] == 3


def test_compare_with_nothing_recorded_is_not_resumed():
    result = compare([], RECORDED, init_time_ns="time:[4026532801]", host_time_ns=HOST_TIME_NS)
    assert result == {"matched": 0, "recorded": 0, "missing": [], "resumed": False,
                      "reason": "no process tree was recorded at checkpoint time"}


def test_compare_on_a_fake_proc_after_restore_and_after_cold_start(proc, tmp_path):
    recorded = process_tree([1354, 1400], proc)
    pids = host_pids({"Titles": TITLES, "Processes": [["root", "1354", "0", "0", "", "?", "", "sh"],
                                                      ["root", "1400", "0", "0", "", "?", "", "counter"]]})
    result = compare(recorded, process_tree(pids, proc), time_namespace(1354, proc), time_namespace(1, proc))
    assert result["resumed"] is True

    cold = tmp_path / "cold"
    add_process(cold, 2000, [2000, 1], ["/bin/sh", "-c", "while true; do sleep 1; done"], time_ns=HOST_TIME_NS)
    add_process(cold, 2001, [2001, 7], ["/usr/local/bin/counter", "--interval", "1"], time_ns=HOST_TIME_NS)
    add_process(cold, 1, [1], ["/sbin/init"], time_ns=HOST_TIME_NS)
    result = compare(recorded, process_tree([2000, 2001], str(cold)), time_namespace(2000, str(cold)),
                     time_namespace(1, str(cold)))
    assert result["resumed"] is False
    assert result["matched"] == 2
    assert "started afresh" in result["reason"]


def write_stat(proc, pid, comm, state, starttime):
    directory = proc / str(pid)
    directory.mkdir(parents=True, exist_ok=True)
    rest = [state] + ["0"] * 18 + [str(starttime)] + ["0"] * 30  # field 22 (starttime) is the 20th after comm
    (directory / "stat").write_text(f"{pid} ({comm}) " + " ".join(rest) + "\n")


def test_start_time_reads_past_any_command_name(tmp_path):
    write_stat(tmp_path, 7, "odd) (name) S 1 2", "S", 123456)
    assert start_time(7, str(tmp_path)) == ("S", 123456)
    assert start_time(8, str(tmp_path)) is None
    (tmp_path / "9").mkdir()
    (tmp_path / "9" / "stat").write_text("9 (short) S 1\n")
    assert start_time(9, str(tmp_path)) is None


def test_alive_knows_zombies_and_reused_pids(tmp_path):
    write_stat(tmp_path, 7, "app", "S", 100)
    write_stat(tmp_path, 8, "app", "Z", 100)
    assert alive(7, proc=str(tmp_path)) and alive(7, 100, str(tmp_path))
    assert not alive(7, 101, str(tmp_path))  # another process got the PID
    assert not alive(8, proc=str(tmp_path))
    assert not alive(9, proc=str(tmp_path))
    assert not alive(0) and not alive(None)


def test_real_processes_and_wait_gone():
    me = start_time(os.getpid())
    assert me is not None and alive(os.getpid(), me[1])
    child = subprocess.Popen(["sleep", "60"])
    try:
        started = start_time(child.pid)[1]
        assert alive(child.pid, started)
        assert not wait_gone(child.pid, started, seconds=0.02)  # still sleeping
        child.kill()
        assert wait_gone(child.pid, started, seconds=10)  # ended (a zombie until reaped: gone all the same)
        assert start_time(child.pid)[0] == "Z"
    finally:
        child.kill()
        child.wait()
    assert wait_gone(child.pid, started, seconds=0)
