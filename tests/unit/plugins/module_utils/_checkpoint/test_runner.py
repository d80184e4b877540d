# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint's run before any container is touched (runner.run): what it registers and refuses first."""

from __future__ import annotations

import json
import os

from ansible.module_utils.common.parameters import remove_values

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import runner
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
