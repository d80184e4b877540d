# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The fast restore's choices (start_from_checkpoint.start) against a fake Docker API, on a real checkpoint tree."""

from __future__ import annotations

import os

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import linked_pages as pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import start_from_checkpoint
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import DaemonUnavailable, OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError

CID = "9abd1e16c3bdd54bb6ba162a3af36ac28c2a4a5453151c09f7f2c410b211120e"


class FakeAPI:
    """Docker's start?checkpoint: answers from a script; records whether the pages were links at each call."""

    def __init__(self, answers, running_after_failure=False):
        self.answers = list(answers)
        self.linked_at_call = []
        self.path = None
        self.running_after_failure = running_after_failure

    def post(self, path, timeout=None, checkpoint=None):
        assert path == f"/containers/{CID}/start" and checkpoint == "cp"
        self.linked_at_call.append(os.path.islink(os.path.join(self.path, "pages-1.img")))
        answer = self.answers.pop(0)
        if answer is not None:
            raise answer

    def get(self, path):
        return {"Id": CID, "State": {"Running": self.running_after_failure}}


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(pages, "auto_dedup", lambda: False)
    monkeypatch.setattr(pages, "containerd_temp_dirs", lambda: [str(tmp_path / "tmp")])
    path = tmp_path / "containers" / CID / "checkpoints" / "cp"
    path.mkdir(parents=True)
    (path / "pages-1.img").write_bytes(b"memory")
    (path / "inventory.img").write_bytes(b"inv")
    return path


def start_linked(api, path, res, method="auto"):
    """Restore checkpoint cp of CID at path (a restore that began at time 0)."""
    api.path = str(path)
    ctx = HostContext(api=api, root_dir="", criu_log="/nonexistent/criu.log")
    start_from_checkpoint.start(ctx, start_from_checkpoint.Start(CID, "cp", str(path), method, 60, 0), res)


def result():
    return {"container": "web", "warnings": []}


def pages_in_place(path):
    return (os.path.isfile(path / "pages-1.img") and not os.path.islink(path / "pages-1.img")
            and not os.path.exists(pages.side_dir(str(path))))


def test_a_linked_restore_calls_docker_with_links_then_puts_the_pages_back(checkpoint):
    api = FakeAPI([None])
    res = result()
    start_linked(api, checkpoint, res)
    assert api.linked_at_call == [True] and res["restore_path"] == "linked" and not res["warnings"]
    assert res["restore_call_seconds"] >= 0 and pages_in_place(checkpoint)


def test_method_api_lets_docker_copy(checkpoint):
    api = FakeAPI([None])
    res = result()
    start_linked(api, checkpoint, res, method="api")
    assert api.linked_at_call == [False] and res["restore_path"] == "copied" and pages_in_place(checkpoint)


def test_auto_falls_back_to_dockers_copy_after_a_failed_linked_restore(checkpoint):
    api = FakeAPI([DockerAPIError("criu failed: type NOTIFY errno 0", status=500), None])
    res = result()
    start_linked(api, checkpoint, res)
    assert api.linked_at_call == [True, False] and res["restore_path"] == "copied"
    assert "restore with linked pages failed" in res["warnings"][0] and pages_in_place(checkpoint)


def test_containerd_does_not_fall_back(checkpoint):
    api = FakeAPI([DockerAPIError("criu failed", status=500)])
    with pytest.raises(OpError, match="restore of web failed"):
        start_linked(api, checkpoint, result(), method="containerd")
    assert api.linked_at_call == [True] and pages_in_place(checkpoint)


def test_no_second_restore_when_the_container_runs_after_all(checkpoint):
    api = FakeAPI([DockerAPIError("timeout waiting", status=500)], running_after_failure=True)
    with pytest.raises(OpError):
        start_linked(api, checkpoint, result())
    assert api.linked_at_call == [True] and pages_in_place(checkpoint)


def test_a_daemon_that_does_not_answer_leaves_the_links_for_the_next_run(checkpoint):
    api = FakeAPI([DockerAPIError("connection refused", status=None)])
    with pytest.raises(DaemonUnavailable):
        start_linked(api, checkpoint, result())
    assert os.path.islink(checkpoint / "pages-1.img")  # Docker may still be restoring through them
    assert pages.put_back(str(checkpoint)) == ["pages-1.img"] and pages_in_place(checkpoint)


def test_auto_dedup_in_criu_config_means_no_links(checkpoint, monkeypatch):
    monkeypatch.setattr(pages, "auto_dedup", lambda: True)
    api = FakeAPI([None])
    res = result()
    start_linked(api, checkpoint, res)
    assert api.linked_at_call == [False] and res["restore_path"] == "copied" and "auto-dedup" in res["warnings"][0]


def test_auto_dedup_is_read_from_criu_config_files(tmp_path):
    conf = tmp_path / "runc.conf"
    conf.write_text("# auto-dedup\ntcp-established\n", encoding="utf-8")
    assert pages.auto_dedup((str(conf), str(tmp_path / "missing.conf"))) is False
    conf.write_text("tcp-established\nauto-dedup\n", encoding="utf-8")
    assert pages.auto_dedup((str(tmp_path / "missing.conf"), str(conf))) is True


def test_put_back_drops_the_pages_of_a_checkpoint_removed_meanwhile(checkpoint):
    pages.link(str(checkpoint))
    side = pages.side_dir(str(checkpoint))
    for name in os.listdir(checkpoint):
        os.unlink(checkpoint / name)
    os.rmdir(checkpoint)  # `docker checkpoint rm` while the pages were aside
    assert pages.put_back(str(checkpoint)) == [] and not os.path.exists(side)
