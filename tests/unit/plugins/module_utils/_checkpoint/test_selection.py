# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.selection import (
    engine_filters,
    select_containers,
    unique_by_id,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError

WEB = "a1" * 32
DB = "b2" * 32
CACHE = "c3" * 32
NONAME = "d4" * 32


class FakeApi:
    """Answers GET /containers/json with canned summaries and records each query."""

    def __init__(self, summaries):
        self.summaries = summaries
        self.queries = []

    def get(self, path, **query):
        assert path == "/containers/json"
        self.queries.append(query)
        return self.summaries


SUMMARIES = [
    {"Id": WEB, "Names": ["/web"]},
    {"Id": DB, "Names": ["/db", "/web/db-link"]},
    {"Id": CACHE, "Names": ["/cache"]},
    {"Id": NONAME, "Names": []},
]


def params(**overrides):
    base = {"container": None, "containers": None, "all_running": True, "filters": None, "exclude": None,
            "state": "present", "name": "pre-reboot"}
    base.update(overrides)
    return base


def test_engine_filters_encoding():
    assert engine_filters(None) is None
    assert engine_filters({}) is None
    encoded = engine_filters({"label": ["app=web", "tier=front"], "status": "running", "expose": 8080})
    assert json.loads(encoded) == {"label": ["app=web", "tier=front"], "status": ["running"], "expose": ["8080"]}


def test_container_is_taken_as_given_without_asking_the_engine(tmp_path):
    api = FakeApi(SUMMARIES)
    assert select_containers(api, params(container="/web"), str(tmp_path)) == ["web"]
    assert select_containers(api, params(container=WEB[:12]), str(tmp_path)) == [WEB[:12]]
    assert api.queries == []


def test_containers_are_deduplicated_in_order_with_slash_stripped(tmp_path):
    api = FakeApi(SUMMARIES)
    refs = select_containers(api, params(containers=["/web", "db", "web", "/db", "cache"]), str(tmp_path))
    assert refs == ["web", "db", "cache"]
    assert api.queries == []


def test_all_running_present_lists_running_containers_with_filters(tmp_path):
    api = FakeApi(SUMMARIES)
    refs = select_containers(api, params(filters={"label": "app"}), str(tmp_path))
    assert refs == ["web", "db", "cache", NONAME]
    assert api.queries == [{"filters": json.dumps({"label": ["app"]})}]


def test_all_running_present_without_filters_sends_no_query(tmp_path):
    api = FakeApi(SUMMARIES)
    select_containers(api, params(containers=[]), str(tmp_path))
    assert api.queries == [{}]


def test_all_running_with_no_answer(tmp_path):
    assert select_containers(FakeApi(None), params(), str(tmp_path)) == []


@pytest.mark.parametrize("exclude, expected", [
    (["web"], ["db", "cache", NONAME]),
    (["/web", "cache"], ["db", NONAME]),
    (["web/db-link"], ["web", "cache", NONAME]),  # any of a container's names
    ([CACHE[:12]], ["web", "db", NONAME]),  # id prefix of 12 or more
    ([NONAME], ["web", "db", "cache"]),  # full id
    ([WEB[:11]], ["web", "db", "cache", NONAME]),  # too short to be an id prefix
    (["we"], ["web", "db", "cache", NONAME]),  # names match whole
    ([], ["web", "db", "cache", NONAME]),
])
def test_all_running_exclude_by_name_and_id_prefix(tmp_path, exclude, expected):
    assert select_containers(FakeApi(SUMMARIES), params(exclude=exclude), str(tmp_path)) == expected


def make_checkpoint_dir(root, cid, name="pre-reboot"):
    path = root / "containers" / cid / "checkpoints" / name
    path.mkdir(parents=True)
    return path


@pytest.mark.parametrize("state", ["restored", "absent", "exported"])
def test_all_running_other_states_keep_only_containers_with_the_checkpoint(tmp_path, state):
    make_checkpoint_dir(tmp_path, WEB)
    make_checkpoint_dir(tmp_path, CACHE)
    make_checkpoint_dir(tmp_path, DB, name="other-checkpoint")
    file_not_dir = tmp_path / "containers" / NONAME / "checkpoints"
    file_not_dir.mkdir(parents=True)
    (file_not_dir / "pre-reboot").write_text("not a directory", encoding="utf-8")
    api = FakeApi(SUMMARIES)
    refs = select_containers(api, params(state=state, filters={"status": ["exited", "created"]}), str(tmp_path))
    assert refs == ["web", "cache"]
    assert api.queries == [{"all": "1", "filters": json.dumps({"status": ["exited", "created"]})}]


def test_restored_still_applies_exclude(tmp_path):
    make_checkpoint_dir(tmp_path, WEB)
    make_checkpoint_dir(tmp_path, CACHE)
    api = FakeApi(SUMMARIES)
    assert select_containers(api, params(state="restored", exclude=["web"]), str(tmp_path)) == ["cache"]
    assert api.queries == [{"all": "1"}]


def test_restored_with_a_bad_checkpoint_name_is_refused(tmp_path):
    with pytest.raises(ValueError):
        select_containers(FakeApi(SUMMARIES), params(state="restored", name="../x"), str(tmp_path))


def test_all_running_prefers_the_container_own_name_over_a_link_name(tmp_path):
    api = FakeApi([{"Id": DB, "Names": ["/web/db-link", "/db"]}])
    assert select_containers(api, params(), str(tmp_path)) == ["db"]


def test_nothing_is_selected_without_a_selector(tmp_path):
    api = FakeApi([{"Id": "a" * 64, "Names": ["/web"]}])
    assert select_containers(api, params(all_running=None), str(tmp_path)) == []
    assert select_containers(api, params(all_running=False), str(tmp_path)) == []


class InspectAPI:
    def __init__(self, ids):
        self.ids = ids

    def get(self, path, **query):
        ref = path.split("/")[2]
        if ref not in self.ids:
            raise DockerAPIError("no such container", status=404)
        return {"Id": self.ids[ref]}


def test_unique_by_id_drops_a_second_reference_to_the_same_container():
    api = InspectAPI({"web": "a" * 64, "aaaaaaaaaaaa": "a" * 64, "db": "b" * 64})
    assert unique_by_id(api, ["web", "db", "aaaaaaaaaaaa", "ghost", "ghost2"]) == ["web", "db", "ghost", "ghost2"]
