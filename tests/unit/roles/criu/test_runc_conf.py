# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The criu role's runc.conf template, rendered as Ansible renders it (trim_blocks on)."""

from __future__ import annotations

import pathlib

import jinja2

TEMPLATE = pathlib.Path(__file__).resolve().parents[4] / "roles" / "criu" / "templates" / "runc.conf.j2"


def render(options):
    env = jinja2.Environment(trim_blocks=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE.read_text()).render(criu_runc_options=options, ansible_managed="Ansible managed")


def body(text):
    return [line for line in text.splitlines() if not line.startswith("#")]


def test_flags_values_and_omissions():
    text = render({"tcp-established": True, "log-file": "/var/log/criu/runc.log", "file-locks": False,
                   "mntns-compat-mode": None, "ghost-limit": 2097152})
    assert body(text) == ["ghost-limit 2097152", "log-file /var/log/criu/runc.log", "tcp-established"]


def test_output_is_sorted_and_stable():
    assert render({"b": True, "a": True}) == render({"a": True, "b": True})


def test_no_options_leaves_only_the_header():
    text = render({})
    assert body(text) == []
    assert text.startswith("# Ansible managed\n")


def test_string_true_is_a_value_not_a_flag():
    assert body(render({"tcp-established": "yes"})) == ["tcp-established yes"]
