# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Benchmark cases that run on one lab host (copied there by tools/bench/run.py), timed on the host itself.

`python3 onhost.py CASE ARG...` prints one JSON object: {"samples": {name: [seconds, ...]}, "info": {...}}.
Every case builds its own workload, times the raw engine (CRIU, the Docker CLI, Podman), and removes what it made.
The workload is memhog (tests/lab/workload/memhog.c): N MiB of touched, incompressible memory, then a count.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

IMAGE = os.environ.get("WORKLOAD_IMAGE", "fleet-lab-workload:busybox")
WORK = "/var/lib/fleet-bench"


def sh(*argv, check=True, timeout=600, **kw):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kw)
    if check and proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def timed(*argv, **kw):
    start = time.monotonic()
    sh(*argv, **kw)
    return round(time.monotonic() - start, 4)


def wait_for(predicate, what, seconds=120):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


def counted(log_text):
    """The workload has filled its memory once it printed its first number."""
    return any(line.strip().isdigit() for line in log_text.splitlines())


def private_dir(name):
    os.makedirs(WORK, mode=0o700, exist_ok=True)
    os.chmod(WORK, 0o700)
    path = os.path.join(WORK, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    return path


# -- raw CRIU on a plain process: the floor --------------------------------------------------------------------------
def case_criu(mib, reps):
    """`criu dump` / `criu restore` of memhog run as a plain process (its own session, output to a file), images
    written where Docker writes its checkpoints (its root directory's filesystem)."""
    mib, reps = int(mib), int(reps)
    # The images go to the filesystem Docker's checkpoints go to (its root dir), in a directory of our own.
    root = sh("docker", "info", "-f", "{{.DockerRootDir}}").stdout.strip()
    base = os.path.join(root, "fleet-bench", f"criu-{mib}")
    shutil.rmtree(base, ignore_errors=True)
    os.makedirs(base, mode=0o700)
    memhog = os.path.join(base, "memhog")
    # The container's binary, copied out of the workload image (static, so it runs on the host as it is).
    cid = sh("docker", "create", IMAGE, "true").stdout.strip()
    try:
        sh("docker", "cp", f"{cid}:/usr/local/bin/memhog", memhog)
    finally:
        sh("docker", "rm", "-f", cid, check=False)
    out = os.path.join(base, "out.log")
    with open(out, "wb") as log, open(os.devnull, "rb") as null:
        proc = subprocess.Popen([memhog, str(mib)], stdin=null, stdout=log, stderr=log, start_new_session=True,
                                env={"COUNTER_INTERVAL": "0.2"})
    pid = proc.pid
    samples = {"dump": [], "restore": []}
    try:
        wait_for(lambda: counted(open(out).read()), f"memhog {mib} to fill its memory")
        for rep in range(reps):
            images = os.path.join(base, f"img-{rep}")
            os.makedirs(images, mode=0o700)
            samples["dump"].append(timed("criu", "dump", "-t", str(pid), "-D", images, "-o", "dump.log"))
            if proc is not None:  # reap the original, so that its PID is free for the restore
                proc.wait(timeout=10)
                proc = None
            samples["restore"].append(timed("criu", "restore", "-d", "-D", images, "-o", "restore.log"))
            size = sum(os.path.getsize(os.path.join(images, f)) for f in os.listdir(images))
            shutil.rmtree(images)
    finally:
        sh("kill", "-9", str(pid), check=False)
        if proc is not None:
            proc.wait(timeout=10)
        shutil.rmtree(os.path.dirname(base), ignore_errors=True)
    return {"samples": samples, "info": {"bytes": size}}


# -- Docker's CLI ------------------------------------------------------------------------------------------------------
def docker_start(name, mib):
    sh("docker", "rm", "-f", name, check=False)
    sh("docker", "run", "-d", "--name", name, "-e", "COUNTER_INTERVAL=0.2", IMAGE, "memhog", str(mib))
    wait_for(lambda: counted(sh("docker", "logs", name, check=False).stdout), f"{name} to fill its memory")


def drop_unpacked_copies():
    """containerd leaves every checkpoint Docker restored unpacked in /tmp (a tmpfs: memory); not timed."""
    for entry in os.listdir("/tmp"):
        if entry.startswith("ctrd-checkpoint"):
            shutil.rmtree(os.path.join("/tmp", entry), ignore_errors=True)


STALE_BLOB = re.compile(r"content (sha256:[0-9a-f]{64}): already exists")


def cli_restore(checkpoint, name):
    """`docker start --checkpoint`, timed. Docker's known trap (LAB-FACTS): when containerd's content store still holds
    a byte-identical blob from an earlier restore, the upload refuses to commit over it; as an operator would, the
    stale blob is removed (not timed) and the restore typed again, and that attempt is the sample."""
    argv = ("docker", "start", "--checkpoint", checkpoint, name)
    start = time.monotonic()
    proc = sh(*argv, check=False)
    stale = STALE_BLOB.search(proc.stderr)
    if proc.returncode == 0:
        return round(time.monotonic() - start, 4)
    if not stale:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    sh("ctr", "-n", "moby", "content", "rm", stale.group(1), check=False)
    return timed(*argv)


def checkpoint_bytes(name, checkpoint):
    cid = sh("docker", "inspect", "-f", "{{.Id}}", name).stdout.strip()
    root = sh("docker", "info", "-f", "{{.DockerRootDir}}").stdout.strip()
    path = os.path.join(root, "containers", cid, "checkpoints", checkpoint)
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path)) if os.path.isdir(path) else 0


