# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Post-copy's pieces that need no host: command lines, CRIU's configuration, the host checks' verdicts."""

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import lazy_pages

WITH_RESOURCE = "Name:\tpython3\nCapEff:\t000001ffffffffff\n"
WITHOUT_RESOURCE = "Name:\tpython3\nCapEff:\t0000003ffeffffff\n"  # the lab machine's: every capability but 24


def test_the_dump_runs_in_a_network_namespace_of_its_own_and_serves_on_its_loopback():
    argv = lazy_pages.lazy_dump_argv("/usr/sbin/runc", "c0ffee", "/img", "/work", 3)
    assert argv[:6] == ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"']
    assert argv[6:] == ["/usr/sbin/runc", "--root", "/run/docker/runtime-runc/moby", "checkpoint", "--lazy-pages",
                        "--page-server", "127.0.0.1:27000", "--status-fd", "3", "--image-path", "/img",
                        "--work-path", "/work", "--tcp-established", "c0ffee"]
    shell = lazy_pages.lazy_dump_argv("runc", "id", "/i", "/w", 5, tcp_established=False, file_locks=True,
                                      shell_job=True, port=1234)
    assert "--tcp-established" not in shell and shell[-3:] == ["--file-locks", "--shell-job", "id"]
    assert "127.0.0.1:1234" in shell


def test_the_daemon_takes_the_page_connection_it_is_given():
    assert lazy_pages.daemon_argv("criu", "/ckpt", "/work", 7) == [
        "criu", "lazy-pages", "--page-server", "--ps-socket", "7", "-D", "/ckpt", "-W", "/work", "-o",
        "lazy-pages.log"]


def test_the_restore_configuration_says_lazy_and_where_to_meet_the_daemon():
    assert lazy_pages.restore_config("/var/lib/fleet-checkpoint/lazy/w") == (
        "lazy-pages\nwork-dir /var/lib/fleet-checkpoint/lazy/w\n")
    assert lazy_pages.restore_config("/w", "/w/restore.log").endswith("log-file /w/restore.log\n")
    # runc.conf's own settings stay (the annotation's file replaces it for this container), its log and work do not.
    runc_conf = "# by the criu role\nlog-file /var/log/criu/runc.log\ntcp-established\n\nwork-dir /x\n"
    assert lazy_pages.restore_config("/w", runc_conf=runc_conf) == "tcp-established\nlazy-pages\nwork-dir /w\n"


def test_pipes_need_the_capability_or_a_big_enough_pipe_max_size():
    assert lazy_pages.PIPE_PAGES == 819
    assert lazy_pages.has_capability(24, WITH_RESOURCE) and not lazy_pages.has_capability(24, WITHOUT_RESOURCE)
    assert lazy_pages.pipe_problem(WITH_RESOURCE, 1048576) is None
    assert lazy_pages.pipe_problem(WITHOUT_RESOURCE, 4194304) is None
    problem = lazy_pages.pipe_problem(WITHOUT_RESOURCE, 1048576)
    assert "CAP_SYS_RESOURCE" in problem and "fs.pipe-max-size is 1048576" in problem
    assert "sysctl -w fs.pipe-max-size=4194304" in problem
    assert lazy_pages.pipe_problem("Name:\tx\n", 1048576) is not None  # no CapEff line: not assumed


def test_feature_checks_say_which_kernel_feature_is_missing():
    def run_with(rc, out="", err=""):
        seen = []

        def run(argv):
            seen.append(list(argv))
            return rc, out, err
        return run, seen

    run, seen = run_with(0, "uffd-noncoop is supported\n")
    assert lazy_pages.feature_problem(run, "criu", "uffd-noncoop") is None
    assert seen == [["criu", "check", "--feature", "uffd-noncoop"]]
    run, seen = run_with(1, err="Warn  (criu/cr-check.c:824): Dirty tracking is OFF. Memory snapshot will not work.\n")
    problem = lazy_pages.feature_problem(run, "criu", "mem_dirty_track")
    assert "CONFIG_MEM_SOFT_DIRTY" in problem and "stop-and-copy or post-copy" in problem
    run = run_with(1, err="Error (criu/cr-check.c:1100): UFFD is not supported\n")[0]
    assert "CONFIG_USERFAULTFD" in lazy_pages.feature_problem(run, "criu", "uffd-noncoop")
    run = run_with(2)[0]
    assert lazy_pages.feature_problem(run, "criu", "timens") == "criu check --feature timens failed: exit code 2"


def test_lazy_problems_name_every_one():
    def refuses(argv):
        return 1, "", "UFFD is not supported"
    assert len(lazy_pages.lazy_problems(refuses, "criu", WITHOUT_RESOURCE, 1048576)) == 2
    assert lazy_pages.lazy_problems(lambda argv: (0, "", ""), "criu", WITH_RESOURCE, 65536) == []


@pytest.mark.parametrize("version, problem", [
    ("1.45", None), ("1.43", None), ("2.0", None),
    ("1.41", "older than 1.43 (Docker 24)"), ("1.42", "older than 1.43"), ("x", "cannot be read"), ("", "cannot be read"),
])
def test_a_lazy_restore_needs_a_docker_that_takes_annotations(version, problem):
    found = lazy_pages.annotation_problem(version)
    assert (found is None) if problem is None else (problem in found), found
