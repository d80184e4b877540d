# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""An import's own steps (issue 20, finding 9): what its result shows of the manifest, how a forced import replaces a
checkpoint, and a container created for an import that then fails."""

from __future__ import annotations

import os

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import import_
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError

MANIFEST = {"files": {"pages-1.img": {"size": 3, "sha256": "0" * 64}}, "method": "api", "created": 1.0,
            "container": {"restart_policy": {"Name": "no"}}}


def test_the_result_shows_no_command_line_label_value_or_mount_source():
    shown = import_.shown_config({
        "env": ["DB_PASSWORD=hunter2", "MODE=prod"], "cmd": ["serve", "--token", "s3cr3t"], "entrypoint": ["/init"],
        "labels": {"vault.token": "abc123", "app": "web"},
        "mounts": [{"type": "bind", "source": "/srv/secrets", "destination": "/run/secrets", "rw": False}],
        "image": {"reference": "web:1"}})
    assert shown["env"] == ["DB_PASSWORD", "MODE"] and shown["labels"] == ["app", "vault.token"]
    assert shown["cmd"] == "(3 arguments, not shown)" and shown["entrypoint"] == "(1 arguments, not shown)"
    assert shown["mounts"] == [{"type": "bind", "destination": "/run/secrets"}]
    assert not [word for word in ("hunter2", "s3cr3t", "abc123", "/srv/secrets") if word in repr(shown)]
    assert shown["image"] == {"reference": "web:1"}


def checkpoint(tmp_path, content):
    path = tmp_path / "checkpoints" / "cp"
    path.mkdir(parents=True)
    (path / "pages-1.img").write_bytes(content)
    return path


def test_a_forced_import_keeps_the_old_checkpoint_until_the_new_one_is_in(tmp_path, monkeypatch):
    """The old checkpoint used to be deleted before the new one was renamed in: a crash between lost both."""
    path = checkpoint(tmp_path, b"old")
    new = tmp_path / "checkpoints" / ".cp.fleet-import"
    new.mkdir()
    (new / "pages-1.img").write_bytes(b"new")
    real = os.rename

    def failing(source, destination):
        if str(source) == str(new):
            raise OSError("the disk went away")
        return real(source, destination)
    monkeypatch.setattr(import_.os, "rename", failing)
    with pytest.raises(OSError):
        import_.install(str(new), MANIFEST, str(path), "archive")
    assert (path / "pages-1.img").read_bytes() == b"old"  # put back
    monkeypatch.setattr(import_.os, "rename", real)
    import_.install(str(new), MANIFEST, str(path), "archive")
    assert (path / "pages-1.img").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["cp"]  # nothing aside left


class Api:
    def __init__(self):
        self.deleted = []

    def delete(self, path, **query):
        self.deleted.append(path)


def test_a_container_created_for_an_import_that_fails_is_removed(tmp_path, monkeypatch):
    api = Api()
    ctx = HostContext(api=api, root_dir=str(tmp_path))
    monkeypatch.setattr(import_, "inspect_or_create", lambda ctx, ref, opts: ({"Id": "ab" * 32, "Name": "/web"}, True))

    def failing(ctx, found, opts, created):
        raise OpError("archive.tar: fails its checksums, nothing imported")
    monkeypatch.setattr(import_, "import_into", failing)
    with pytest.raises(OpError, match="nothing imported; the container created for it was removed"):
        import_.imported(ctx, "web", import_.ImportOptions("cp", None, create=True))
    assert api.deleted == [f"/containers/{'ab' * 32}"]
