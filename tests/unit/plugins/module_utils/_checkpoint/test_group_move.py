# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""consistent=true with send_to and receive_timeout: a group moved together. On the sending side, every member's
connection made before the group is frozen (over SSH), or each waiting for the relay once the group is dumped; on
the receiving side, nothing restored before every stream arrived, and nothing this call created left when the group
cannot be restored. The group's own dump and restore (test_group.py), the sends and receives (test_send.py,
test_receive.py) are stood in for, so that their order can be seen."""

from __future__ import annotations

import os
import time

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_apply
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import disk_walk
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_dump
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import group_send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.fleet_barrier import FleetBarrier

NAMES = ["producer", "consumer"]
SSH = {"via": "ssh", "host": "b", "directory": "/srv/in", "precopy": True}
RELAY = {"via": "relay", "directory": "/srv/in"}


def cid(name, host="a"):
    return (host + name * 64)[:64]


class VolumesAPI:
    """The Engine's volume list: `shared-old` was on the target before the group's receive began."""

    def get(self, path, **unused):
        assert path == "/volumes"
        return {"Volumes": [{"Name": "shared-old"}]}


def ctx_of(tmp_path, check_mode=False):
    return HostContext(api=VolumesAPI(), root_dir=str(tmp_path), check_mode=check_mode, criu_log=None)


class Sender:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def abort(self):
        self.log.append(("abort", self.name))


@pytest.fixture
def sending(monkeypatch):
    """The group's dump, the connections and the sends stood in for, logged in order."""
    state = {"log": [], "refuse_connect": set(), "fail_send": set(), "dump_fails": False, "shared": False,
             "together": []}
    log = state["log"]

    def present_group(ctx, refs, opts, workers=None, barrier=None, prepare=None):
        plans = [dump.DumpPlan({"Id": cid(ref)}, {"container": ref, "id": cid(ref), "warnings": []}, "", False,
                               "containerd", {"Name": "no"}, []) for ref in refs]
        if prepare is not None:
            try:
                prepare(plans)
            except OpError as exc:
                return [{"container": ref, "failed": True, "msg": str(exc)} for ref in refs], {"members": refs}
        log.append(("dump", tuple(refs), workers))
        state["barrier"] = barrier
        if state.get("barrier_aborts"):  # the other hosts' parts could not join: thawed, nothing dumped
            return [{"container": ref, "failed": True, "msg": "the fleet's barrier was aborted"} for ref in refs], \
                {"members": refs, "barrier": "abort"}
        if state["dump_fails"]:
            return [{"container": ref, "failed": True, "msg": "undone"} for ref in refs], {"undone": True}
        return [{"container": ref, "id": cid(ref), "path": f"/c/{ref}", "action": "checkpointed", "warnings": []}
                for ref in refs], {"members": list(refs), "frozen_seconds": 0.1}

    def connect(send_to, result, name, made=False):
        if result["container"] in state["refuse_connect"]:
            raise OpError(f"{result['container']}: not ready")
        log.append(("connect", result["container"]))
        return Sender(log, result["container"])

    def send_checkpoint(ctx, result, name, send_to, timeout, sender=None, trees=None, precopied=None,
                        volumes_from=None):
        if state["shared"]:
            log.append(("send", result["container"], [tree.name or tree.kind for tree in trees], volumes_from,
                        precopied))
            if result["container"] == "producer":
                time.sleep(0.2)  # the consumer, sent at the same time, would start first
            log.append(("sent", result["container"]))
            result["sent"] = {"bytes": 1}
            return
        log.append(("send", result["container"], sender is not None, precopied))
        if result["container"] in state["fail_send"]:
            raise OpError(f"sending {result['container']} failed")
        result["sent"] = {"bytes": 1}

    monkeypatch.setattr(group_dump, "present_group", present_group)
    monkeypatch.setattr(send, "connect", connect)
    monkeypatch.setattr(send, "send_checkpoint", send_checkpoint)

    def disk_trees(ctx, found, send_to, leave, together=()):
        state["together"] = list(together)
        return [disk_walk.Tree("rootfs", "/upper")] + ([disk_walk.Tree("volume", "/v", "shared")]
                                                       if state["shared"] else [])

    monkeypatch.setattr(send, "disk_trees", disk_trees)
    monkeypatch.setattr(container, "inspect", lambda ctx, ref: {"Id": ref})
    monkeypatch.setattr(send, "precopy", lambda ctx, planned, name, trees, sender, timeout:
                        log.append(("precopy", planned.result["container"])) or "ahead")
    return state


