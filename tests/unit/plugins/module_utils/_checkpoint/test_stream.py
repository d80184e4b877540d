# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The streamed checkpoint's two ends on real pipes and FIFOs: the relay that runs on the target is run here as it is
there (python3 -c RELAY <fifo>), only without the SSH hop in front of it."""

from __future__ import annotations

import io
import json
import os
import shlex
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import time

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream_receive
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import ArchiveError, file_inventory
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import build

INSPECT = {
    "Id": "ab" * 32,
    "Name": "/web",
    "Image": "sha256:" + "c" * 64,
    "Config": {"Image": "busybox"},
    "HostConfig": {"RestartPolicy": {"Name": "always"}},
}
VERSIONS = {"criu": "4.2.1", "docker": "26.1.5", "kernel": "6.18.0"}


def relay(path, wait=1):
    """The relay as ssh runs it on the target, here without the SSH hop."""
    return [sys.executable, "-c", stream.RELAY, str(path), str(wait)]


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def checkpoint(tmp_path):
    cp = tmp_path / "cp"
    (cp / "sub").mkdir(parents=True)
    (cp / "pages-1.img").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (cp / "core-1.img").write_bytes(b"core")
    (cp / "sub" / "x.img").write_bytes(b"x" * 1000)
    manifest = build("move", INSPECT, file_inventory(str(cp)), VERSIONS, "containerd", 1763900000.0)
    return cp, manifest


def tree(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def as_bytes(cp, manifest):
    with tempfile.TemporaryFile() as out:
        count = stream.write_stream(out, str(cp), manifest)
        out.seek(0)
        data = out.read()
    assert count == len(data)
    return data


def test_a_stream_unpacks_to_the_same_files_root_only(checkpoint, tmp_path):
    cp, manifest = checkpoint
    data = as_bytes(cp, manifest)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:  # a tar like any other (GNU tar reads it too)
        assert tar.getnames() == ["manifest.json", "core-1.img", "pages-1.img", "sub/x.img"]
        assert {member.mode for member in tar} == {0o600}
    got = stream_receive.receive(io.BytesIO(data), str(tmp_path / "in"))
    assert got == json.loads(json.dumps(manifest))
    assert tree(tmp_path / "in") == tree(cp)
    assert mode(tmp_path / "in") == 0o700 and mode(tmp_path / "in" / "sub") == 0o700
    assert {mode(p) for p in (tmp_path / "in").rglob("*.img")} == {0o600}


def test_the_destination_can_be_chosen_from_the_manifest(checkpoint, tmp_path):
    cp, manifest = checkpoint
    seen = []

    def where(got):
        seen.append(got["container"]["name"])
        return str(tmp_path / got["checkpoint"])

    stream_receive.receive(io.BytesIO(as_bytes(cp, manifest)), where)
    assert seen == ["web"] and tree(tmp_path / "move") == tree(cp)


def test_an_existing_destination_is_refused(checkpoint, tmp_path):
    cp, manifest = checkpoint
    (tmp_path / "in").mkdir()
    with pytest.raises(ArchiveError, match="already exists"):
        stream_receive.receive(io.BytesIO(as_bytes(cp, manifest)), str(tmp_path / "in"))


def test_a_cut_stream_is_refused(checkpoint, tmp_path):
    cp, manifest = checkpoint
    data = as_bytes(cp, manifest)
    with pytest.raises(ArchiveError, match="not a complete tar"):
        stream_receive.receive(io.BytesIO(data[: len(data) // 2]), str(tmp_path / "in"))


def test_a_corrupted_file_is_refused(checkpoint, tmp_path):
    cp, manifest = checkpoint
    data = bytearray(as_bytes(cp, manifest))
    at = data.index(b"core" + b"\0" * 8) + 1  # core-1.img's content (its header and the manifest name it too)
    data[at] ^= 0xFF
    with pytest.raises(ArchiveError, match="does not match its sha256"):
        stream_receive.receive(io.BytesIO(bytes(data)), str(tmp_path / "in"))


def test_a_file_changed_on_the_source_is_caught_on_the_target(checkpoint, tmp_path):
    cp, manifest = checkpoint
    (cp / "core-1.img").write_bytes(b"CORE")  # same size, other bytes: the manifest is from dump time
    with pytest.raises(ArchiveError, match="core-1.img does not match its sha256"):
        stream_receive.receive(io.BytesIO(as_bytes(cp, manifest)), str(tmp_path / "in"))


def test_a_file_that_changed_size_is_not_sent(checkpoint):
    cp, manifest = checkpoint
    (cp / "core-1.img").write_bytes(b"longer core")
    with pytest.raises(stream.StreamError, match="changed size"):
        as_bytes(cp, manifest)


def _tar(manifest, entries):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|") as tar:
        for name, data in [("manifest.json", json.dumps(manifest).encode())] + entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def test_unlisted_missing_and_misplaced_entries_are_refused(checkpoint, tmp_path):
    cp, manifest = checkpoint
    files = {name: (cp / name).read_bytes() for name in manifest["files"]}
    extra = _tar(manifest, list(files.items()) + [("extra.img", b"?")])
    with pytest.raises(ArchiveError, match="extra.img is not in the manifest"):
        stream_receive.receive(io.BytesIO(extra), str(tmp_path / "a"))
    short = _tar(manifest, [item for item in files.items() if item[0] != "core-1.img"])
    with pytest.raises(ArchiveError, match="without core-1.img"):
        stream_receive.receive(io.BytesIO(short), str(tmp_path / "b"))
    climbing = _tar(manifest, [("../evil", b"x")])
    with pytest.raises(ArchiveError, match="climbs out"):
        stream_receive.receive(io.BytesIO(climbing), str(tmp_path / "c"))
    headless = _tar(manifest, [])[1024:]  # the manifest's header and its one block of data cut off
    with pytest.raises((ArchiveError, ValueError)):
        stream_receive.receive(io.BytesIO(headless), str(tmp_path / "d"))
    assert not (tmp_path.parent / "evil").exists()


def test_ssh_argv_runs_the_relay_with_the_path_quoted():
    argv = stream.ssh_argv({"host": "web-2", "user": "root", "port": 2222, "directory": "/d",
                            "known_hosts_file": "/k", "identity_file": "/i", "python": "python3"}, "/d/a b-c.stream")
    assert argv[:1] == ["ssh"] and "BatchMode=yes" in argv and "UserKnownHostsFile=/k" in argv
    assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == "/i"
    assert argv[-3:-1] == ["--", "root@web-2"] and "-x" in argv and "ClearAllForwardings=yes" in argv
    assert shlex.split(argv[-1]) == ["python3", "-c", stream.RELAY, "/d/a b-c.stream", str(stream.RELAY_WAIT)]


def test_ssh_argv_checks_the_host_key_without_a_known_hosts_file_too():
    """Issue 20, finding 9: without known_hosts_file, ssh_config decided (StrictHostKeyChecking=no or accept-new there
    let any target in). The target must present a key root's known_hosts already has."""
    argv = stream.ssh_argv({"host": "web-2", "user": "root", "port": 22, "directory": "/d"}, "/d/x.stream")
    assert argv[argv.index("StrictHostKeyChecking=yes") - 1] == "-o"
    assert not [word for word in argv if word.startswith("UserKnownHostsFile")]


