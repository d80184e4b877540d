# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Post-copy's two ends without a host: the page relay and pump carry both directions and end cleanly, the restore's
CRIU configuration and page socket are private and go away (the configuration stays, as a link, with a container
that stays), and the options refuse what a post-copy move cannot do."""

from __future__ import annotations

import os
import socket
import stat
import struct
import subprocess
import sys
import threading

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import lazy_restore
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import lazy_send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import options
from ansible_collections.fleet.checkpoint.plugins.modules.docker_checkpoint import argument_spec

PAGES = os.urandom(3 * 1024 * 1024 + 17)
PS = lazy_send.PS_IOV_SIZE


def test_pages_and_requests_cross_the_relay_and_the_pump_and_both_ends_close(tmp_path):
    """The page server (one end of a socket pair) serves PAGES for one request; the restore's side (a Unix socket,
    as criu lazy-pages is given) asks and reads them; the relay script and the pump sit between them."""
    path = str(tmp_path / "pages.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    got = bytearray()

    def restore_side():
        conn = listener.accept()[0]
        conn.sendall(b"GET")
        while len(got) < len(PAGES):
            data = conn.recv(1 << 20)
            if not data:
                break
            got.extend(data)
        conn.close()

    daemon = threading.Thread(target=restore_side)
    daemon.start()
    server, ours = socket.socketpair()
    relay = subprocess.Popen([sys.executable, "-c", lazy_send.PAGE_RELAY, path, "5", path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pump = lazy_send.Pump(ours, relay)
    pump.start()
    assert server.recv(3, socket.MSG_WAITALL) == b"GET"  # the request came through
    server.sendall(PAGES)
    server.shutdown(socket.SHUT_WR)  # every page served: the page server ends its side
    daemon.join(10)
    pump.join(10)
    assert relay.wait(10) == 0, relay.stderr.read()
    assert bytes(got) == PAGES
    assert pump.to_target == len(PAGES) and pump.to_source == 3 and pump.last_page_at


def test_the_relay_says_when_no_restore_waits(tmp_path):
    (tmp_path / "in.stream").touch()  # the receive goes on, but makes no socket
    done = subprocess.run([sys.executable, "-c", lazy_send.PAGE_RELAY, str(tmp_path / "none.sock"), "1",
                           str(tmp_path / "in.stream")], capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode != 0 and "no restore waits for pages at" in done.stderr
    assert "No such file or directory" in done.stderr


def test_the_relay_stops_waiting_when_the_receive_has_ended_without_a_socket(tmp_path):
    """A target that refused the move (its stream's FIFO gone, no page socket): not waited for until the deadline."""
    done = subprocess.run([sys.executable, "-c", lazy_send.PAGE_RELAY, str(tmp_path / "none.sock"), "600",
                           str(tmp_path / "gone.stream")], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0 and "the receive there has ended" in done.stderr


def test_the_relay_still_connects_when_the_receive_ended_after_making_the_socket(tmp_path):
    """The receive makes the page socket before its FIFO goes: the FIFO gone, the socket is still tried."""
    path = str(tmp_path / "pages.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    relay = subprocess.Popen([sys.executable, "-c", lazy_send.PAGE_RELAY, path, "600", str(tmp_path / "gone.stream")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    conn = listener.accept()[0]
    conn.sendall(b"pages")
    conn.close()
    relay.stdin.close()
    assert relay.stdout.read() == b"pages"
    assert relay.wait(20) == 0, relay.stderr.read()
    listener.close()


@pytest.fixture
def places(tmp_path, monkeypatch):
    monkeypatch.setattr(lazy_send, "LAZY_DIR", str(tmp_path / "lazy"))
    monkeypatch.setattr(lazy_restore, "LAZY_DIR", str(tmp_path / "lazy"))
    monkeypatch.setattr(lazy_restore, "pages_socket", lambda c, n: str(tmp_path / "lazy" / f"{c}-{n}" / "pages.sock"))
    monkeypatch.setattr(lazy_restore, "CONFIG_DIR", str(tmp_path / "criu-config"))
    runc_conf = tmp_path / "runc.conf"
    runc_conf.write_text("log-file /var/log/criu/runc.log\ntcp-established\n")
    monkeypatch.setattr(lazy_restore, "RUNC_CONF", str(runc_conf))
    return tmp_path


def test_the_restore_side_is_private_and_its_configuration_becomes_runc_conf(places):
    restore = lazy_restore.LazyRestore("web", "move", "criu")
    annotations = restore.prepare()
    config = annotations["org.criu.config"]
    with open(config, encoding="utf-8") as handle:
        assert handle.read() == (f"tcp-established\nlazy-pages\nwork-dir {restore.work}\n"
                                 f"log-file {restore.work}/restore.log\n")
    assert stat.S_IMODE(os.stat(config).st_mode) == 0o600
    for path in (restore.dir, restore.work, os.path.dirname(config)):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert stat.S_ISSOCK(os.stat(restore.socket_path).st_mode)
    restore.resumed()
    assert os.readlink(config) == lazy_restore.RUNC_CONF
    restore.cleanup(keep_config=True)
    assert not os.path.exists(restore.dir) and os.path.islink(config)
    again = lazy_restore.LazyRestore("web", "move", "criu")
    gone = again.prepare()["org.criu.config"]
    again.cleanup(keep_config=False)
    assert not os.path.lexists(gone) and not os.path.exists(again.dir)


def test_a_source_that_never_connects_is_an_error(places):
    restore = lazy_restore.LazyRestore("web", "move", "criu")
    restore.prepare()
    with pytest.raises(Exception, match="did not connect for the memory pages within 0.2s"):
        restore.start(str(places), 0.2)
    restore.cleanup(keep_config=False)


def params(**send_to):
    values = {key: spec.get("default") for key, spec in argument_spec().items()}
    values.update(name="move", container="web", send_to=dict({
        "via": "ssh", "host": "web-2", "user": "root", "port": 22, "directory": "/var/lib/in", "known_hosts_file": None,
        "identity_file": None, "python": "python3", "ready_timeout": 30, "writable_layer": False, "volumes": "none",
        "precopy": True, "lazy": True}, **send_to))
    return values


def test_options_refuse_what_a_post_copy_move_cannot_do():
    assert options.check_options(params()) == []
    assert any("lazy cannot carry disk state" in e for e in options.check_options(params(writable_layer=True)))
    assert any("lazy cannot carry disk state" in e for e in options.check_options(params(volumes="named")))
    relayed = params(via="relay", host=None)
    assert any("send_to.lazy needs send_to.via=ssh" in e for e in options.check_options(relayed))
    forced = dict(params(), force=True)
    assert any("force does not apply" in e for e in options.check_options(forced))


def request(cmd):
    return struct.pack("<IIQQQ", cmd, 0, 1, 0x7f0000001000, 1)


def test_the_targets_close_is_found_in_its_requests_however_they_are_cut():
    server, ours = socket.socketpair()
    pump = lazy_send.Pump(ours, None)
    stream = request(7) + request(7 | (1 << 16)) + request(0x1023)
    for piece in (stream[:5], stream[5:40], stream[40:95]):
        pump.saw(piece)
        assert not pump.closed_by_target
    pump.saw(stream[95:])
    assert pump.closed_by_target
    forced = lazy_send.Pump(server, None)
    forced.saw(request(0x1024))
    assert forced.closed_by_target


def page_path(tmp_path):
    """The whole page path over loopback: CRIU's page server (a TCP socket: `server`), the pump and the relay script
    between, the target's daemon (a Unix socket the relay connects to: `daemon`)."""
    path = str(tmp_path / "pages.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1)
    server_side = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server_side.bind(("127.0.0.1", 0))
    server_side.listen(1)
    ours = socket.create_connection(server_side.getsockname())
    server = server_side.accept()[0]
    relay = subprocess.Popen([sys.executable, "-c", lazy_send.PAGE_RELAY, path, "5", path], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pump = lazy_send.Pump(ours, relay)
    pump.start()
    return server, listener.accept()[0], relay, pump


def test_a_relay_that_ends_before_the_targets_close_resets_the_page_server(tmp_path):
    """What CRIU's page server sees when the pages stop coming before the target said "close": a reset (it fails the
    transfer and thaws the container), not an orderly end (which it takes for a transfer that is done)."""
    server, daemon, relay, pump = page_path(tmp_path)
    daemon.sendall(request(7))
    assert server.recv(PS, socket.MSG_WAITALL) == request(7)
    daemon.close()  # the target's side ends without its close
    relay.wait(10)
    pump.join(10)
    with pytest.raises(ConnectionResetError):
        while server.recv(1):
            pass
    assert not pump.closed_by_target


def test_after_the_targets_close_the_connection_ends_in_order(tmp_path):
    server, daemon, relay, pump = page_path(tmp_path)
    daemon.sendall(request(0x1023))
    assert server.recv(PS, socket.MSG_WAITALL) == request(0x1023)
    server.sendall(b"\0\0\0\0")  # the page server's answer to the close
    assert daemon.recv(4, socket.MSG_WAITALL) == b"\0\0\0\0"
    daemon.close()
    relay.wait(10)
    assert server.recv(1) == b""  # an orderly end, as CRIU waits for
    server.close()
    pump.join(10)
    assert pump.closed_by_target


def test_configurations_of_removed_containers_are_swept(places):
    kept, lost = (lazy_restore.LazyRestore(name, "move", "criu") for name in ("kept", "lost"))
    kept_config, lost_config = kept.prepare()["org.criu.config"], lost.prepare()["org.criu.config"]
    for restore in (kept, lost):
        restore.resumed()
        restore.cleanup(keep_config=True)

    class API:
        def get(self, path, **query):
            if path == "/containers/json":
                return [{"Id": "a"}, {"Id": "b"}]
            return {"HostConfig": {"Annotations": {"org.criu.config": kept_config}} if path == "/containers/a/json"
                    else {}}

    assert lazy_restore.sweep_configs(API()) == [os.path.basename(lost_config)]
    assert os.path.lexists(kept_config) and not os.path.lexists(lost_config)


def test_the_page_socket_path_fits_whatever_the_names():
    longest = lazy_send.pages_socket("c" * 128, "n" * 128)
    assert len(longest.encode()) < 108 and longest.startswith(lazy_send.LAZY_DIR + "/")
    assert lazy_send.pages_socket("web", "move") != lazy_send.pages_socket("web", "move2")
    assert lazy_send.pages_socket("web", "move") == lazy_send.pages_socket("web", "move")
