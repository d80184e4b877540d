# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The benchmark's arithmetic (tools/bench/run.py, check.py) on made-up events and results."""

import copy
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check  # noqa: E402 pylint: disable=wrong-import-position
import run  # noqa: E402 pylint: disable=wrong-import-position


def event(kind, t, **fields):
    return {"event": kind, "t": t, **fields}


EVENTS = [
    event("playbook", 0.0, name="x.yml"),
    event("task", 1.0, name="Checkpoint", action="fleet.checkpoint.docker_checkpoint", uuid="a"),
    event("result", 2.0, host="h1", status="ok", task="Checkpoint", action="fleet.checkpoint.docker_checkpoint",
          uuid="a", result={"results": [{"container": "c1", "duration": 0.8, "dump_call_seconds": 0.5}]}),
    event("result", 2.5, host="h2", status="ok", task="Checkpoint", action="fleet.checkpoint.docker_checkpoint",
          uuid="a", result={"results": [{"container": "c2", "duration": 0.9, "dump_call_seconds": 0.7}]}),
    event("task", 3.0, name="Reboot", action="ansible.builtin.reboot", uuid="b"),
    event("result", 9.0, host="h1", status="ok", task="Reboot", action="ansible.builtin.reboot", uuid="b", result={}),
    event("end", 10.0),
]


def test_a_task_lasts_from_its_start_to_its_last_host_result():
    tasks = run.tasks_of(EVENTS)
    assert [t["name"] for t in tasks] == ["Checkpoint", "Reboot"]
    assert tasks[0]["wall"] == 1.5 and tasks[1]["wall"] == 6.0
    assert run.figure(tasks[0], "dump_call_seconds") == 0.7  # containers of one call run in parallel: the longest
    assert run.figure(tasks[1], "dump_call_seconds") is None


def test_ratios_check_their_targets_both_ways():
    results = run.Results("smoke")
    results.ratios = []
    results.add("a", "dump", "a", [1.0, 3.0, 2.0])
    results.add("b", "dump", "b", [10.0])
    assert results.median("a") == 2.0 and results.measurements["a"]["min"] == 1.0
    assert run.ratio(results, "r1", "a/b", "a", "b", "<= 0.1")["met"] is False
    assert run.ratio(results, "r2", "a/b", "a", "b", ">= 0.1")["met"] is True
    assert run.ratio(results, "r3", "a/b", "a", "b")["value"] == 0.2 and "met" not in results.ratios[-1]
    assert run.ratio(results, "r4", "missing", "a", "nothing") is None


def good_results():
    sizes = [64]
    ids = ([f"{p}.{s}" for p in check.ONE_CONTAINER + check.PAIRED for s in sizes] + list(check.OTHERS)
           + ["migrate.overhead"])
    return {"measurements": [{"id": i, "size_mib": 64, "samples": [1.0]} for i in ids],
            "ratios": [{"id": r, "value": 0.5} for r in check.TARGETED],
            "splits": {"fleet": {"total": 10.0, "parts": {"a": 4.0, "b": 6.0}}}}


def test_check_accepts_a_complete_run():
    assert check.problems(good_results()) == []


def test_check_finds_a_missing_case_a_bad_figure_a_split_that_does_not_add_up():
    results = good_results()
    broken = copy.deepcopy(results)
    broken["measurements"] = [m for m in broken["measurements"] if m["id"] not in ("dump.podman.64",
                                                                                   "paired.dump-criu.64")]
    assert check.problems(broken) == ["missing measurement dump.podman.64", "missing measurement paired.dump-criu.64"]
    broken = copy.deepcopy(results)
    broken["measurements"][0]["samples"] = [0.0]
    assert "not positive" in check.problems(broken)[0]
    broken = copy.deepcopy(results)
    broken["splits"]["fleet"]["total"] = 12.0
    assert check.problems(broken) == ["split fleet: parts add up to 10.000, not 12.000"]
    broken = copy.deepcopy(results)
    broken["ratios"] = []
    assert len(check.problems(broken)) == len(check.TARGETED)


def test_a_split_is_one_whole_run_the_median_one():
    parts = {"total": [30.0, 10.0, 20.0], "a": [3.0, 1.0, 2.0], "overhead": [27.0, 9.0, 18.0]}
    split = run.median_run(parts, "total", "x")
    assert split["total"] == 20.0 and split["parts"] == {"a": 2.0, "overhead": 18.0}
    assert sum(split["parts"].values()) == split["total"] and "median of 3 runs" in split["what"]
    assert run.median_run({"total": [5.0, 7.0], "a": [5.0, 7.0]}, "total", "y")["total"] == 5.0


def test_a_paired_ratio_is_the_median_of_the_rounds_ratios_not_the_ratio_of_the_medians():
    results = run.Results("full")
    # Round by round the module is twice as slow; drift makes the medians' ratio look better (1.5).
    results.add("paired.dump-module.256", "paired", "m", [1.0, 2.0, 6.0])
    results.add("paired.dump-criu.256", "paired", "c", [0.5, 1.0, 3.0])
    results.add("paired.dump-podman.256", "paired", "p", [2.0, 1.0, 10.0])
    entry = run.paired_ratio(results, "r", "m/c", "paired.dump-module.256", "paired.dump-criu.256", "<= 2")
    assert entry["value"] == 2.0 and entry["met"] is True and entry["per_round"] == [2.0, 2.0, 2.0]
    entry = run.paired_ratio(results, "r2", "m/p", "paired.dump-module.256", "paired.dump-podman.256", "<= 1", "x")
    assert entry["per_round"] == [0.5, 0.6, 2.0] and entry["value"] == 0.6 and entry["met"] is True
    assert entry["note"].startswith("x; median of 3 per-round ratios") and "ratio of the medians 1.00" in entry["note"]
    assert run.paired_ratio(results, "r3", "missing", "paired.dump-module.256", "nothing") is None
    results.add("short", "paired", "s", [1.0])
    try:
        run.paired_ratio(results, "r4", "short", "short", "paired.dump-criu.256")
    except SystemExit as exc:
        assert "one sample per round" in str(exc)
    else:
        raise AssertionError("rounds of different counts were paired")


def test_the_targets_size_is_256_mib_when_measured():
    assert run.target_size({"sizes": [64, 256, 1024]}) == 256 and run.target_size({"sizes": [64]}) == 64
