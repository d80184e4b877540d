# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sending end of a streamed checkpoint (send.present_and_send) against a fake Engine: a target that is not
ready stops everything before the container is touched, and the failure still reports what was found."""

from __future__ import annotations

import os

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError

CID = "d" * 64
SEND_TO = {"host": "web-2", "user": "root", "port": 22, "directory": "/var/lib/in"}


class FakeAPI:
    """A running container with restart policy always; records every call that would change it."""

    kind = "tcp"  # PIDs are not this host's: no waiting on them

    def __init__(self):
        self.changes = []

    def get(self, path, **query):
        assert path == f"/containers/{CID}/json"
        return {"Id": CID, "Name": "/web", "State": {"Running": True, "Pid": os.getpid(), "Status": "running"},
                "HostConfig": {"RestartPolicy": {"Name": "always"}}}

    def post(self, path, **kwargs):
        self.changes.append(path)

    def delete(self, path, **query):
        self.changes.append(path)


def test_a_target_not_ready_touches_nothing_and_reports_what_was_found(tmp_path, monkeypatch):
    monkeypatch.setattr(container, "host_pids", lambda ctx, cid: [os.getpid()])

    def not_ready(send_to, result, name, made=False):
        raise OpError("root@web-2:/var/lib/in/web-move.stream is not ready to receive 'move' of web")

    monkeypatch.setattr(send, "connect", not_ready)
    api = FakeAPI()
    ctx = HostContext(api=api, root_dir=str(tmp_path))
    with pytest.raises(OpError, match="not ready to receive") as info:
        send.present_and_send(ctx, CID, dump.DumpOptions("move"), SEND_TO)
    partial = info.value.partial
    assert partial["container"] == "web" and partial["id"] == CID and partial["method"] == "api"
    assert partial["restart_policy"] == {"Name": "always", "MaximumRetryCount": 0}
    assert not partial.get("modified") and api.changes == []
    assert not (tmp_path / "containers" / CID / "checkpoints").exists()