def test_the_relay_refuses_when_nobody_receives(tmp_path):
    fifo = tmp_path / "x.stream"
    missing = subprocess.run(relay(str(fifo)), input=b"data", capture_output=True, check=False)
    assert missing.returncode != 0 and b"nothing is receiving" in missing.stderr
    os.mkfifo(fifo)  # a FIFO left behind by a receiver that is gone: no reader
    started = time.monotonic()
    orphan = subprocess.run(relay(str(fifo)), input=b"data", capture_output=True, check=False, timeout=20)
    assert orphan.returncode != 0 and b"nothing is receiving" in orphan.stderr
    assert time.monotonic() - started < 10
    plain = tmp_path / "plain"
    plain.write_bytes(b"keep")
    refused = subprocess.run(relay(str(plain)), input=b"data", capture_output=True, check=False)
    assert refused.returncode != 0 and b"not a receiver's FIFO" in refused.stderr
    assert plain.read_bytes() == b"keep"


def send(argv, source_dir, manifest, timeout):
    """What docker_checkpoint does with send_to: connect, wait for the relay's 'ready', then stream."""
    sender = stream.Sender(argv)
    sender.wait_ready(30)
    return sender.send(source_dir, manifest, timeout)


def test_send_relay_fifo_receive_end_to_end(checkpoint, tmp_path):
    cp, manifest = checkpoint
    fifo = str(tmp_path / "web-move.stream")
    reader = stream_receive.FifoReader(fifo)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and mode(fifo) == 0o600
    out = {}
    sender = threading.Thread(target=lambda: out.update(send(relay(fifo), str(cp), manifest, 60)))
    sender.start()
    reader.wait(30)
    assert not os.path.exists(fifo)  # no second sender once the first one is in
    got = stream_receive.receive(reader, str(tmp_path / "in"))
    reader.close()
    sender.join(30)
    assert got["files"] == manifest["files"] and tree(tmp_path / "in") == tree(cp)
    assert out["bytes"] == reader.count > 3 * 1024 * 1024 and out["seconds"] >= 0 and out["started_at"] > 0


