# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint's options as the module sees them: its argument spec with the rules given to Ansible
(MUTUALLY_EXCLUSIVE), then the cross-option checks (options.check_options)."""

from __future__ import annotations

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import options
from ansible_collections.fleet.checkpoint.plugins.modules.docker_checkpoint import argument_spec


def params(**overrides):
    values = {key: spec.get("default") for key, spec in argument_spec().items()}
    values.update(name="pre-reboot", container="web")
    values.update(overrides)
    return values


def check_options(values):
    """Every refusal of these option values, in the module's order: Ansible's own (the spec and its declared rules,
    for the options given, that is not None), then, when Ansible accepts them, the cross-option checks."""
    given = {key: value for key, value in values.items() if value is not None}
    validated = ArgumentSpecValidator(argument_spec(), mutually_exclusive=options.MUTUALLY_EXCLUSIVE).validate(given)
    if validated.error_messages:
        return validated.error_messages
    return options.check_options(dict(values, **validated.validated_parameters))


def test_good_options_have_no_errors():
    assert check_options(params()) == []
    assert check_options(params(container=None, all_running=True, filters={"label": "a=b"}, exclude=["db"])) == []
    assert check_options(params(state="exported", archive_dir="/srv/archives")) == []
    assert check_options(params(state="restored", target="web-2")) == []
    assert check_options(params(keep_last=3, max_age="7d")) == []
    assert check_options(params(all_running=False)) == []
    assert check_options(params(state="exported", archive_dir="/srv/archives", encryption_key="k" * 20)) == []


@pytest.mark.parametrize("overrides, fragment", [
    (dict(name="a/b"), "path separator"),
    (dict(name=".."), "'..'"),
    (dict(container="no good"), "not a container name or id"),
    (dict(container=None, containers=[]), "empty list"),
    (dict(target="other"), "only with state=restored"),
    (dict(container=None, containers=["a", "b"], state="exported", archive_path="/x.tar"), "for one container"),
    (dict(state="exported"), "needs archive_path"),
    (dict(state="imported"), "needs archive_path"),
    (dict(state="absent", archive_dir="/srv"), "only with state=exported, imported or restored"),
    (dict(state="restored", target="other", archive_path="/x.tar"), "cannot be combined with an archive"),
    (dict(state="absent", keep_last=2), "keep_last is used only with state=present"),
    (dict(state="restored", leave_running=True), "leave_running is used only with state=present"),
    (dict(encryption_key="k" * 20), "used only with an archive"),
    (dict(state="present", encryption_key_file="/root/key"), "used only with an archive"),
    (dict(keep_last=0), "keep_last must be 1 or more"),
    (dict(max_age="tomorrow"), "not a duration"),
    (dict(max_age="0"), "longer than zero"),
    (dict(filters={"label": "x"}), "only with all_running"),
    (dict(container=None, all_running=True, state="imported", archive_dir="/srv"), "cannot import"),
    (dict(container=None, all_running=True, state="restored", archive_dir="/srv"), "cannot import"),
    (dict(parallel=0), "parallel must be 1 or more"),
    (dict(timeout=0), "timeout and api_timeout"),
    (dict(container=None), "no container selected"),
    (dict(container=None, all_running=False), "no container selected"),
    (dict(all_running=True), "mutually exclusive"),
    (dict(containers=["a"]), "mutually exclusive"),
])
def test_each_bad_option_is_named(overrides, fragment):
    errors = check_options(params(**overrides))
    assert any(fragment in error for error in errors), errors


def test_archive_path_that_is_a_directory_is_refused(tmp_path):
    errors = check_options(params(state="exported", archive_path=str(tmp_path)))
    assert any("is a directory" in error for error in errors)


def test_archive_dir_that_is_a_file_is_refused(tmp_path):
    plain = tmp_path / "file"
    plain.write_text("x")
    errors = check_options(params(state="exported", archive_dir=str(plain)))
    assert any("is not a directory" in error for error in errors)


def test_import_of_a_missing_archive_is_refused(tmp_path):
    errors = check_options(params(state="imported", archive_path=str(tmp_path / "none.tar.zst")))
    assert any("does not exist" in error for error in errors)


SEND_TO = {"host": "web-2", "user": "root", "port": 22, "directory": "/var/lib/fleet-checkpoint/migrate",
           "known_hosts_file": None, "identity_file": None, "python": "python3"}


def test_a_stream_is_sent_by_present_and_received_by_restored():
    assert check_options(params(send_to=SEND_TO)) == []
    assert check_options(params(state="restored", archive_dir="/d", receive_timeout=60, create=True)) == []


@pytest.mark.parametrize("overrides, expected", [
    ({"state": "exported", "archive_dir": "/d", "send_to": SEND_TO}, "send_to is used only with state=present"),
    ({"send_to": dict(SEND_TO, directory="relative")}, "send_to.directory must be an absolute path"),
    ({"send_to": dict(SEND_TO, port=0)}, "send_to.port must be 1-65535"),
    ({"send_to": dict(SEND_TO, host="-oProxyCommand=x")}, "is not a host name or address"),
    ({"state": "restored", "receive_timeout": 60}, "receive_timeout is used only with state=restored and archive_dir"),
    ({"state": "restored", "archive_dir": "/d", "receive_timeout": 0}, "receive_timeout must be 1 second or more"),
    ({"state": "restored", "archive_dir": "/d", "receive_timeout": 5, "encryption_key": "k" * 20},
     "cannot be combined with archive_path, manifest_path or an encryption key"),
])
def test_stream_options_are_checked(overrides, expected):
    errors = check_options(params(**overrides))
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize("overrides, expected", [
    ({"send_to": dict(SEND_TO, user="-oProxyCommand=x")}, "send_to.user"),
    ({"send_to": dict(SEND_TO, user="a b")}, "send_to.user"),
    ({"send_to": dict(SEND_TO, known_hosts_file="/a b")}, "send_to.known_hosts_file"),
    ({"send_to": SEND_TO, "leave_running": True}, "cannot be combined with leave_running"),
])
def test_send_to_refuses_what_would_confuse_ssh_or_run_two_copies(overrides, expected):
    errors = check_options(params(**overrides))
    assert any(expected in error for error in errors), errors


RECEIVE = {"state": "restored", "archive_dir": "/d", "receive_timeout": 60, "create": True, "container": None,
           "containers": ["billing", "web"]}


def test_a_received_container_may_be_renamed():
    assert check_options(params(**RECEIVE, rename={"billing": "billing-2"})) == []
    assert check_options(params(**RECEIVE, rename={"billing": "web", "web": "billing"})) == []  # a swap


@pytest.mark.parametrize("overrides, expected", [
    ({"rename": {"billing": "b2"}, "receive_timeout": None}, "rename is used only when receiving with create=true"),
    ({"rename": {"billing": "b2"}, "create": False}, "rename is used only when receiving with create=true"),
    ({"rename": {"db": "db-2"}}, "rename names 'db', which is not one of the containers that move (billing, web)"),
    ({"rename": {"billing": "-x"}}, "rename.billing must be a container name"),
    ({"rename": {"billing": "a b"}}, "rename.billing must be a container name"),
    ({"rename": {"billing": "web"}}, "rename gives two moving containers the same name (web)"),
])
def test_a_rename_that_cannot_work_is_refused(overrides, expected):
    errors = check_options(params(**dict(RECEIVE, **overrides)))
    assert any(expected in error for error in errors), errors


@pytest.mark.parametrize("filters, expected", [
    ({"label": 5}, ["filters.label: 5 is not a string (give it as a string, for example label: \"5\", or a list of "
                    "strings)"]),
    ({"label": ["app=web", None]}, ["filters.label: None is not a string (give it as a string, for example "
                                    "label: \"None\", or a list of strings)"]),
    ({"status": True}, ["filters.status: True is not a string (give it as a string, for example status: \"True\", "
                        "or a list of strings)"]),
    ({"label": ["app=web", "tier"], "exited": 0, "name": "web"}, []),
])
def test_filter_values_must_be_strings(filters, expected):
    assert options.filter_errors(filters) == expected


@pytest.mark.parametrize("key, value", [("archive_path", "x.tar.zst"), ("archive_dir", "archives"),
                                        ("manifest_path", "run.json")])
def test_paths_must_be_absolute(key, value):
    overrides = {"state": "exported", key: value} if key != "manifest_path" else {key: value}
    errors = check_options(params(**overrides))
    assert any(f"{key} must be an absolute path on the managed host, not {value!r}" in error for error in errors), errors


@pytest.mark.parametrize("send_to, more, expected", [
    ({"memory_rounds": -1}, {}, "send_to.memory_rounds must be from 0 (no pre-copy) to 30"),
    ({"memory_rounds": 31}, {}, "send_to.memory_rounds must be from 0 (no pre-copy) to 30"),
    ({"memory_rounds": 3, "memory_goal": 0}, {}, "send_to.memory_goal is a percentage"),
    ({"memory_rounds": 3, "lazy": True}, {}, "two ways of moving the memory: choose one"),
    ({"memory_rounds": 3, "volumes": "all"}, {}, "send_to.memory_rounds cannot carry disk state yet"),
    ({"memory_rounds": 3}, {"force": True}, "force does not apply"),
])
def test_memory_rounds_are_checked(send_to, more, expected):
    errors = check_options(params(send_to=dict(SEND_TO, **send_to), **more))
    assert any(expected in error for error in errors), errors


def test_memory_rounds_choose_the_pre_copy_move():
    values = params(send_to=dict(SEND_TO, memory_rounds=4))
    assert check_options(values) == []
    given = {key: value for key, value in values.items() if value is not None}
    validated = ArgumentSpecValidator(argument_spec()).validate(given).validated_parameters
    chosen = options.operation(dict(values, **validated), "pre-reboot", None)
    assert chosen.func.__name__ == "send_precopied" and chosen.keywords["send_to"]["memory_rounds"] == 4


def test_consistent_is_for_a_group_checkpointed_and_restored_in_place():
    assert check_options(params(container=None, containers=["web", "db"], consistent=True)) == []
    assert check_options(params(container=None, all_running=True, filters={"label": "com.docker.compose.project=shop"},
                                consistent=True, leave_running=True)) == []
    assert check_options(params(container=None, containers=["web", "db"], state="restored", consistent=True)) == []
    (only,) = check_options(params(state="absent", consistent=True))
    assert only.startswith("consistent is used only with state=present")
    (targeted,) = check_options(params(state="restored", target="web-2", consistent=True))
    assert "cannot be combined with target" in targeted
    (archived,) = check_options(params(state="restored", archive_dir="/srv/a", consistent=True))
    assert "cannot be combined with archive_dir" in archived and "moved with send_to and receive_timeout" in archived


def test_a_group_moves_stop_and_copy():
    group = dict(container=None, containers=["web", "db"], consistent=True)
    assert check_options(params(**group, send_to={"host": "b", "directory": "/srv/in"})) == []
    assert check_options(params(**group, state="restored", archive_dir="/srv/in", receive_timeout=60,
                                create=True)) == []
    (lazy,) = check_options(params(**group, send_to={"host": "b", "directory": "/srv/in", "lazy": True}))
    assert lazy.startswith("consistent=true moves a group stop-and-copy")
    (rounds,) = check_options(params(**group, send_to={"host": "b", "directory": "/srv/in", "memory_rounds": 3}))
    assert "send_to.memory_rounds" in rounds
    (spread,) = check_options(params(**group, state="restored", archive_dir="/srv/in", receive_timeout=60,
                                     barrier_dir="/run/b"))
    assert spread.startswith("barrier_dir cannot be combined with receive_timeout: the target of a group moved from "
                             "several hosts receives every member in one call")


def test_a_group_spread_over_several_sources_sends_straight_to_the_target():
    group = dict(container=None, containers=["web", "db"], consistent=True, barrier_dir="/run/b")
    assert check_options(params(**group, send_to={"host": "b", "directory": "/srv/in"})) == []
    (relayed,) = check_options(params(**group, send_to={"via": "relay", "directory": "/srv/in"}))
    assert relayed.startswith("barrier_dir cannot be combined with send_to.via=relay")
    assert "send straight to the target (SSH)" in relayed


def test_a_barrier_is_for_a_group():
    group = dict(container=None, containers=["web"], consistent=True)
    assert check_options(params(**group, barrier_dir="/run/fleet-checkpoint/barrier-x", barrier_timeout=30)) == []
    (alone,) = check_options(params(barrier_dir="/run/fleet-checkpoint/barrier-x"))
    assert alone == "barrier_dir is used only with consistent=true (a group across hosts)"
    (relative,) = check_options(params(**group, barrier_dir="barrier"))
    assert relative.startswith("barrier_dir must be an absolute path")
    (zero,) = check_options(params(**group, barrier_dir="/run/b", barrier_timeout=0))
    assert zero == "barrier_timeout must be 1 second or more, not 0"