def opts():
    return dump.DumpOptions("move", leave_running=False)


def test_over_ssh_every_member_is_connected_before_the_group_is_frozen(sending, tmp_path):
    results, group = group_send.present_group_and_send(ctx_of(tmp_path), NAMES, opts(), SSH, workers=4)
    log = sending["log"]
    assert log[:4] == [("connect", "producer"), ("connect", "consumer"), ("precopy", "producer"),
                       ("precopy", "consumer")]
    assert log[4] == ("dump", tuple(NAMES), 4)
    assert sorted(log[5:]) == [("send", "consumer", True, "ahead"), ("send", "producer", True, "ahead")]
    assert [result["sent"] for result in results] == [{"bytes": 1}, {"bytes": 1}]
    assert group["members"] == NAMES


def test_a_volume_the_members_share_travels_once_before_the_member_that_mounts_it_too(sending, tmp_path):
    """It must exist on the target before the other member's container is created there (Docker would make an
    empty one for its mount): the first member carries it, the other's send begins once that one's has ended."""
    sending["shared"] = True
    results, unused = group_send.present_group_and_send(ctx_of(tmp_path), NAMES, opts(), SSH, workers=4)
    assert sending["together"] == [cid(name) for name in NAMES]  # the volume's other user stops with it
    sends = [entry for entry in sending["log"] if entry[0] in ("send", "sent")]
    # The consumer's stream names the volume the producer carries (its container waits for it on the target), and
    # has no pre-copy of its own (that would make its container there before the volume).
    assert sends == [("send", "producer", ["rootfs", "shared"], None, "ahead"), ("sent", "producer"),
                     ("send", "consumer", ["rootfs"], {"shared": "producer"}, None), ("sent", "consumer")]
    assert ("precopy", "consumer") not in sending["log"]
    assert not any(result.get("failed") for result in results)


def test_through_the_relay_the_group_is_dumped_first_and_sent_one_after_the_other(sending, tmp_path):
    results, unused = group_send.present_group_and_send(ctx_of(tmp_path), NAMES, opts(), RELAY, workers=1)
    # The dumps go at once (no workers limit); the relay takes the streams in the members' order, each sender
    # meeting it for its own turn.
    assert sending["log"] == [("dump", tuple(NAMES), None), ("connect", "producer"), ("send", "producer", True, None),
                              ("connect", "consumer"), ("send", "consumer", True, None)]
    assert not any(result.get("failed") for result in results)


def test_through_the_relay_a_member_that_fails_ends_the_relays_turn_at_once(sending, tmp_path):
    """The relay waits for each member in turn: one that failed without a word would hold it (and every member
    after it) until its connect_timeout. Met first, the failure aborts the stream the relay is carrying."""
    sending["fail_send"].add("producer")
    results, unused = group_send.present_group_and_send(ctx_of(tmp_path), NAMES, opts(), RELAY, workers=1)
    assert sending["log"][1:4] == [("connect", "producer"), ("send", "producer", True, None), ("abort", "producer")]
    assert results[0]["failed"] and not results[1].get("failed")


def test_a_target_not_ready_for_one_member_refuses_the_group_untouched(sending, tmp_path):
    sending["refuse_connect"].add("consumer")
    results, unused = group_send.present_group_and_send(ctx_of(tmp_path), NAMES, opts(), SSH)
    assert all(result["failed"] for result in results)
    assert "consumer: not ready" in results[0]["msg"]
    assert sending["log"] == [("connect", "producer"), ("abort", "producer")]  # no dump, nothing sent


def test_a_group_undone_sends_nothing_and_lets_the_target_go(sending, tmp_path):
    sending["dump_fails"] = True
    results, unused = group_send.present_group_and_send(ctx_of(tmp_path), NAMES, opts(), SSH)
    assert all(result["failed"] for result in results)
    sent_or_aborted = [entry for entry in sending["log"] if entry[0] in ("send", "abort")]
    assert sent_or_aborted == [("abort", "producer"), ("abort", "consumer")]


def test_a_part_of_a_group_spread_over_several_sources_meets_the_others_connected_and_frozen(sending, tmp_path):
    barrier = FleetBarrier(str(tmp_path / "barrier"), 30)
    results, unused = group_send.present_group_and_send(ctx_of(tmp_path), NAMES, opts(), SSH, barrier=barrier)
    assert sending["barrier"] is barrier  # the dump waits there, frozen, once every member is connected
    assert sending["log"][:2] == [("connect", "producer"), ("connect", "consumer")]
    assert not any(result.get("failed") for result in results)