def test_send_reports_the_far_side_error(checkpoint, tmp_path):
    cp, manifest = checkpoint
    with pytest.raises(stream.StreamError, match="nothing is receiving"):
        send(relay(str(tmp_path / "nobody.stream")), str(cp), manifest, 60)


def test_send_gives_up_after_its_timeout(checkpoint, tmp_path):
    cp, manifest = checkpoint
    fifo = str(tmp_path / "slow.stream")
    reader = stream_receive.FifoReader(fifo)  # a receiver that never reads: the pipe fills and the sender blocks
    try:
        with pytest.raises(stream.StreamError, match="within timeout=1s"):
            send(relay(fifo), str(cp), manifest, 1)
    finally:
        reader.close()


def test_the_wait_ends_when_nothing_comes_or_the_fifo_is_removed(tmp_path):
    reader = stream_receive.FifoReader(str(tmp_path / "a.stream"))
    with pytest.raises(stream.StreamError, match="nothing arrived .* within 1s"):
        reader.wait(1)
    reader.close()
    reader = stream_receive.FifoReader(str(tmp_path / "b.stream"))
    threading.Timer(0.3, os.unlink, [str(tmp_path / "b.stream")]).start()
    started = time.monotonic()
    with pytest.raises(stream.StreamError, match="removed while waiting"):
        reader.wait(30)
    assert time.monotonic() - started < 5
    reader.close()


