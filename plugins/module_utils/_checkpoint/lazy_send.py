# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The sending end of a post-copy move (state=present with send_to.lazy): the container is dumped lazily (runc, see
_criu/lazy_pages.py), only its small images are streamed to the restore waiting on the target, then its memory is
served from here over a second SSH connection until the target has every page. Until then the container stays
frozen here; if the page transfer breaks, CRIU thaws it and it runs on here, where it froze."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from typing import IO, Any, cast

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import send
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import stream
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import HostContext, Result, new_result
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError, carrying
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.export import portable_manifest
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import file_inventory
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import lazy_pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._host.commands import which
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import owned_dirs
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import private_files

LAZY_DIR = "/var/lib/fleet-checkpoint/lazy"  # root-only: each move's images, work directories and page socket
PAGES_WAIT = 120  # seconds the page relay on the target gives the restore there to be listening

# Runs on the target under the SSH login's python3: connect to the waiting restore's page socket (given a while to
# appear: the restore there is still installing the images), then carry bytes both ways until either side ends. The
# receive's stream FIFO (argv[3]) gone means that the receive has ended: the socket is made before the FIFO goes, so
# one more try tells a restore that waits from one that refused the move (which is not waited for).
PAGE_RELAY = r"""
import errno, os, select, socket, sys, time
path, deadline, fifo = sys.argv[1], time.time() + float(sys.argv[2]), sys.argv[3]
ended = False
while True:
    sk = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sk.connect(path)
        break
    except OSError as exc:
        sk.close()
        if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED) or time.time() > deadline or ended:
            sys.exit("fleet.checkpoint: no restore waits for pages at %s (%s)"
                     % (path, "the receive there has ended" if ended else exc.strerror))
        ended = not os.path.exists(fifo)
        if not ended:
            time.sleep(0.1)
reading = True
while True:
    ready = select.select([sk] + ([0] if reading else []), [], [])[0]
    if sk in ready:
        data = sk.recv(1048576)
        if not data:
            break
        view = memoryview(data)
        while view:
            view = view[os.write(1, view):]
    if reading and 0 in ready:
        data = os.read(0, 1048576)
        if data:
            sk.sendall(data)
        else:
            reading = False
            sk.shutdown(socket.SHUT_WR)
"""


def pages_socket(container_name: str, checkpoint: str) -> str:
    """Where the target's lazy restore waits for the page connection (both ends name it alike; hashed, so that a
    long name stays within a Unix socket path's 107 bytes)."""
    key = hashlib.sha256(f"{container_name}\0{checkpoint}".encode("utf-8")).hexdigest()[:24]
    return os.path.join(LAZY_DIR, key, "pages.sock")


PS_IOV_SIZE = 32  # CRIU's struct page_server_iov: u32 cmd (padded to 8), u64 nr_pages, vaddr, dst_id
PS_IOV_CLOSE = (0x1023, 0x1024)  # PS_IOV_CLOSE, PS_IOV_FORCE_CLOSE: the target has every page
PS_CMD_MASK = 0xFFFF