def test_a_part_whose_barrier_is_aborted_sends_nothing_and_aborts_its_streams(sending, tmp_path):
    sending["barrier_aborts"] = True
    barrier = FleetBarrier(str(tmp_path / "barrier"), 30)
    results, group = group_send.present_group_and_send(ctx_of(tmp_path), NAMES, opts(), SSH, barrier=barrier)
    assert all(result["failed"] for result in results) and group["barrier"] == "abort"
    sent_or_aborted = [entry for entry in sending["log"] if entry[0] in ("send", "abort")]
    assert sent_or_aborted == [("abort", "producer"), ("abort", "consumer")]  # the target's receive fails


def test_a_member_that_cannot_be_sent_says_to_restore_the_group_together(sending, tmp_path):
    sending["fail_send"].add("consumer")
    results, unused = group_send.present_group_and_send(ctx_of(tmp_path), NAMES, opts(), SSH)
    assert not results[0].get("failed")
    assert results[1]["failed"] and "sending consumer failed" in results[1]["msg"]
    assert "restore the group here together with consistent=true" in results[1]["msg"]


# -- the receiving end -------------------------------------------------------------------------------------------------
@pytest.fixture
def receiving(monkeypatch, tmp_path):
    """Each member's receive stood in for (creating its container here, installing its checkpoint with the group
    the sending host recorded), the group's restore and the removal of what a receive created, logged."""
    state = {"log": [], "fail_stream": set(), "restore_fails": False}
    log = state["log"]

    def receive_one(ctx, ref, opts):
        if ref in state["fail_stream"]:
            raise OpError(f"receiving {ref} failed")
        here = opts.here(ref)
        path = store.checkpoint_dir(ctx.root_dir, cid(here, "b"), opts.name)
        os.makedirs(path)
        store.write_metadata(path, {"group": {"members": NAMES, "ids": [cid(name) for name in NAMES]}})
        log.append(("received", ref))
        # The producer carries the volume both share; both mount one that was here already.
        mounts = [{"Type": "volume", "Name": "shared"}, {"Type": "volume", "Name": "shared-old"},
                  {"Type": "bind", "Source": "/etc/app"}]
        return {"inspect": {"Id": cid(here, "b"), "Name": f"/{here}", "Mounts": mounts}, "created": True,
                "bytes": 10, "waited_seconds": 0.1, "seconds": 0.2, "finished_at": 1.0,
                "disk": {"volumes": [f"{here}-data"] + (["shared"] if ref == "producer" else [])}, "lazy": None}

    def restored_group(ctx, refs, opts, held_at_most=None, barrier=None):
        assert opts.receive is None
        log.append(("restore", tuple(refs)))
        if state["restore_fails"]:
            return ([{"container": ref, "failed": True, "msg": "not restored"} for ref in refs],
                    {"members": refs, "aborted": True})
        return [{"container": ref, "action": "restored", "warnings": []} for ref in refs], {"members": refs}

    def abandon(ctx, container_id, volumes):
        log.append(("abandon", container_id, tuple(volumes)))
        return ["the container created for it"]

    def drop_volumes(ctx, made):
        log.append(("drop", tuple(made)))
        return list(made)

    monkeypatch.setattr(receive, "receive", receive_one)
    monkeypatch.setattr(disk_apply, "drop_volumes", drop_volumes)
    monkeypatch.setattr(group_restore, "restored_group", restored_group)
    monkeypatch.setattr(restore, "abandon_received", abandon)
    return state


def restore_opts(tmp_path, **rename):
    receiving = receive.ReceiveOptions("move", str(tmp_path / "in"), 60, create=True, rename=rename)
    return restore.RestoreOptions("move", create=True, receive=receiving)


def test_the_group_is_restored_only_once_every_stream_arrived_and_knows_its_members_here(receiving, tmp_path):
    results, unused = group_receive.received_group(ctx_of(tmp_path), NAMES,
                                                   restore_opts(tmp_path, consumer="consumer-2"))
    log = receiving["log"]
    assert sorted(log[:2]) == [("received", "consumer"), ("received", "producer")]
    assert log[2:] == [("restore", ("producer", "consumer-2"))]
    assert [result["created"] for result in results] == [True, True]
    assert results[1]["renamed_from"] == "consumer" and results[1]["received"]["bytes"] == 10
    recorded = store.read_metadata(store.checkpoint_dir(str(tmp_path), cid("consumer-2", "b"), "move"))["group"]
    assert recorded["members"] == ["producer", "consumer-2"]
    assert recorded["ids"] == [cid("producer", "b"), cid("consumer-2", "b")]
    assert recorded["moved_from"] == NAMES


