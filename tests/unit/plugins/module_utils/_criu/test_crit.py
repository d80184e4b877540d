# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""crit.Reader: each image decoded once, crit's failures named."""

from __future__ import annotations

import json

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import crit


def test_an_image_is_decoded_once_and_its_entries_returned():
    calls = []

    def run(argv):
        calls.append(argv)
        return 0, json.dumps({"magic": "PSTREE", "entries": [{"pid": 1, "ppid": 0}]}), ""

    reader = crit.Reader(run, "/usr/bin/crit")
    assert reader.entries("/c/pstree.img") == [{"pid": 1, "ppid": 0}]
    assert reader.entries("/c/pstree.img") == [{"pid": 1, "ppid": 0}]
    assert calls == [["/usr/bin/crit", "decode", "-i", "/c/pstree.img"]]


@pytest.mark.parametrize("answer, message", [
    ((1, "", "Unknown magic 0x0\n"), "crit cannot read /c/x.img: Unknown magic 0x0"),
    ((0, "not json", ""), "something other than JSON"),
    ((0, '{"magic": "X"}', ""), "has no entries"),
])
def test_what_crit_cannot_read_is_named(answer, message):
    reader = crit.Reader(lambda argv: answer, "/usr/bin/crit")
    with pytest.raises(crit.CritError, match=message):
        reader.entries("/c/x.img")


def test_without_crit_the_package_is_named(monkeypatch):
    monkeypatch.setattr(crit, "find", lambda: None)
    with pytest.raises(crit.CritError, match="python3-pycriu"):
        crit.Reader(lambda argv: (0, "", ""))


def test_many_images_are_read_in_one_run_of_crit_s_library(tmp_path):
    script = tmp_path / "crit"
    script.write_text("#!/usr/bin/python3\n")
    calls = []

    def run(argv):
        calls.append(argv)
        if argv[0] == "/usr/bin/python3":
            return 0, json.dumps({"/c/a.img": {"magic": "PSTREE", "entries": [{"pid": 1}]}}), ""
        return 1, "", "Unknown magic 0x0\n"

    reader = crit.Reader(run, str(script))
    reader.preload(["/c/a.img", "/c/b.img"])
    assert calls[0][:2] == ["/usr/bin/python3", "-c"] and calls[0][3:] == ["/c/a.img", "/c/b.img"]
    assert reader.entries("/c/a.img") == [{"pid": 1}] and len(calls) == 1
    # One the library could not read is left to crit itself, for its own message.
    with pytest.raises(crit.CritError, match="Unknown magic"):
        reader.entries("/c/b.img")
    assert calls[1] == [str(script), "decode", "-i", "/c/b.img"]


def test_crit_s_interpreter_is_read_from_its_first_line(tmp_path):
    script = tmp_path / "crit"
    script.write_text("#!/usr/bin/python3 -s\nimport sys\n")
    assert crit.interpreter(str(script)) == "/usr/bin/python3"
    script.write_text("#!/bin/sh\n")
    assert crit.interpreter(str(script)) is None
    assert crit.interpreter(str(tmp_path / "none")) is None