def test_a_sender_that_dies_mid_stream_is_a_refused_stream(checkpoint, tmp_path):
    cp, manifest = checkpoint
    fifo = str(tmp_path / "dies.stream")
    reader = stream_receive.FifoReader(fifo)
    data = as_bytes(cp, manifest)
    writer = subprocess.Popen(relay(fifo), stdin=subprocess.PIPE)  # pylint: disable=consider-using-with
    writer.stdin.write(b"fleet-stream %d\n" % len(data) + data[: len(data) // 3])
    writer.stdin.close()  # the connection broke
    reader.wait(30)
    with pytest.raises(ArchiveError, match="not a complete tar"):
        stream_receive.receive(reader, str(tmp_path / "in"))
    reader.close()
    writer.wait(30)


def test_a_stale_fifo_is_replaced(tmp_path):
    path = tmp_path / "old.stream"
    path.write_bytes(b"left by a killed receiver")
    reader = stream_receive.FifoReader(str(path))
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    reader.close()
    assert not path.exists()


def test_sizes_above_8_gib_travel_in_a_pax_header():
    header = stream._header("pages-1.img", 9 << 30)  # pylint: disable=protected-access
    assert len(header) == 3 * 512  # the PAX header, its records, the entry
    member = stream_receive._next_member(io.BytesIO(header))  # pylint: disable=protected-access
    assert (member.name, member.size) == ("pages-1.img", 9 << 30)


def test_the_relay_waits_a_little_for_a_receiver_that_is_starting(tmp_path):
    fifo = str(tmp_path / "late.stream")
    late = threading.Timer(0.5, lambda: readers.append(stream_receive.FifoReader(fifo)))
    readers = []
    late.start()
    proc = subprocess.run(relay(fifo, 10), input=b"", capture_output=True, check=False, timeout=30)
    late.join()
    assert proc.returncode == 0 and proc.stdout == b"ready\n", proc.stderr
    readers[0].close()


@pytest.mark.parametrize("records", [b"0 a=b\n", b"-6 a=b\n", b"99 a=b\n", b"7 ab\n\n", b"6 a=bc"])
def test_a_malformed_pax_header_is_refused(records):
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, len(records)
    block = info.tobuf(tarfile.USTAR_FORMAT) + records + bytes(stream.padding(len(records)))  # pylint: disable=protected-access
    with pytest.raises(ArchiveError, match="damaged PAX header"):
        stream_receive._next_member(io.BytesIO(block + bytes(1024)))  # pylint: disable=protected-access


def test_a_relay_that_does_not_confirm_fails_the_send(checkpoint, tmp_path):
    """The relay says "done" once every byte is in the FIFO: a far side that takes the stream and ends without it
    (cut off, killed) is a failed send, even when its exit code says 0."""
    cp, manifest = checkpoint
    silent = [sys.executable, "-c", "import os, sys; os.write(1, b'ready\\n'); sys.stdin.buffer.read()"]
    with pytest.raises(stream.StreamError, match="did not confirm"):
        send(silent, str(cp), manifest, 60)


def test_the_relay_copies_the_length_said_and_no_more(checkpoint, tmp_path):
    """The relay reads the stream's length first, copies exactly that into the FIFO and says "done" without waiting
    for the end of its input (a sudo between SSH and the relay may hold it open); a stream cut short is an error."""
    cp, manifest = checkpoint
    data = as_bytes(cp, manifest)
    assert stream.stream_length(manifest) == len(data)
    fifo = str(tmp_path / "framed.stream")
    reader = stream_receive.FifoReader(fifo)
    writer = subprocess.Popen(relay(fifo, 10), stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # pylint: disable=consider-using-with

    def write():
        writer.stdin.write(stream.stream_preamble(manifest) + data)
        writer.stdin.flush()  # and the input stays open
    feeding = threading.Thread(target=write)
    feeding.start()
    reader.wait(30)
    got = stream_receive.receive(reader, str(tmp_path / "in"))
    assert writer.stdout.read(11) == b"ready\ndone\n" and got["files"] == manifest["files"]
    feeding.join(30)
    writer.stdin.close()
    assert writer.wait(30) == 0
    reader.close()
    short = tmp_path / "short.stream"
    reader = stream_receive.FifoReader(str(short))
    cut = subprocess.run(relay(str(short), 10), input=stream.stream_preamble(manifest) + data[:1000],
                         capture_output=True, check=False, timeout=30)
    reader.close()
    assert cut.returncode != 0 and b"bytes short" in cut.stderr


def test_a_banner_and_ready_in_one_read_are_both_seen(checkpoint, tmp_path):
    """A login's start-up files print a banner; it and the relay's "ready" reach the sender in one read (and "done"
    may follow closely). The sender must not wait for a "ready" it has already read."""
    cp, manifest = checkpoint
    far_side = ("import os, sys\n"
                "os.write(1, b'Welcome to web-2\\nready\\n')\n"
                "while sys.stdin.buffer.read(65536):\n"
                "    pass\n"
                "os.write(1, b'done\\n')\n")
    sender = stream.Sender([sys.executable, "-c", far_side])
    started = time.monotonic()
    sender.wait_ready(5)
    assert time.monotonic() - started < 4
    assert sender.send(str(cp), manifest, 60)["bytes"] > 0


def test_ready_and_done_in_one_read_still_confirm_the_stream(checkpoint):
    cp, manifest = checkpoint
    far_side = ("import os, sys\n"
                "os.write(1, b'ready\\ndone\\n')\n"
                "while sys.stdin.buffer.read(65536):\n"
                "    pass\n")
    sender = stream.Sender([sys.executable, "-c", far_side])
    sender.wait_ready(5)
    assert sender.send(str(cp), manifest, 60)["bytes"] > 0
