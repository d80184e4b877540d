# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.kernel import effective_minimum, kernel_floor
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.version import (
    at_least,
    compare,
    kernel_version,
    parse_criu_version,
    upstream_version,
    version_tuple,
)


@pytest.mark.parametrize(
    "output, version",
    [
        ("Version: 4.1.1\n", "4.1.1"),
        ("Version: 3.17.1\n", "3.17.1"),
        ("Version: 4.2\nGitID: v4.2-13-g78a7120\n", "4.2"),
        ("Warn  (criu/kerndat.c:1234): something\nVersion: 4.1\nGitID: 78a7120\n", "4.1"),
        ("criu: command not found", None),
        ("", None),
    ],
)
def test_parse_criu_version(output, version):
    assert parse_criu_version(output) == version


@pytest.mark.parametrize(
    "left, right, result",
    [
        ("4.1", "4.1.0", 0),
        ("4.1.1", "4.1", 1),
        ("3.17.1", "4.1", -1),
        ("3.17.1", "3.9", 1),
        ("4.10", "4.9.9", 1),
        ("2.0", "2", 0),
    ],
)
def test_compare(left, right, result):
    assert compare(left, right) == result
    swapped = {"left": right, "right": left}
    assert compare(swapped["left"], swapped["right"]) == -result


def test_at_least():
    assert at_least("4.1.1", "4.1")
    assert not at_least("3.17.1", "4.1")


@pytest.mark.parametrize(
    "package, upstream",
    [("3.17.1-2+deb12u2", "3.17.1"), ("1:4.1.1-1", "4.1.1"), ("4.2-13.fc44", "4.2"), ("4.2.1-1", "4.2.1")],
)
def test_upstream_version(package, upstream):
    assert upstream_version(package) == upstream


@pytest.mark.parametrize("bad", ["", "GitID: abc", "v4.1", None])
def test_bad_versions_are_refused(bad):
    with pytest.raises(ValueError):
        version_tuple(bad)


@pytest.mark.parametrize(
    "release, parsed",
    [("6.18.44-fc-v669", (6, 18, 44)), ("6.1.0-28-amd64", (6, 1, 0)), ("5.14.0-503.el9.x86_64", (5, 14, 0)), ("6.13", (6, 13, 0))],
)
def test_kernel_version(release, parsed):
    assert kernel_version(release) == parsed


@pytest.mark.parametrize(
    "release, floor",
    [("6.18.44-fc-v669", "4.1"), ("6.13.0", "4.1"), ("7.0.1", "4.1"), ("6.12.9-amd64", None), ("5.15.0-1", None)],
)
def test_kernel_floor(release, floor):
    found = kernel_floor(release)
    assert (found["criu"] if found else None) == floor
    if found:
        assert "vdso" in found["reason"].lower() and "2532" in found["source"]


def test_effective_minimum_takes_the_higher_of_user_and_kernel():
    version, why = effective_minimum("2.0", "6.18.44-fc-v669")
    assert version == "4.1" and "kernel 6.18.44-fc-v669 needs CRIU 4.1" in why
    assert effective_minimum("4.2", "6.18.44")[0] == "4.2"
    assert effective_minimum("2.0", "6.1.0-28-amd64") == ("2.0", "min_version 2.0")
