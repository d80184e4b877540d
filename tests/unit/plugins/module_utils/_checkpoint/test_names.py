# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.names import (
    validate_checkpoint_name,
    validate_container_ref,
)


@pytest.mark.parametrize("name", ["cp1", "pre-reboot-2026-11-23", "a.b_c-d", "0x", "A" * 128])
def test_good_checkpoint_names(name):
    assert validate_checkpoint_name(name) == name


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "empty"),
        (None, "empty"),
        ("a", "at least 2 characters"),
        ("-cp", "start with a letter or digit"),
        (".hidden", "start with a letter or digit"),
        ("cp/../../etc", "path separator"),
        ("cp\\x", "path separator"),
        ("a..b", "'..'"),
        ("cp 1", "not valid"),
        ("cp;rm", "not valid"),
        ("ckpt\n", "not valid"),
        ("é1", "not valid"),
        ("A" * 129, "at most 128"),
    ],
)
def test_bad_checkpoint_names_say_what_is_wrong(name, fragment):
    with pytest.raises(ValueError, match=fragment.replace(".", r"\.").replace("(", r"\(")):
        validate_checkpoint_name(name)


@pytest.mark.parametrize("ref, cleaned", [("web", "web"), ("/web", "web"), ("a1b2c3d4e5f6", "a1b2c3d4e5f6"),
                                          ("my_app.worker-1", "my_app.worker-1")])
def test_container_refs(ref, cleaned):
    assert validate_container_ref(ref) == cleaned


@pytest.mark.parametrize("ref", ["", "  ", "../x", "web/1", "-x", None])
def test_bad_container_refs(ref):
    with pytest.raises(ValueError):
        validate_container_ref(ref)