def test_one_stream_that_fails_restores_nothing_and_removes_what_the_others_created(receiving, tmp_path):
    receiving["fail_stream"].add("consumer")
    results, unused = group_receive.received_group(ctx_of(tmp_path), NAMES, restore_opts(tmp_path))
    assert ("restore", ("producer", "consumer")) not in receiving["log"]
    assert receiving["log"][1:] == [("abandon", cid("producer", "b"), ()), ("drop", ("producer-data", "shared"))]
    assert results[1]["msg"] == "receiving consumer failed"
    assert results[0]["failed"] and "the stream of consumer (of the same group) failed" in results[0]["msg"]
    assert "removed again" in results[0]["msg"] and "created" not in results[0]


def test_a_group_that_cannot_be_restored_leaves_nothing_it_created(receiving, tmp_path):
    receiving["restore_fails"] = True
    results, unused = group_receive.received_group(ctx_of(tmp_path), NAMES, restore_opts(tmp_path))
    # Every container first (a volume one carries, the other mounts), then the volumes made for them, each once;
    # never the volume that was here before.
    assert receiving["log"][3:] == [("abandon", cid("producer", "b"), ()), ("abandon", cid("consumer", "b"), ()),
                                    ("drop", ("producer-data", "shared")), ("drop", ("consumer-data",))]
    assert all(result["failed"] and "removed again" in result["msg"] and "created" not in result
               for result in results)


def test_check_mode_waits_for_nothing(receiving, tmp_path, monkeypatch):
    monkeypatch.setattr(receive, "predict", lambda ctx, ref, opts: {"container": ref, "action": "restored"})
    results, unused = group_receive.received_group(ctx_of(tmp_path, check_mode=True), NAMES, restore_opts(tmp_path))
    assert [result["action"] for result in results] == ["restored", "restored"]
    assert receiving["log"] == []


class LateVolumeAPI:
    """The carried volume appears after a few lookups (the carrier's receive makes it)."""

    def __init__(self, after):
        self.after, self.lookups = after, 0

    def get(self, path, **unused):
        if path == "/volumes":
            return {"Volumes": []}
        self.lookups += 1
        if self.lookups <= self.after:
            raise DockerAPIError(f"no such volume: {path}", 404)
        return {"Name": path.split("/")[-1]}


def test_a_member_makes_its_container_only_once_the_volume_another_carries_is_here(tmp_path):
    api = LateVolumeAPI(after=3)
    wait = group_receive._awaiting(HostContext(api=api, root_dir=str(tmp_path)), NAMES, 5)
    wait("consumer", {"shared": "producer"})
    assert api.lookups == 4
    with pytest.raises(OpError, match="carried by stranger, which this call does not receive"):
        wait("consumer", {"shared": "stranger"})
    with pytest.raises(OpError, match="volume shared, which producer carries for consumer, is not here after 0s"):
        group_receive._awaiting(HostContext(api=LateVolumeAPI(after=10 ** 6), root_dir=str(tmp_path)), NAMES, 0)(
            "consumer", {"shared": "producer"})


def test_without_the_list_of_volumes_only_the_carried_ones_are_removed(receiving, tmp_path, monkeypatch):
    receiving["restore_fails"] = True
    monkeypatch.setattr(group_receive, "_volumes_here", lambda ctx: None)
    group_receive.received_group(ctx_of(tmp_path), NAMES, restore_opts(tmp_path))
    dropped = [entry for entry in receiving["log"] if entry[0] == "drop"]
    assert dropped == [("drop", ("producer-data", "shared")), ("drop", ("consumer-data",))]


def test_a_member_restored_but_removed_with_its_failed_group_is_reported_failed(receiving, tmp_path, monkeypatch):
    def half(ctx, refs, opts, held_at_most=None, barrier=None):
        return ([{"container": refs[0], "action": "restored", "changed": True, "warnings": []},
                 {"container": refs[1], "failed": True, "action": "failed", "msg": "not restored"}],
                {"members": refs})

    monkeypatch.setattr(group_restore, "restored_group", half)
    results, unused = group_receive.received_group(ctx_of(tmp_path), NAMES, restore_opts(tmp_path))
    assert results[0]["failed"] and "created" not in results[0]
    assert results[0]["msg"].startswith("restored, but the group's restore failed for another member; the container "
                                        "created for it")