class Pump:
    """Bytes both ways between the page server's socket and the page relay's SSH connection, counted.

    CRIU's lazy page server takes a connection that ends without the target's "close" command (its last request,
    sent once every page is there) for a transfer that is done: it would end the container here while the target
    lacks pages. So the socket is set to reset, not close, the connection (SO_LINGER 0) - when the relay ends first,
    or this process dies - until the target's "close" has been seen going through; CRIU then fails the transfer and
    thaws the container here. After the "close", the connection ends normally (CRIU waits for that)."""

    def __init__(self, sock: Any, relay: subprocess.Popen[bytes]) -> None:
        self.sock, self.relay = sock, relay
        self.to_target = 0
        self.to_source = 0
        self.last_page_at: float | None = None
        self.closed_by_target = False
        self._pending = b""
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._threads = [threading.Thread(target=self._pages, daemon=True),
                         threading.Thread(target=self._requests, daemon=True)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _pages(self) -> None:
        out = cast(IO[bytes], self.relay.stdin)
        try:
            while True:
                data = self.sock.recv(1 << 20)
                if not data:
                    break
                out.write(data)
                out.flush()
                self.to_target += len(data)
                self.last_page_at = time.time()
        except (OSError, ValueError):
            pass
        finally:
            try:
                out.close()
            except OSError:
                pass

    def saw(self, data: bytes) -> None:
        """Follow the target's requests (whole records of PS_IOV_SIZE bytes) for its "close"."""
        self._pending += data
        while len(self._pending) >= PS_IOV_SIZE:
            cmd = struct.unpack_from("<I", self._pending)[0] & PS_CMD_MASK
            self._pending = self._pending[PS_IOV_SIZE:]
            if cmd in PS_IOV_CLOSE:
                self.closed_by_target = True

    def _requests(self) -> None:
        source = cast(IO[bytes], self.relay.stdout)
        try:
            while True:
                data = os.read(source.fileno(), 1 << 16)
                if not data:
                    break
                self.saw(data)
                self.sock.sendall(data)
                self.to_source += len(data)
        except OSError:
            pass
        finally:
            try:
                if self.closed_by_target:
                    self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 0, 0))
                    self.sock.shutdown(socket.SHUT_WR)  # the end CRIU waits for
                else:
                    self.sock.shutdown(socket.SHUT_RD)  # wakes the other thread, then the close resets
                    self._threads[0].join(10)
                    self.sock.close()
            except OSError:
                pass

    def join(self, seconds: float) -> None:
        for thread in self._threads:
            thread.join(seconds)

    def abort(self) -> None:
        """Reset the page connection (whatever the target said): CRIU fails the transfer and thaws the container."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.sock.shutdown(socket.SHUT_RD)  # wakes the reading thread; the close then resets
        except OSError:
            pass
        if self._threads[0].ident is not None:  # (started)
            self._threads[0].join(10)
        try:
            self.sock.close()
        except OSError:
            pass


def send_lazily(ctx: HostContext, ref: str, name: str, send_to: send.SendTo, timeout: int) -> Result:
    """Move container `ref` to send_to's waiting restore, post-copy; the result says how it went."""
    found = container.settled(ctx, container.inspect(ctx, ref))
    cid = found["Id"]
    result = new_result(found, name)
    where = send.remote(send_to, result["container"], name)[1]
    with carrying(result):
        container.refuse_unmovable(found, result["container"], "post-copy",
                                   "move ends it here, before anything could bring it back if the move broke")
        runc, criu = which("runc"), which("criu")
        problems = [] if runc else ["the runc command is missing (a post-copy dump runs it directly)"]
        problems += [] if criu else ["the criu command is missing"]
        if criu:
            status, pipe_max = lazy_pages.read_host_facts()
            problems += lazy_pages.lazy_problems(ctx.run, criu, status, pipe_max)
        if problems:
            raise OpError(f"{result['container']} cannot be moved post-copy from this host, so nothing was touched: "
                          + "; ".join(problems))
        policy = container.policy(found)
        result.update(changed=True, action="sent", method="lazy", restart_policy=policy)
        if ctx.check_mode:
            result["sent"] = {"to": where, "mode": "lazy"}
            return result
        sender = send.connect(send_to, result, name)
    work = os.path.join(LAZY_DIR, f"{cid}-{name}")
    try:
        with carrying(result):
            _move(ctx, found, name, send_to, timeout, sender, work, cast(str, runc), result, where)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def _move(ctx: HostContext, found: dict[str, Any], name: str, send_to: send.SendTo, timeout: int,
          sender: send.Sender, work: str, runc: str, result: Result, where: str) -> None:
    cid, policy = found["Id"], result["restart_policy"]
    private_files.make_private_dir(LAZY_DIR)
    owned_dirs.sweep(LAZY_DIR)  # what killed runs left
    shutil.rmtree(work, ignore_errors=True)
    images, criu_work = os.path.join(work, "images"), os.path.join(work, "work")
    private_files.make_private_dir(work)
    owned_dirs.claim(work)
    for path in (images, criu_work):
        private_files.make_private_dir(path)
    if not container.is_no(policy):
        container.set_policy(ctx, cid, {"Name": "no"})  # the move ends the container here: no cold start after it
    read_fd, write_fd = os.pipe()
    started = time.time()
    runc_out = os.path.join(work, "runc.out")
    try:
        argv = lazy_pages.lazy_dump_argv(runc, cid, images, criu_work, write_fd,
                                         shell_job=bool((found.get("Config") or {}).get("Tty")))
        with open(runc_out, "wb") as out:
            # Not run_command: the dump runs on while the pages are served, with its status descriptor passed.
            dumper = subprocess.Popen(  # pylint: disable=consider-using-with,ansible-bad-function
                argv, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    except OSError as exc:
        os.close(read_fd)
        os.close(write_fd)
        _give_back(ctx, cid, policy)
        sender.abort()
        raise OpError(f"the post-copy dump of {result['container']} could not start: {exc}") from exc
    os.close(write_fd)
    owned_dirs.claim(work, dumper.pid)  # (its CRIU serves the pages from this directory's work path)
    try:
        ready = _wait_ready(read_fd, timeout)
    finally:
        os.close(read_fd)
    if not ready:
        _call_off(dumper, None, None, None)
        _give_back(ctx, cid, policy)
        sender.abort()
        raise OpError(f"the post-copy dump of {result['container']} failed before anything was sent, and the "
                      f"container runs on here: {_tail(runc_out) or 'no answer within the timeout'}")
    ready_at = time.time()  # the images written, the page server up; the container frozen since `started`
    result["dump_started_at"] = round(started, 3)
    result["duration"] = round(ready_at - started, 3)
    sock: socket.socket | None = None
    relay: subprocess.Popen[bytes] | None = None
    pump: Pump | None = None
    sent: dict[str, Any] = {}
    try:
        # Connected first: from here on, resetting this connection is how the move is called off (CRIU then fails
        # its transfer and thaws the container); an orderly end would tell it that the target has every page.
        sock = lazy_pages.connect_in_netns(dumper.pid)
        files = file_inventory(images)
        # No process list: the target's check reads the processes' command lines, which are in memory pages that
        # may not have arrived at that moment (seen on the lab: "the container's main process is not back").
        metadata = {"method": "api", "created": ready_at, "restart_policy": policy}  # (restored through Docker)
        manifest = portable_manifest(ctx, name, found, images, metadata, files)
        manifest["lazy"] = True
        sent = sender.send(images, manifest, timeout, None)
        relay_argv = stream.ssh_argv(send_to, pages_socket(result["container"], name), PAGES_WAIT, script=PAGE_RELAY,
                                     extra=(send.remote(send_to, result["container"], name)[0],))
        relay = subprocess.Popen(  # pylint: disable=consider-using-with,ansible-bad-function
            relay_argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        pump = Pump(sock, relay)
        pump.start()
        try:
            dumper.wait(timeout)  # ends when every page is fetched, or the connection broke
        except subprocess.TimeoutExpired as exc:
            raise OpError(f"the memory of {result['container']} was not all fetched within timeout={timeout}s") from exc
    except BaseException as exc:
        _call_off(dumper, sock, pump, relay)
        raise OpError(_called_off(ctx, cid, policy, result, where, pump, f"{exc}".strip() or type(exc).__name__)
                      ) from exc
    pump.join(30)
    sock.close()
    relay_error = _end(relay)
    done_at = time.time()
    result["sent"] = dict(sent, to=where, mode="lazy", pages_bytes=pump.to_target,
                          pages_seconds=round((pump.last_page_at or done_at) - started, 3))
    if dumper.returncode != 0:
        raise OpError(_called_off(ctx, cid, policy, result, where, pump, relay_error or _tail(runc_out)))
    result["stopped"] = True
    container.wait_state(ctx, cid, running=False, seconds=10)


def _call_off(dumper: subprocess.Popen[bytes], sock: socket.socket | None, pump: Pump | None,
              relay: subprocess.Popen[bytes] | None) -> None:
    """Make CRIU fail the transfer, which thaws the container: its page connection reset (one made for it if there
    is none yet), then the dump waited for (killed only as the last resort)."""
    if relay is not None and relay.poll() is None:
        relay.kill()
    if pump is not None:
        pump.abort()
    else:
        try:
            sock = sock or lazy_pages.connect_in_netns(dumper.pid, timeout=5)
            sock.close()  # (SO_LINGER 0: a reset)
        except OSError:
            pass
    try:
        dumper.wait(60)
    except subprocess.TimeoutExpired:
        dumper.kill()
        dumper.wait()
    if relay is not None:
        _end(relay)


def _called_off(ctx: HostContext, cid: str, policy: container.Policy, result: Result, where: str,
                pump: Pump | None, detail: str) -> str:
    """The error of a move that did not finish, from what the container does now (it is looked at, not assumed)."""
    moved = f" after {pump.to_target} bytes of memory" if pump else ""
    try:
        running = container.is_running(ctx, container.inspect(ctx, cid))
    except OpError:
        running = False
    if running:
        _give_back(ctx, cid, policy)
        return (f"the post-copy move of {result['container']} to {where} did not finish{moved}: the container runs on "
                "here from where it froze (CRIU thawed it); the copy on the target, if it was resumed, is killed "
                f"there, and what it did since is lost: {detail}")
    result["stopped"] = True
    return (f"the post-copy move of {result['container']} to {where} did not finish as it should{moved}, and the "
            "container is no longer running here (CRIU ended it): check the target - its restore says whether every "
            f"page arrived there: {detail}")


def _end(relay: subprocess.Popen[bytes]) -> str:
    """The relay waited for (killed after 30 s); what it said on stderr."""
    try:
        relay.wait(timeout=30)
    except subprocess.TimeoutExpired:
        relay.kill()
        relay.wait()
    said = cast(IO[bytes], relay.stderr).read() or b""  # stderr=PIPE
    return said.decode("utf-8", "replace").strip()


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as handle:
            return " ".join(handle.read().decode("utf-8", "replace").split())[-2000:]
    except OSError:
        return ""


def _wait_ready(fd: int, timeout: float) -> bool:
    """runc writes a zero byte on the status descriptor when CRIU's page server is up; EOF means it ended first."""
    import select  # pylint: disable=import-outside-toplevel
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            return os.read(fd, 1) == b"\0"
    return False


def _give_back(ctx: HostContext, cid: str, policy: container.Policy) -> None:
    if not container.is_no(policy):
        try:
            container.set_policy(ctx, cid, policy)
        except Exception:  # pylint: disable=broad-exception-caught  # (the error said what matters)
            pass
