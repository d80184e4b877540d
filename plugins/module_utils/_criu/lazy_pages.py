# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Post-copy (lazy pages) through Docker: the pieces, as run on the lab (Docker 26.1, runc 1.1.15, CRIU 4.2).

Docker cannot dump or restore lazily by itself (`docker checkpoint create` and `docker start --checkpoint` pass no
CRIU option). What works:

- Source: `runc checkpoint --lazy-pages` on Docker's own runc state (`/run/docker/runtime-runc/moby`). CRIU writes
  the small images (no anonymous memory), reports "ready" on the status descriptor, then serves the pages itself and
  keeps the container frozen until every page has been fetched; then the container ends. If the transfer breaks,
  CRIU thaws the container: it runs on at the source. In a lazy dump CRIU listens on every address of its network
  namespace whatever address it is given, and whoever connects reads the memory: it is run in a network namespace of
  its own (only `lo`), and the page connection is made from inside it (`connect_in_netns`) and carried over SSH.
- Target: the container is created with the annotation `org.criu.config` naming a CRIU configuration file that says
  `lazy-pages` and a work directory (runc hands it to CRIU, whose file settings win over runc's). `criu lazy-pages`
  is started there first, with the page connection as `--ps-socket` (no TCP listener on the target either); then
  `docker start --checkpoint` restores the container at once and the daemon fills its memory on demand and in the
  background. When the daemon ends with 0, every page is there. Then the configuration file is made a link to
  /etc/criu/runc.conf: later checkpoints of the container are ordinary ones.
- CRIU's page server makes pipes of PIPE_PAGES pages; without CAP_SYS_RESOURCE that needs fs.pipe-max-size at least
  that big, or the first page request fails (the lab machine lacks CAP_SYS_RESOURCE).
- A broken page transfer: CRIU thaws the source's container, which runs on from where it froze; the target's copy
  runs on with the pages it has (on the lab it went on counting beside the source's), so it must be killed as soon
  as the daemon ends with an error - the price of post-copy is that window.

Seen on the lab (memhog 256 MiB, hosts on one machine): images 124 KiB, `docker start --checkpoint` 0.38 s, every
page (268 MB) fetched 3.2 s after the daemon started, the count continued on the target with no gap.

docker_checkpoint's send_to.lazy runs them: _checkpoint/lazy_send.py (source) and lazy_restore.py (target).
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading
from typing import Callable, List, Tuple

Run = Callable[[List[str]], Tuple[int, str, str]]  # runs a command (a list of words): (rc, stdout, stderr)

RUNC_ROOT = "/run/docker/runtime-runc/moby"  # Docker's runc state (its containerd namespace is "moby")
PAGE_SIZE = 4096
PIPE_PAGES = (8 * PAGE_SIZE) // 40  # CRIU's PIPE_MAX_SIZE (x86-64): pages of the pipes its page server makes
PAGE_PORT = 27000  # the page server's port inside its own network namespace (nothing else listens there)
CAP_SYS_RESOURCE = 24
CLONE_NEWNET = 0x40000000
_DIRTY_OFF = "Dirty tracking is OFF"


ANNOTATIONS_SINCE = (1, 43)  # Docker's API version that takes HostConfig.Annotations
OWN_SETTINGS = ("lazy-pages", "work-dir", "log-file")


def restore_config(work_dir: str, log_file: str | None = None, runc_conf: str = "") -> str:
    """The CRIU configuration file a lazily restored container's annotation names (until the restore is done): the
    settings of runc.conf (which it replaces for this container: tcp-established, ...), then its own."""
    kept = [line.strip() for line in runc_conf.splitlines()
            if line.strip() and not line.strip().startswith("#") and line.split()[0] not in OWN_SETTINGS]
    lines = kept + ["lazy-pages", f"work-dir {work_dir}"]
    if log_file:
        lines.append(f"log-file {log_file}")
    return "\n".join(lines) + "\n"


def lazy_dump_argv(runc: str, container_id: str, image_dir: str, work_dir: str, status_fd: int,
                   tcp_established: bool = True, file_locks: bool = False, shell_job: bool = False,
                   port: int = PAGE_PORT, root: str = RUNC_ROOT) -> list[str]:
    """runc's lazy checkpoint of a Docker container, in a network namespace of its own with `lo` up."""
    argv = [runc, "--root", root, "checkpoint", "--lazy-pages", "--page-server", f"127.0.0.1:{port}",
            "--status-fd", str(status_fd), "--image-path", image_dir, "--work-path", work_dir]
    argv += ["--tcp-established"] if tcp_established else []
    argv += ["--file-locks"] if file_locks else []
    argv += ["--shell-job"] if shell_job else []
    return ["unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$0" "$@"'] + argv + [container_id]


def daemon_argv(criu: str, image_dir: str, work_dir: str, ps_fd: int, log_file: str = "lazy-pages.log") -> list[str]:
    """`criu lazy-pages` fed by an already connected page socket (descriptor ps_fd, inherited)."""
    return [criu, "lazy-pages", "--page-server", "--ps-socket", str(ps_fd), "-D", image_dir, "-W", work_dir,
            "-o", log_file]


def has_capability(bit: int, status: str) -> bool:
    """Whether /proc/PID/status text shows capability `bit` as effective."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) >> bit & 1)
    return False


def pipe_problem(status: str, pipe_max_size: int) -> str | None:
    """Why CRIU's page server could not make its pipes here, or None."""
    if has_capability(CAP_SYS_RESOURCE, status) or pipe_max_size >= PIPE_PAGES * PAGE_SIZE:
        return None
    return (f"CRIU's page server needs pipes of {PIPE_PAGES * PAGE_SIZE} bytes, and root here has no "
            f"CAP_SYS_RESOURCE while fs.pipe-max-size is {pipe_max_size}: run sysctl -w fs.pipe-max-size=4194304 "
            "(and keep it in /etc/sysctl.d)")


def feature_problem(run: Run, criu: str, feature: str) -> str | None:
    """Why `criu check --feature` fails here, in CRIU's words, or None."""
    rc, out, err = run([criu, "check", "--feature", feature])
    if rc == 0:
        return None
    said = " ".join((err or out).split()) or f"exit code {rc}"
    if feature == "mem_dirty_track" and _DIRTY_OFF in said:
        return ("the kernel does not track dirty memory (CONFIG_MEM_SOFT_DIRTY is not set), so pre-copy rounds "
                "cannot tell what changed: use stop-and-copy or post-copy (lazy) here")
    if feature == "uffd-noncoop":
        return (f"CRIU cannot restore lazily here ({said}): the kernel needs userfaultfd "
                "(CONFIG_USERFAULTFD, non-cooperative events) and CRIU must be allowed to use it")
    return f"criu check --feature {feature} failed: {said}"


def lazy_problems(run: Run, criu: str, status: str, pipe_max_size: int) -> list[str]:
    """What keeps this host from either end of a post-copy migration (empty: nothing)."""
    problems = [feature_problem(run, criu, "uffd-noncoop"), pipe_problem(status, pipe_max_size)]
    return [problem for problem in problems if problem]


def annotation_problem(api_version: str) -> str | None:
    """The lazy restore hands CRIU its settings through the container's org.criu.config annotation, which Docker
    takes only from API 1.43 (Docker 24) on; an older daemon drops it silently and CRIU would restore without the
    memory it then lacks."""
    try:
        version = tuple(int(part) for part in api_version.split(".")[:2])
    except ValueError:
        return f"Docker's API version ({api_version!r}) cannot be read"
    if version < ANNOTATIONS_SINCE:
        return (f"Docker here serves API {api_version}, older than {'.'.join(map(str, ANNOTATIONS_SINCE))} "
                "(Docker 24): it drops the container annotation that hands CRIU the lazy restore's settings. "
                "Upgrade Docker here, or move stop-and-copy")
    return None


def read_host_facts() -> tuple[str, int]:
    """(this process's /proc status text, fs.pipe-max-size) for lazy_problems."""
    with open("/proc/self/status", encoding="utf-8") as handle:
        status = handle.read()
    with open("/proc/sys/fs/pipe-max-size", encoding="utf-8") as handle:
        return status, int(handle.read().strip() or 0)


def _enter_netns(fd: int) -> None:
    """setns(fd, CLONE_NEWNET) for the calling thread (os.setns from Python 3.12, libc's before)."""
    setns = getattr(os, "setns", None)
    if setns is not None:
        setns(fd, CLONE_NEWNET)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns into the page server's network namespace failed")


def connect_in_netns(pid: int, port: int = PAGE_PORT, timeout: float = 10.0) -> socket.socket:
    """A TCP connection to 127.0.0.1:port inside the network namespace of process pid (the lazy dump's). Made from
    a thread of its own that enters the namespace (a network namespace is per thread), so this process stays where
    it is; the socket keeps the namespace it was made in."""
    made: list[socket.socket] = []
    failed: list[BaseException] = []

    def enter_and_connect() -> None:
        try:
            with open(f"/proc/{pid}/ns/net", "rb") as namespace:
                _enter_netns(namespace.fileno())
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            # Until told otherwise, this connection ends with a reset - also when this process dies: CRIU's lazy
            # page server takes an orderly end for "the target has every page" and ends the container.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            made.append(sock)
        except BaseException as exc:  # handed to the caller's thread  # pylint: disable=broad-exception-caught
            failed.append(exc)

    worker = threading.Thread(target=enter_and_connect, daemon=True)
    worker.start()
    worker.join(timeout + 5)
    if failed:
        raise OSError(f"cannot reach the page server of process {pid}: {failed[0]}")
    if not made:
        raise OSError(f"cannot reach the page server of process {pid}: timed out")
    made[0].settimeout(None)
    return made[0]
