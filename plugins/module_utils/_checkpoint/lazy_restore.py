# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The receiving end of a post-copy move (a stream whose manifest says `lazy`, see lazy_send.py and
_criu/lazy_pages.py): the container is created with a CRIU configuration that makes its restore lazy, the page
connection from the source is taken on a root-only Unix socket and handed to `criu lazy-pages`, Docker restores the
container at once, and the daemon fills its memory. The container depends on the source until the daemon ends: if
it ends with an error, the container is killed here (its memory is incomplete) and the source's copy runs on."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import OpError
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.lazy_send import LAZY_DIR, pages_socket
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import lazy_pages
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import owned_dirs
from ansible_collections.fleet.checkpoint.plugins.module_utils._host import private_files

ANNOTATION = "org.criu.config"  # runc hands the file it names to CRIU, whose settings then win over runc's
CONFIG_DIR = "/var/lib/fleet-checkpoint/criu-config"  # the files those annotations name (kept with the containers)
RUNC_CONF = "/etc/criu/runc.conf"  # what every other container's checkpoint and restore read
DAEMON_UP_WITHIN = 20  # seconds for `criu lazy-pages` to be listening for the restore


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return ""


def sweep_configs(api: Any) -> list[str]:
    """Remove the CRIU configuration files (links to runc.conf by then) whose containers are gone; their names. Run
    by a lazy restore, which holds the host's lock."""
    try:
        names = sorted(os.listdir(CONFIG_DIR))
    except FileNotFoundError:
        return []
    used = set()
    for summary in api.get("/containers/json", all="1") or []:
        try:
            found = api.get(f"/containers/{summary['Id']}/json") or {}
        except DockerAPIError:
            continue  # removed meanwhile
        used.add(((found.get("HostConfig") or {}).get("Annotations") or {}).get(ANNOTATION))
    # Only the links (restores that finished): a plain file is a restore under way, perhaps another thread's.
    gone = [name for name in names if os.path.islink(os.path.join(CONFIG_DIR, name))
            and os.path.join(CONFIG_DIR, name) not in used]
    for name in gone:
        try:
            os.unlink(os.path.join(CONFIG_DIR, name))
        except OSError:
            pass
    return gone


class LazyRestore:
    """One container's lazy restore here, from the manifest's arrival to its last page."""

    def __init__(self, sender_name: str, checkpoint: str, criu: str) -> None:
        self.socket_path = pages_socket(sender_name, checkpoint)
        self.dir = os.path.dirname(self.socket_path)
        self.work = os.path.join(self.dir, "work")
        self.criu = criu
        self.config: str | None = None
        self.listener: socket.socket | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.complete = False  # the daemon ended with 0: every page is here (the source's copy has ended)

    def prepare(self) -> dict[str, str]:
        """Before the container is created: its CRIU configuration, and the socket the source's pages come to.
        Returns the annotations to create the container with."""
        private_files.make_private_dir(LAZY_DIR)
        owned_dirs.sweep(LAZY_DIR)  # what killed runs left (their module and daemon gone)
        shutil.rmtree(self.dir, ignore_errors=True)
        private_files.make_private_dir(self.dir)
        owned_dirs.claim(self.dir)
        private_files.make_private_dir(self.work)
        private_files.make_private_dir(CONFIG_DIR)
        fd, self.config = tempfile.mkstemp(prefix="lazy-", suffix=".conf", dir=CONFIG_DIR)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(lazy_pages.restore_config(self.work, os.path.join(self.work, "restore.log"),
                                                   _read(RUNC_CONF)))
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.socket_path)  # in a 0700 directory of root's
        self.listener.listen(1)
        return {ANNOTATION: self.config}

    def start(self, image_dir: str, timeout: float) -> None:
        """After the images are in place, before Docker's restore: take the source's page connection and start the
        daemon on it; OpError when the source does not connect or the daemon does not come up."""
        if self.listener is None:
            raise OpError("the lazy restore was not prepared")
        self.listener.settimeout(timeout)
        try:
            conn = self.listener.accept()[0]
        except OSError as exc:
            raise OpError(f"the source did not connect for the memory pages within {timeout}s ({exc or 'timed out'})"
                          ) from exc
        finally:
            self.listener.close()
            self.listener = None
        try:
            self.daemon = subprocess.Popen(  # pylint: disable=consider-using-with,ansible-bad-function
                lazy_pages.daemon_argv(self.criu, image_dir, self.work, conn.fileno()), pass_fds=(conn.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                start_new_session=True)  # not killed with this module's process group: the pages keep coming
        except OSError as exc:
            raise OpError(f"criu lazy-pages could not start: {exc}") from exc
        finally:
            conn.close()
        owned_dirs.claim(self.dir, self.daemon.pid)  # kept while the daemon serves, even if this module is killed
        deadline = time.monotonic() + DAEMON_UP_WITHIN
        while not os.path.exists(os.path.join(self.work, "lazy-pages.socket")):
            if self.daemon.poll() is not None or time.monotonic() > deadline:
                raise OpError(f"criu lazy-pages did not come up (exit code {self.daemon.poll()}): "
                              f"{self.log_tail()}")
            time.sleep(0.01)
        self.started_at = time.time()

    def resumed(self) -> None:
        """Docker's restore is done: the container's later checkpoints and restores read runc.conf again."""
        if self.config:
            link = f"{self.config}.link"
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(RUNC_CONF, link)
            os.replace(link, self.config)

    def wait(self, timeout: float) -> tuple[bool, float]:
        """Wait for the last page: (every page arrived, seconds since the daemon started)."""
        if self.daemon is None:
            return False, 0.0
        try:
            rc = self.daemon.wait(timeout)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            rc = self.daemon.wait()
        self.complete = rc == 0
        return self.complete, round(time.time() - (self.started_at or time.time()), 3)

    def log_tail(self) -> str:
        """The daemon's last error, for a message."""
        try:
            with open(os.path.join(self.work, "lazy-pages.log"), encoding="utf-8", errors="replace") as handle:
                errors = [line.strip() for line in handle if "Error" in line]
        except OSError:
            return "no log"
        return errors[-1] if errors else "no error in its log"

    def abort(self) -> None:
        """Nothing more of this restore: the daemon stopped, the socket closed."""
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.kill()
            self.daemon.wait()

    def cleanup(self, keep_config: bool) -> None:
        """Remove this restore's directory (socket, work directory, logs); the configuration file too unless its
        container stays."""
        self.abort()
        shutil.rmtree(self.dir, ignore_errors=True)
        if not keep_config and self.config:
            try:
                os.unlink(self.config)
            except OSError:
                pass
