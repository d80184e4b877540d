# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""CRIU's log under Docker: where runc.conf has it written, and its lines in failure messages."""

from __future__ import annotations

import os

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.log import criu_log_excerpt, criu_log_path


CRIU_LOG = """\
(00.000000) Version: 4.2.1 (gitid 0)
(00.000100) Running on host Linux 6.18.0
(00.000200) Warn  (criu/kerndat.c:1103): Can't keep kdat cache on non-tempfs
(00.000300) Error (criu/cr-dump.c:1578): RLIMIT_NOFILE 1048576 is higher than the dump limit
(00.000400) Dumping processes (pid: 1354 comm: sh)
(00.000500) Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider using --tcp-established option.
(00.000600) Error (criu/cr-dump.c:2099): Dumping FAILED.
"""


def test_criu_log_path_from_runc_conf(tmp_path):
    conf = tmp_path / "runc.conf"
    conf.write_text("# set by fleet.checkpoint.criu\ntcp-established\nlog-file   /var/log/criu/criu.log  \n"
                    "log-file-other x\n", encoding="utf-8")
    assert criu_log_path(str(conf)) == "/var/log/criu/criu.log"


def test_criu_log_path_without_a_log_file(tmp_path):
    conf = tmp_path / "runc.conf"
    conf.write_text("tcp-established\nlog-file\n# log-file /commented\n", encoding="utf-8")
    assert criu_log_path(str(conf)) is None
    assert criu_log_path(str(tmp_path / "missing.conf")) is None
    assert criu_log_path(str(tmp_path)) is None  # a directory cannot be read


def test_criu_log_excerpt_keeps_errors_and_warnings_without_the_harmless(tmp_path):
    log = tmp_path / "criu.log"
    log.write_text(CRIU_LOG, encoding="utf-8")
    assert criu_log_excerpt(str(log)) == [
        "(00.000200) Warn  (criu/kerndat.c:1103): Can't keep kdat cache on non-tempfs",
        "(00.000500) Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider using --tcp-established option.",
        "(00.000600) Error (criu/cr-dump.c:2099): Dumping FAILED.",
    ]


def test_criu_log_excerpt_limit_keeps_the_last_lines(tmp_path):
    log = tmp_path / "criu.log"
    log.write_text(CRIU_LOG, encoding="utf-8")
    assert criu_log_excerpt(str(log), limit=1) == ["(00.000600) Error (criu/cr-dump.c:2099): Dumping FAILED."]
    lines = "".join(f"  Error number {n}  \n" for n in range(40))
    log.write_text(lines, encoding="utf-8")
    excerpt = criu_log_excerpt(str(log))
    assert len(excerpt) == 15
    assert excerpt[0] == "Error number 25"
    assert excerpt[-1] == "Error number 39"


def test_criu_log_excerpt_since_leaves_out_an_older_log(tmp_path):
    log = tmp_path / "criu.log"
    log.write_text(CRIU_LOG, encoding="utf-8")
    os.utime(log, (1000, 1000))
    assert criu_log_excerpt(str(log), since=2000) == []
    assert len(criu_log_excerpt(str(log), since=1000)) == 3
    assert len(criu_log_excerpt(str(log), since=500)) == 3


def test_criu_log_excerpt_without_a_log(tmp_path):
    assert criu_log_excerpt(None) == []
    assert criu_log_excerpt("") == []
    assert criu_log_excerpt(str(tmp_path / "missing.log")) == []
    assert criu_log_excerpt(str(tmp_path / "missing.log"), since=0) == []


def test_criu_log_excerpt_survives_bad_bytes(tmp_path):
    log = tmp_path / "criu.log"
    log.write_bytes(b"Error: \xff\xfe broken\nfine\n")
    assert criu_log_excerpt(str(log)) == ["Error: \ufffd\ufffd broken"]
