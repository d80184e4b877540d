# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint's run before any container is touched (runner.run): what it registers and refuses first."""

from __future__ import annotations

import json
import os

from ansible.module_utils.common.parameters import remove_values

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import runner
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import run_lock
from ansible_collections.fleet.checkpoint.plugins.modules.docker_checkpoint import argument_spec

KEY = "k3y-f1le-c0ntents-never-shown-4a9e"


class FakeModule:
    """The part of AnsibleModule the run uses (runner.Module)."""

    def __init__(self, **params):
        self.params = {key: spec.get("default") for key, spec in argument_spec().items()}
        self.params.update(params)
        self.check_mode = True
        self.no_log_values = set()
        self.warnings = []

    def warn(self, warning):
        self.warnings.append(warning)

    def get_bin_path(self, arg):
        return None

    def run_command(self, args, handle_exceptions=True):
        raise AssertionError(f"nothing may run before the refusal: {args}")


def test_the_key_files_contents_are_never_shown(tmp_path):
    """Issue 20, finding 9: encryption_key is no_log, but the contents of encryption_key_file were not: any message
    that quoted them would have shown the key. They join the module's no-log values as soon as they are read (the
    run then stops at a Docker daemon that is not there, so that nothing on this machine is needed or touched)."""
    key_file = tmp_path / "archive.key"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o600)
    module = FakeModule(name="cp", container="web", state="exported", archive_dir=str(tmp_path / "archives"),
                        encryption_key_file=str(key_file), docker_host=f"unix://{tmp_path}/no-docker.sock")
    answer, failed = runner.run(module)
    assert failed, answer
    assert KEY in module.no_log_values, answer["msg"]
    # What AnsibleModule does with every answer: a message quoting the key shows it masked.
    shown = json.dumps(remove_values(dict(answer, msg=f"{answer['msg']} ({KEY})"), module.no_log_values))
    assert KEY not in shown and "********" in shown
    assert not (tmp_path / "archives").exists()


def test_without_a_key_file_nothing_is_registered(tmp_path):
    module = FakeModule(name="cp", container="web", state="exported", archive_dir=str(tmp_path / "archives"),
                        docker_host=f"unix://{tmp_path}/no-docker.sock")
    answer, failed = runner.run(module)
    assert failed, answer
    assert module.no_log_values == set()


def test_a_restore_that_went_through_gives_the_run_lock_back_and_one_that_failed_keeps_it(tmp_path, monkeypatch):
    path = tmp_path / "run.lock"
    monkeypatch.setattr(run_lock, "DEFAULT_PATH", str(path))
    outcome = {"failed": False}

    def restore(module, diff):
        return {"changed": True, "msg": "restored"}, outcome["failed"]

    monkeypatch.setattr(runner, "_run", restore)
    for failed in (True, False):
        path.write_text(json.dumps({"owner": "run-1", "expires": 9e12}))
        outcome["failed"] = failed
        module = FakeModule(state="restored", manifest_path="/m.json", release_run_lock="run-1")
        module.check_mode = False
        answer, unused = runner.run(module)
        assert answer["run_lock_released"] is not failed and path.exists() is failed, answer
    # Another run's lock stays, with a warning; without release_run_lock nothing is said about it.
    path.write_text(json.dumps({"owner": "run-2", "expires": 9e12}))
    answer, unused = runner.run(module)
    assert answer["run_lock_released"] is False and path.exists() and "run-2" in module.warnings[-1]
    answer, unused = runner.run(FakeModule(state="restored", manifest_path="/m.json"))
    assert "run_lock_released" not in answer


def test_release_run_lock_goes_only_with_a_restore_from_the_manifest(tmp_path):
    module = FakeModule(name="cp", container="web", release_run_lock="run-1",
                        docker_host=f"unix://{tmp_path}/no-docker.sock")
    answer, failed = runner.run(module)
    assert failed and "release_run_lock" in answer["msg"] and answer["run_lock_released"] is False, answer