def case_docker(mib, reps):
    """`docker checkpoint create` (the container stops) and `docker start --checkpoint`, one container."""
    mib, reps = int(mib), int(reps)
    name = f"bench-docker-{mib}"
    samples = {"dump": [], "restore": []}
    size = 0
    docker_start(name, mib)
    try:
        for rep in range(reps):
            checkpoint = f"cli{rep}"
            samples["dump"].append(timed("docker", "checkpoint", "create", name, checkpoint))
            size = checkpoint_bytes(name, checkpoint)
            samples["restore"].append(cli_restore(checkpoint, name))
            sh("docker", "checkpoint", "rm", name, checkpoint, check=False)
            drop_unpacked_copies()
    finally:
        sh("docker", "rm", "-f", name, check=False)
    return {"samples": samples, "info": {"bytes": size}}


def case_docker_loop(count, mib, reps):
    """The CLI one container after another (a shell loop): checkpoint all, then restore all."""
    count, mib, reps = int(count), int(mib), int(reps)
    names = [f"bench-loop-{i}" for i in range(count)]
    samples = {"dump": [], "restore": []}
    for name in names:
        docker_start(name, mib)
    try:
        for rep in range(reps):
            checkpoint = f"loop{rep}"
            start = time.monotonic()
            for name in names:
                sh("docker", "checkpoint", "create", name, checkpoint)
            samples["dump"].append(round(time.monotonic() - start, 4))
            samples["restore"].append(round(sum(cli_restore(checkpoint, name) for name in names), 4))
            for name in names:
                sh("docker", "checkpoint", "rm", name, checkpoint, check=False)
            drop_unpacked_copies()
    finally:
        for name in names:
            sh("docker", "rm", "-f", name, check=False)
    return {"samples": samples, "info": {}}


def case_workload(action, count, mib, prefix):
    """Start (or remove) COUNT memhog containers named PREFIX-I, for the module's cases."""
    names = [f"{prefix}-{i}" for i in range(int(count))]
    for name in names:
        if action == "start":
            docker_start(name, int(mib))
        else:
            sh("docker", "rm", "-f", name, check=False)
    return {"samples": {}, "info": {"containers": names}}


# -- Podman ------------------------------------------------------------------------------------------------------------
STORAGE_CONF = """# fleet.checkpoint benchmark: no fuse in a lab host, so the vfs driver.
[storage]
driver = "vfs"
runroot = "/run/containers/storage"
graphroot = "/var/lib/containers/storage"
"""


