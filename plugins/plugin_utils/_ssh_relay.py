# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The controller's relay between two hosts that cannot reach each other: two SSH connections joined by pipes.

`ssh <source> <command>`'s output goes into `ssh <target> <command>`'s input through a bounded pump (the kernel moves
the bytes with splice: nothing is held in memory, nothing lands on the controller's disk), and the target's output
goes back to the source (the stream's "ready" and "done"). Used by the fleet.checkpoint.stream_relay action
(controller-side code: plugin_utils, not module_utils).
"""

from __future__ import annotations

import errno
import fcntl
import os
import resource
import shlex
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, cast

CHUNK = 1024 * 1024
# OpenSSH's default ciphers, AES-GCM first: every byte is encrypted twice on this path (source to controller,
# controller to target), and with AES instructions AES-GCM costs less CPU than ChaCha20 (about +25% throughput
# through the relay on the lab). The host's own ansible_ssh_common_args/extra_args take precedence.
CIPHERS = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
           "aes128-ctr,aes192-ctr,aes256-ctr")
_F_SETPIPE_SZ = 1031  # fcntl.F_SETPIPE_SZ (Linux), named in the fcntl module only from Python 3.10
TAIL = 8192  # bytes of each side's stderr kept for the report


class RelayError(Exception):
    """The relay could not be set up (bad login details); the message says which and why."""


# The ssh connection plugin's options the relay reads from Ansible's configuration (ansible.cfg, ANSIBLE_* environment
# variables, the host's variables), as Ansible resolves them for that host: (value, origin).
SSH_OPTIONS = ("ssh_args", "ssh_common_args", "ssh_extra_args", "port", "remote_user", "private_key_file",
               "ssh_executable", "host_key_checking")
Options = Mapping[str, "tuple[Any, str]"]


def login(name: str, hostvars: Mapping[str, Any], remote_user: str | None = None,
          private_key_file: str | None = None, host_key_checking: bool = True,
          options: Options | None = None) -> dict[str, Any]:
    """How the controller logs in to the inventory host `name`, from its variables as Ansible's ssh connection reads
    them (`remote_user` and `private_key_file` are the play's defaults, from -u / --private-key or AWX's credential),
    then from `options`: the ssh connection's options as Ansible's configuration gives them for this host
    (ansible.cfg's [ssh_connection] ssh_args, ssh_common_args and ssh_extra_args, [defaults] remote_port, their
    ANSIBLE_* environment variables; see SSH_OPTIONS)."""
    def var(*keys: str) -> Any:
        for key in keys:
            if hostvars.get(key) not in (None, ""):
                return hostvars[key]
        return None

    def configured(key: str, even_default: bool = True) -> Any:
        value, origin = (options or {}).get(key, (None, "default"))
        return value if value not in (None, "") and (even_default or origin != "default") else None

    connection = var("ansible_connection") or "ssh"
    if connection not in ("ssh", "smart", "paramiko", "paramiko_ssh", "ansible.builtin.ssh"):
        raise RelayError(f"{name} is reached with ansible_connection={connection}: the relay needs SSH to it")
    if var("ansible_password", "ansible_ssh_pass", "ansible_ssh_password"):
        raise RelayError(f"{name} logs in with a password: the relay needs key-based SSH (a key file or an agent)")
    # In the order Ansible's ssh connection gives them: ssh_args (only when set: Ansible's default turns on
    # compression and connection sharing, and compression is dropped in any case - checkpoint pages do not gain from
    # it), the host key policy, then port, key and user (below), then ssh_common_args and ssh_extra_args. For an
    # option given twice ssh takes the first value, so ssh_common_args cannot override the host's port or user.
    ssh_args = var("ansible_ssh_args") or configured("ssh_args", even_default=False) or ""
    early: list[str] = [word for word in shlex.split(str(ssh_args)) if word != "-C"]
    checking = var("ansible_ssh_host_key_checking", "ansible_host_key_checking")
    if checking is None and options is not None:
        checking = configured("host_key_checking")
    if checking is not None:
        host_key_checking = str(checking).lower() not in ("false", "no", "0", "off")
    if not host_key_checking:
        early += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
    args: list[str] = []
    for key in ("ssh_common_args", "ssh_extra_args"):
        value = var(f"ansible_{key}") or configured(key)
        if value:
            args += shlex.split(str(value))
    user = var("ansible_user", "ansible_ssh_user") or remote_user or configured("remote_user")
    method = var("ansible_become_method") or "sudo"
    if user not in (None, "root") and method != "sudo":
        raise RelayError(f"{name}: the relay becomes root with sudo (without a password), not {method}")
    port = var("ansible_port", "ansible_ssh_port") or configured("port", even_default=False)
    return {
        "name": name,
        "host": str(var("ansible_host", "ansible_ssh_host") or name),
        "port": int(port) if port else None,
        "user": user,
        "private_key_file": var("ansible_ssh_private_key_file", "ansible_private_key_file") or private_key_file
        or configured("private_key_file"),
        "early": early,
        "args": args,
        "sudo": user not in (None, "root"),
        "ssh": var("ansible_ssh_executable") or configured("ssh_executable") or "ssh",
    }


def ssh_argv(host: Mapping[str, Any], remote: Sequence[str]) -> list[str]:
    """The ssh command line that runs `remote` (an argv) as root on `host` (a login())."""
    # The host's own SSH arguments before the relay's: for an option given twice, ssh takes the first value, so
    # theirs win (see login() for their order).
    argv = [host["ssh"]] + list(host.get("early") or [])
    if host.get("port"):
        argv += ["-p", str(host["port"])]
    if host.get("private_key_file"):
        argv += ["-i", os.path.expanduser(str(host["private_key_file"]))]
    if host.get("user"):
        argv += ["-l", str(host["user"])]
    argv += list(host.get("args") or []) + [
        "-x", "-a", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4", "-o", "Compression=no", "-o", f"Ciphers={CIPHERS}"]
    command = (["sudo", "-n", "--"] if host.get("sudo") else []) + list(remote)
    return argv + ["--", str(host["host"]), " ".join(shlex.quote(part) for part in command)]


def _pump(source: int, sink: int, counter: list[int]) -> None:
    """Copy source to sink until the end (or until either side breaks), then close both (the far ends see it);
    counts the bytes in counter[0]."""
    use_splice = hasattr(os, "splice")  # Python 3.10+: the kernel moves the bytes, Python never holds them
    try:
        while True:
            if use_splice:
                try:
                    moved = os.splice(source, sink, CHUNK)
                except OSError as exc:
                    if exc.errno != errno.EINVAL or counter[0]:
                        raise
                    use_splice = False  # not on these descriptors
                    continue
            else:
                data = os.read(source, CHUNK)
                view = memoryview(data)
                while view:
                    view = view[os.write(sink, view):]
                moved = len(data)
            if not moved:
                return
            counter[0] += moved
    except OSError:
        return
    finally:
        os.close(source)
        os.close(sink)


def _tail(stream: IO[bytes], into: list[bytes]) -> None:
    kept = b""
    for line in iter(lambda: stream.read(4096), b""):
        kept = (kept + line)[-TAIL:]
    into.append(kept)


def run(source_argv: Sequence[str], target_argv: Sequence[str], timeout: float,
        answers_back: bool = True) -> dict[str, Any]:
    """Run both commands, the source's output into the target's input (and, with answers_back, the target's output
    into the source's input; else it is kept for the report). Kills both after `timeout` seconds. Returns the exit
    codes, the stderr tails, the bytes relayed each way, the seconds, and the peak memory (RSS) of the relay and of
    its SSH clients."""
    forward = [0]
    back = [0]
    errors: dict[str, list[bytes]] = {"source": [], "target": []}
    begin = time.monotonic()
    # Popen, not a shell pipeline: the relay counts the bytes and holds no more than a pipe's worth at a time.
    src = subprocess.Popen(  # pylint: disable=consider-using-with
        list(source_argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        dst = subprocess.Popen(  # pylint: disable=consider-using-with
            list(target_argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError:
        src.kill()
        src.wait()
        raise
    src_in, src_out = cast(IO[bytes], src.stdin), cast(IO[bytes], src.stdout)
    dst_in, dst_out = cast(IO[bytes], dst.stdin), cast(IO[bytes], dst.stdout)
    for pipe in (src_out, dst_in):  # 1 MiB pipes on the stream's way: fewer wake-ups of the ssh clients and the pump
        try:
            fcntl.fcntl(pipe.fileno(), _F_SETPIPE_SZ, CHUNK)
        except OSError:
            pass
    answers: list[bytes] = []
    threads = [
        threading.Thread(target=_pump, args=(os.dup(src_out.fileno()), os.dup(dst_in.fileno()), forward)),
        threading.Thread(target=_tail, args=(cast(IO[bytes], src.stderr), errors["source"])),
        threading.Thread(target=_tail, args=(cast(IO[bytes], dst.stderr), errors["target"])),
    ]
    if answers_back:
        threads.append(threading.Thread(target=_pump, args=(os.dup(dst_out.fileno()), os.dup(src_in.fileno()), back)))
    else:
        src_in.close()
        threads.append(threading.Thread(target=_tail, args=(dst_out, answers)))
    for handle in (src_out, dst_in) + ((dst_out, src_in) if answers_back else ()):
        handle.close()  # the pumps hold their own copies: an end closed there is the end
    for thread in threads:
        thread.daemon = True
        thread.start()
    timed_out = False
    for proc in (src, dst):
        try:
            proc.wait(max(0.0, timeout - (time.monotonic() - begin)))
        except subprocess.TimeoutExpired:
            timed_out = True
            src.kill()
            dst.kill()
            proc.wait()
    for proc in (src, dst):
        if proc.poll() is None:  # the other side's end did not end this one within a while: it is stuck
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    for thread in threads:
        thread.join(10)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "source_rc": src.returncode,
        "target_rc": dst.returncode,
        "source_stderr": b"".join(errors["source"]).decode("utf-8", "replace").strip(),
        "target_stderr": b"".join(errors["target"]).decode("utf-8", "replace").strip(),
        "target_stdout": b"".join(answers).decode("utf-8", "replace").strip(),
        "bytes": forward[0],
        "bytes_back": back[0],
        "seconds": round(time.monotonic() - begin, 3),
        "timed_out": timed_out,
        "peak_rss": {"relay": own, "ssh": children},
    }