def podman_ready():
    if not shutil.which("podman"):
        sh("apt-get", "update", "-q", timeout=900)
        sh("apt-get", "install", "-y", "-q", "--no-install-recommends", "podman", "crun", "conmon", "catatonit",
           "netavark", "aardvark-dns", timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    os.makedirs("/etc/containers", exist_ok=True)
    if not os.path.exists("/etc/containers/storage.conf") or open("/etc/containers/storage.conf").read() != STORAGE_CONF:
        with open("/etc/containers/storage.conf", "w") as conf:
            conf.write(STORAGE_CONF)
        sh("podman", "system", "reset", "-f", check=False)
    label = '{{ index .Config.Labels "fleet.lab.definition" }}'
    if (sh("podman", "image", "inspect", "-f", label, IMAGE, check=False).stdout.strip()
            != sh("docker", "image", "inspect", "-f", label, IMAGE).stdout.strip()):  # absent, or an older one
        save = subprocess.Popen(["docker", "save", IMAGE], stdout=subprocess.PIPE)
        sh("podman", "load", stdin=save.stdout)
        save.wait()


def case_podman(mib, reps):
    """`podman container checkpoint` / `podman container restore` of the same workload: vfs storage, no network,
    and runc, the OCI runtime Docker uses (crun would need libcriu, which is not part of CRIU's install here)."""
    mib, reps = int(mib), int(reps)
    podman_ready()
    name = f"bench-podman-{mib}"
    sh("podman", "rm", "-f", name, check=False)
    sh("podman", "run", "-d", "--runtime", "runc", "--network", "none", "--name", name, "-e", "COUNTER_INTERVAL=0.2",
       IMAGE, "memhog", str(mib))
    samples = {"dump": [], "restore": []}
    try:
        wait_for(lambda: counted(sh("podman", "logs", name, check=False).stdout), f"{name} to fill its memory")
        for _rep in range(reps):
            samples["dump"].append(timed("podman", "container", "checkpoint", name))
            samples["restore"].append(timed("podman", "container", "restore", name))
        version = sh("podman", "version", "-f", "{{.Client.Version}}").stdout.strip()
        runtime = sh("podman", "inspect", "-f", "{{.OCIRuntime}}", name).stdout.strip()
    finally:
        sh("podman", "rm", "-f", name, check=False)
    return {"samples": samples, "info": {"podman": version, "runtime": runtime}}


# -- plain copy between two hosts -------------------------------------------------------------------------------------
def case_copy(path, target, port, reps):
    """scp of the same file to another host, the options migrate.yml uses (the plain-copy baseline)."""
    samples = {"copy": []}
    for _rep in range(int(reps)):
        samples["copy"].append(timed("scp", "-q", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                                     "-o", "UserKnownHostsFile=/dev/null", "-P", str(port), path,
                                     f"root@{target}:/var/tmp/fleet-bench-copy.tmp"))
    sh("ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
       "-p", str(port), f"root@{target}", "rm", "-f", "/var/tmp/fleet-bench-copy.tmp", check=False)
    return {"samples": samples, "info": {"bytes": os.path.getsize(path)}}


def case_copy_random(size, target, reps):
    """The plain-copy baseline: scp of SIZE random bytes to TARGET (port 22, this host's key), as migrate.yml does."""
    path = os.path.join(private_dir("copy"), "random.bin")
    with open("/dev/urandom", "rb") as source, open(path, "wb") as out:
        left = int(size)
        while left > 0:
            left -= out.write(source.read(min(left, 1 << 22)))
    try:
        return case_copy(path, target, 22, reps)
    finally:
        shutil.rmtree(os.path.dirname(path), ignore_errors=True)


def case_versions():
    def out(*argv):
        proc = sh(*argv, check=False)
        return (proc.stdout or proc.stderr).strip()
    return {"samples": {}, "info": {
        "docker": out("docker", "version", "-f", "{{.Server.Version}}"),
        "containerd": out("containerd", "--version").split()[2] if shutil.which("containerd") else "",
        "runc": out("runc", "--version").splitlines()[0].split()[-1] if shutil.which("runc") else "",
        "criu": out("criu", "--version").splitlines()[0].split()[-1] if shutil.which("criu") else "",
        "kernel": os.uname().release,
        "cpus": os.cpu_count(),
    }}


CASES = {"criu": case_criu, "docker": case_docker, "docker-loop": case_docker_loop, "workload": case_workload,
         "podman": case_podman, "copy": case_copy, "copy-random": case_copy_random, "versions": case_versions}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in CASES:
        raise SystemExit(f"usage: onhost.py {{{','.join(CASES)}}} ARG...")
    tempfile.tempdir = WORK
    print(json.dumps(CASES[sys.argv[1]](*sys.argv[2:])))
