"""Fixtures for the integration tests: a real lab fleet (tests/lab), driven through Ansible and Docker.

Nothing here is mocked. When the lab is not up, the session fixture brings it up (never skips).

The tests run on a set of hosts like the default lab's: three trixie hosts and a bookworm host. Under pytest-xdist
(`pytest -n 2`, as `make integration` runs them) each worker has a set of its own (`LAB_HOSTS=6 LAB_BOOKWORM=2`:
worker 0 fleet-lab-1..3 and fleet-lab-bookworm, worker 1 fleet-lab-4..6 and fleet-lab-2-bookworm), with an
inventory that lists only those, and whole test modules are shared out between the workers (FleetScheduling).
"""

import contextlib
import fcntl
import json
import os
import re
import resource
import subprocess
import pathlib
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
LAB = ROOT / "tests" / "lab"
LAB_STATE = pathlib.Path(os.environ.get("LAB_STATE", "/var/lib/fleet-lab"))
# The whole lab, as tests/lab/up.sh writes it.
LAB_INVENTORY = LAB / "inventory.yml"
LAB_DOCKER_INVENTORY = LAB / "inventory-docker.yml"
# This worker's set of hosts (all of the default lab when pytest runs alone), written by the lab fixture.
WORKER = os.environ.get("PYTEST_XDIST_WORKER")
HOST_SET = int(WORKER[2:]) % int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) if WORKER else 0
INVENTORY = ROOT / ".build" / "lab" / f"inventory-{WORKER or 'main'}.yml"
DOCKER_INVENTORY = ROOT / ".build" / "lab" / f"inventory-docker-{WORKER or 'main'}.yml"
# What the fixtures and the scheduler decided (hosts reused or reset and prepared again, modules to workers), for
# whoever wonders where a session's time went.
DECISIONS = ROOT / ".build" / "lab" / "decisions.log"


def decided(message):
    DECISIONS.parent.mkdir(parents=True, exist_ok=True)
    with open(DECISIONS, "a", encoding="utf-8") as log:
        log.write(f"{time.strftime('%H:%M:%S')} {WORKER or 'main'}: {message}\n")


if WORKER:
    # The controller-side files of one worker's runs (migrate's transfer directory, say) must not be seen by the
    # other's checks for leftovers.
    _TMP = pathlib.Path(tempfile.gettempdir()) / f"fleet-tests-{WORKER}"
    _TMP.mkdir(exist_ok=True)
    os.environ["TMPDIR"] = tempfile.tempdir = str(_TMP)


def _children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd, check=True, env=None, timeout=600, **kwargs):
    """Run a command, returning the CompletedProcess; on failure the error shows its output."""
    full_env = dict(os.environ, **(env or {}))
    started, cpu = time.monotonic(), _children_cpu()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout, check=False, **kwargs)
    # FLEET_CMD_LOG=FILE: where the suite's time goes, one JSON line per command (its CPU: what this process's waited
    # children used meanwhile - approximate while a test runs commands from several threads)
    if os.environ.get("FLEET_CMD_LOG"):
        with open(os.environ["FLEET_CMD_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", ""), "cmd": [str(c) for c in cmd][:8],
                                  "wall": round(time.monotonic() - started, 3),
                                  "cpu": round(_children_cpu() - cpu, 3)}) + "\n")
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{cmd} exited {proc.returncode}\n--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
        )
    return proc


def lab_exec(host, *args, check=True):
    """Run a command inside a lab host (through the outer Docker engine, not through Ansible)."""
    return run(["docker", "exec", host, *args], check=check)


def sh(host, script, check=True):
    """Run a shell script inside a lab host."""
    return lab_exec(host, "sh", "-c", script, check=check)


def counts(host, name):
    """The numbers a lab counter workload has printed (its docker logs), in order."""
    proc = lab_exec(host, "docker", "logs", name, check=False)
    if proc.returncode != 0 and "Error grabbing logs" in proc.stderr:
        # A Docker daemon killed mid-write leaves a broken line in the json-file log, and `docker logs` stops there:
        # read the log file itself, line by line, skipping what is broken.
        path = lab_exec(host, "docker", "inspect", "-f", "{{.LogPath}}", name).stdout.strip()
        lines = []
        for raw in lab_exec(host, "cat", path).stdout.splitlines():
            try:
                lines.append(json.loads(raw)["log"])
            except (ValueError, KeyError):
                continue
        return [int(line) for line in "".join(lines).split() if line.isdigit()]
    if proc.returncode != 0:
        raise AssertionError(f"docker logs {name} on {host} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return [int(line) for line in proc.stdout.split() if line.isdigit()]


# systemd refuses a 4th start of docker.service within 60 s (Debian's start limit) and then leaves docker.socket
# holding clients forever; the tests restart Docker far more often than a host does, so they forget earlier starts.
FORGET_STARTS = "systemctl reset-failed docker.service docker.socket"


def docker_up(host, seconds=120):
    """Docker answering on a lab host (started if systemd gave up on it); the unit's status in the error if not."""
    proc = sh(host, f"{FORGET_STARTS}; systemctl start docker.socket docker.service; "
                    f"timeout {seconds} sh -c 'until docker info >/dev/null 2>&1; do sleep 1; done'", check=False)
    if proc.returncode != 0:
        status = sh(host, "systemctl status --no-pager docker.service docker.socket 2>&1 | tail -n 30", check=False)
        raise AssertionError(f"Docker did not come back on {host} within {seconds}s:\n{status.stdout}")


# Everything a test may leave in a host's state directories or root's home, besides containers and CRIU.
LEFTOVERS = ("/root/bad /root/archives /root/tight.key /root/loose.key /root/archive.key /srv/fleet-archives "
             "/root/lab-known-hosts /root/.ssh/id_ed25519 /root/.ssh/known_hosts /root/grpc-probe /run/reboot-required")


CRIU_PACKAGES = "criu libcompel1 python3-pycriu libcriu2"
# True when a host already is what as_shipped() makes of it (a fresh lab, or the previous module left it so): then
# neither apt nor a Docker restart is needed.
SHIPPED_ALREADY = (
    "[ -z \"$(docker ps -aq)$(docker volume ls -q)\" ] "
    f"&& ! dpkg -l {CRIU_PACKAGES} 2>/dev/null | grep -q '^[ir]' "
    "&& ! ls -d /etc/criu /etc/apt/sources.list.d/fleet-checkpoint* /etc/apt/preferences.d/fleet-checkpoint* "
    "/etc/docker/daemon.json* /etc/systemd/system/docker.service.d /var/lib/fleet-checkpoint {leftovers} {mark} "
    "2>/dev/null | grep -q . "
    "&& ! grep -q ' /var/lib/fleet-checkpoint' /proc/mounts "
    "&& [ \"$(timeout 20 docker info --format '{{{{.ExperimentalBuild}}}} {{{{.LiveRestoreEnabled}}}} "
    "{{{{.Swarm.LocalNodeState}}}}')\" = 'false false inactive' ] "
    "&& systemctl is-active -q docker.service docker.socket containerd.service ssh.service")


def as_shipped(host):
    """A lab host as the image ships it: no containers or volumes, no CRIU, no daemon.json, no fleet.checkpoint state."""
    if sh(host, SHIPPED_ALREADY.format(leftovers=LEFTOVERS, mark=PREPARED_MARK), check=False).returncode == 0:
        decided(f"{host}: as shipped already")
        return
    decided(f"{host}: reset to as shipped")
    docker_up(host)
    # A container Docker cannot stop (see test_faults.clean) does not hold this up: the daemon is killed instead.
    # (Docker 20.10 on bookworm has no `volume prune -a`: plain prune there, not a killed daemon.)
    sh(host, "timeout 60 sh -c 'docker rm -f $(docker ps -aq) >/dev/null 2>&1; "
             "docker volume prune -af 2>/dev/null || docker volume prune -f' "
             f">/dev/null 2>&1 || {{ {FORGET_STARTS}; systemctl kill -s KILL docker.service; }}; umount /var/lib/fleet-checkpoint/migrate 2>/dev/null; "
             f"dpkg -l {CRIU_PACKAGES} 2>/dev/null | grep -q '^[ir]' && DEBIAN_FRONTEND=noninteractive "
             f"apt-get purge -y -qq {CRIU_PACKAGES} >/dev/null 2>&1; rm -rf /etc/criu /etc/apt/sources.list.d/fleet-checkpoint* "
             f"/etc/apt/preferences.d/fleet-checkpoint* /etc/docker/daemon.json* /var/lib/fleet-checkpoint {LEFTOVERS} "
             f"{PREPARED_MARK}; {FORGET_STARTS}; systemctl restart docker.service; true")
    docker_up(host)
    sh(host, "timeout 60 sh -c 'docker rm -f $(docker ps -aq) >/dev/null 2>&1; true'", check=False)


# -- A prepared fleet, shared ------------------------------------------------------------------------------------------
# Preparing a host (the install playbook: CRIU from testing, experimental mode) costs 15-25 s; resetting it to "as
# shipped" first costs a Docker restart. Test modules that only need "CRIU installed and experimental mode on" share
# hosts prepared once: `ready()` removes what the previous module left (containers, volumes, checkpoints, manifests,
# locks, archives, keys) and checks that the host's configuration is still exactly what the install playbook made of
# it. A host whose configuration changed since (a module that reset it, a test that turned live-restore on, a daemon
# that does not answer) is reset and prepared again. The fingerprint taken right after the install playbook is kept
# on the host itself (PREPARED_MARK), so a later pytest session reuses the hosts an earlier one prepared.
PREPARED_MARK = "/etc/fleet-lab-prepared"
FINGERPRINT = r"""
dpkg-query -W -f '${Package} ${Status} ${Version}\n' criu libcompel1 python3-pycriu libcriu2 2>/dev/null | sort
for f in /etc/docker/daemon.json* /etc/criu/* /etc/apt/sources.list.d/* /etc/apt/preferences.d/* /etc/apt/keyrings/* \
         /etc/default/docker /etc/systemd/system/docker.service.d/* /var/lib/fleet-checkpoint/criu-selftest.json; do
  [ -e "$f" ] && md5sum "$f"
done
stat -c '%a %U %n' /usr/sbin/criu /etc/criu /var/log/criu /var/lib/fleet-checkpoint 2>/dev/null
timeout 20 docker info --format '{{.ExperimentalBuild}} {{.LiveRestoreEnabled}} {{.Swarm.LocalNodeState}}' 2>&1
systemctl is-active docker.service docker.socket containerd.service ssh.service
"""


def fingerprint(host):
    return sh(host, FINGERPRINT, check=False).stdout


def remove_leftovers(host):
    """What tests leave on a host besides its configuration: containers, volumes, mounts, background lock holders,
    fleet.checkpoint's state files (not the install's self-test cache), archives and keys. Docker is not restarted.
    True when every container could be removed (not so when Docker cannot stop one, or does not answer)."""
    removed = sh(host, "timeout 60 sh -c 'docker rm -f $(docker ps -aq) >/dev/null 2>&1; "
                       "docker volume prune -af >/dev/null 2>&1 || docker volume prune -f >/dev/null 2>&1; "
                       "[ -z \"$(docker ps -aq)\" ]'", check=False)
    sh(host, "pkill -f '^flock /var/lib/fleet-checkpoint/lock' ; pkill -x -f 'sleep 61'; "
             "for m in $(awk '$2 ~ \"^/var/lib/(docker/containers|fleet-checkpoint)\" {print $2}' /proc/mounts "
             "| sort -r); do umount $m; done; "
             "find /var/lib/fleet-checkpoint -mindepth 1 -maxdepth 1 ! -name criu-selftest.json -exec rm -rf {} +; "
             f"rm -rf {LEFTOVERS}; true")
    return removed.returncode == 0


def tidy(host):
    """What a test module leaves on a prepared host, removed; True when the host is still exactly as prepared."""
    if not remove_leftovers(host):
        decided(f"{host}: containers could not be removed: reset")
        return False
    mark = sh(host, f"cat {PREPARED_MARK} 2>/dev/null || true").stdout
    now = fingerprint(host)
    if mark != now:
        changed = sorted(set(mark.splitlines()) ^ set(now.splitlines())) if mark else ["not prepared"]
        decided(f"{host}: not as prepared ({'; '.join(changed)[:400]}): reset and prepare")
        return False
    decided(f"{host}: as prepared, tidied")
    return True


def ready(hosts):
    """These hosts prepared (CRIU, experimental mode) with nothing left by earlier tests; reset and prepared only when
    their configuration is not what the install playbook made of it."""
    hosts = list(hosts)
    verdicts = {}

    def check(host):
        verdicts[host] = tidy(host)

    with lab_turn():
        on_hosts(check, hosts)
        stale = [host for host in hosts if not verdicts[host]]
        if stale:
            on_hosts(as_shipped, stale)
            prepared(stale)
            on_hosts(lambda host: run(["docker", "exec", "-i", host, "sh", "-c", f"cat > {PREPARED_MARK}"],
                                      input=fingerprint(host)), stale)
    return hosts


def on_hosts(action, hosts):
    """action(host) on every host at once (each only talks to its own host); the first failure is raised once all
    are done. Resetting hosts one after another cost the suite minutes of waiting on apt and Docker restarts."""
    hosts = list(hosts)
    with ThreadPoolExecutor(max_workers=max(len(hosts), 1)) as pool:
        futures = [pool.submit(action, host) for host in hosts]
    for future in futures:
        future.result()


def prepared(hosts):
    """CRIU (criu role with the lab's overrides) and experimental mode on these hosts, through the install playbook."""
    ansible_playbook(ROOT / "playbooks" / "install.yml", limit=",".join(hosts))


def run_module(host, module, check=False, diff=False, pipelining=True, **args):
    """Run one module on one lab host over SSH (ad hoc, JSON callback); return its result."""
    flags = (["--check"] if check else []) + (["--diff"] if diff else []) + (["-a", json.dumps(args)] if args else [])
    proc = run(["ansible", host, "-i", str(INVENTORY), "-m", module, *flags], check=False,
               env=ansible_json_env(pipelining))
    return json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"][host]


def ansible_json_env(pipelining=True):
    """Ansible's settings for the tests: the JSON callback, and pipelining (one SSH round trip per task instead of
    three, as docs/performance.md recommends; a test that must find the module's AnsiballZ file turns it off)."""
    return {
        "ANSIBLE_PIPELINING": str(pipelining),
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_SHOW_CUSTOM_STATS": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
    }


def ansible_playbook(playbook, inventory=INVENTORY, extra_vars=None, check=True, limit=None, options=()):
    """Run ansible-playbook with the JSON callback; return (returncode, parsed result)."""
    cmd = ["ansible-playbook", "-i", str(inventory), str(playbook), *options]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if limit:
        cmd += ["--limit", limit]
    proc = run(cmd, check=check, env=ansible_json_env())
    return proc.returncode, json.loads(proc.stdout)


def ansible_adhoc(pattern, module, args="", inventory=INVENTORY, check=True):
    """Run an ad-hoc module with the JSON callback; return {host: result}."""
    cmd = ["ansible", pattern, "-i", str(inventory), "-m", module]
    if args:
        cmd += ["-a", args]
    proc = run(cmd, check=check, env=ansible_json_env())
    data = json.loads(proc.stdout)
    return {host: res for play in data["plays"] for task in play["tasks"] for host, res in task["hosts"].items()}


def inventory_hosts(path=INVENTORY):
    """Host names listed in a generated lab inventory."""
    hosts = []

    def walk(group):
        hosts.extend((group.get("hosts") or {}).keys())
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(yaml.safe_load(path.read_text())["all"])
    return hosts


def host_set(hosts, index):
    """Set number `index` of the lab: three trixie hosts and a bookworm host (when the lab has one for it)."""
    trixie = sorted((h for h in hosts if not h.endswith("-bookworm")), key=lambda h: int(h.rsplit("-", 1)[1]))
    bookworm = sorted((h for h in hosts if h.endswith("-bookworm")), key=lambda h: (len(h), h))
    chosen = trixie[3 * index:3 * index + 3]
    assert len(chosen) == 3 or (index == 0 and chosen), (
        f"host set {index} needs trixie hosts {3 * index + 1}-{3 * index + 3}, the lab has {trixie}: "
        "bring it up with LAB_HOSTS=6 LAB_BOOKWORM=2 tests/lab/up.sh (as make integration does)")
    return chosen + bookworm[index:index + 1]


def write_inventory(source, target, hosts):
    """A copy of a generated lab inventory that lists only `hosts` (groups and variables kept)."""
    data = yaml.safe_load(source.read_text())

    def walk(group):
        if group.get("hosts"):
            group["hosts"] = {name: value for name, value in group["hosts"].items() if name in hosts}
        for child in (group.get("children") or {}).values():
            walk(child or {})

    walk(data["all"])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text("---\n# Generated by tests/integration/conftest.py from " + source.name + ": one set of lab hosts.\n"
                      + yaml.safe_dump(data, sort_keys=False))


_TURNS = []


@contextlib.contextmanager
def lab_turn(whole_lab=False):
    """Under pytest -n, every test and every fixture that resets or prepares hosts runs holding a shared lock on the
    lab; a test that acts on every lab host (such as tests/lab/up.sh) holds it alone, so that it runs while nothing
    happens on the other set of hosts. A turnstile keeps such a test from waiting forever behind the other worker's
    stream of shared holds. Nested turns (a fixture inside a test's turn) take nothing more. Nothing to share when
    pytest runs alone."""
    if not WORKER or _TURNS:
        yield
        return
    LAB_STATE.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(LAB_STATE / "tests.turnstile", "a", encoding="utf-8") as turnstile, \
            open(LAB_STATE / "tests.lock", "a", encoding="utf-8") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if whole_lab else fcntl.LOCK_SH)
        finally:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        _TURNS.append(lock)
        try:
            yield
        finally:
            _TURNS.pop()
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def lab_share(request):
    """The lab turn of each test (see lab_turn)."""
    with lab_turn(whole_lab=request.node.get_closest_marker("whole_lab") is not None):
        yield


@pytest.fixture(scope="session")
def lab():
    """The lab fleet, up; returns the host names of this worker's set (as in its generated inventory). What the tests
    left running on the hosts (containers, checkpoints, archives) is removed at the end of the session."""
    with lab_turn(whole_lab=True):
        if not LAB_INVENTORY.exists():
            run([str(LAB / "up.sh")], timeout=1800)
    hosts = host_set(inventory_hosts(LAB_INVENTORY), HOST_SET)
    write_inventory(LAB_INVENTORY, INVENTORY, hosts)
    write_inventory(LAB_DOCKER_INVENTORY, DOCKER_INVENTORY, hosts)
    hosts = inventory_hosts()
    assert hosts, f"{INVENTORY} lists no hosts"
    yield hosts
    on_hosts(remove_leftovers, hosts)


# Test modules in the order that changes the hosts' configuration least often: those that start from hosts as the
# image ships them first (a fresh lab is that already), then those that share the prepared fleet (conftest.ready).
# test_docker_checkpoint, the longest module, comes early: last on its worker it was a tail of 2.5 minutes during which
# the other worker had nothing left to take (fresh12, fresh13); it takes CRIU off its third host, which the next
# module's ready() prepares again (one install run on one host). Tests keep their order within a module. Any order
# works (each module's fixtures bring the hosts to what it needs); this one is only the cheapest.
MODULE_ORDER = ("test_lab", "test_docker_experimental", "test_criu", "test_docker_checkpoint", "test_fleet_ops",
                "test_group", "test_soak", "test_faults", "test_bad_inputs", "test_security", "test_awx")


# Last of all, after the modules MODULE_ORDER does not name: a whole_lab module (see test_lab_again.py).
LAST_MODULES = ("test_lab_again",)


def module_rank(path):
    name = pathlib.PurePath(path).stem
    if name in LAST_MODULES:
        return len(MODULE_ORDER) + 1
    return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: module_rank(item.path))


# Seconds one test of each module takes on the lab, its share of the module's fixtures included (measured under
# `pytest -n 2 --durations=0`, 2026-12-04: the sum of each module's call, setup and teardown seconds over its tests):
# what the plan below shares out.
SECONDS_PER_TEST = {"test_lab": 4, "test_docker_experimental": 5, "test_criu": 14, "test_fleet_ops": 22,
                    "test_soak": 58, "test_faults": 20, "test_bad_inputs": 36, "test_security": 11, "test_awx": 18,
                    "test_docker_checkpoint": 12, "test_migrate_disk": 15, "test_group": 36, "test_lazy": 23,
                    "test_lab_again": 13}


def plan_modules(units, workers):
    """{module path: worker}: the longest modules first, each to the worker with the least work so far."""
    load = [0] * workers
    plan = {}
    for path, tests in sorted(units.items(), key=lambda unit: -unit_seconds(*unit)):
        worker = load.index(min(load))
        plan[path] = worker
        load[worker] += unit_seconds(path, tests)
    return plan


def unit_seconds(path, tests):
    return len(tests) * SECONDS_PER_TEST.get(pathlib.PurePath(path).stem, 10)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """`pytest -n N --dist loadfile`: whole modules (they share module-scoped hosts) to workers, planned up front
    (plan_modules); each worker takes its modules in MODULE_ORDER; one that is done takes another's not yet begun."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling  # pylint: disable=import-outside-toplevel

    class FleetScheduling(LoadFileScheduling):
        plan = None

        def _assign_work_unit(self, node):
            if self.plan is None:
                self.plan = plan_modules(self.workqueue, self.numnodes)
                decided(f"plan {sorted((worker, pathlib.PurePath(path).stem) for path, worker in self.plan.items())}")
            worker = int(node.gateway.id[2:]) % self.numnodes
            mine = sorted((scope for scope in self.workqueue if self.plan[scope] == worker), key=module_rank)
            scope = mine[0] if mine else max(self.workqueue, key=module_rank)
            work_unit = self.workqueue.pop(scope)
            self.assigned_work.setdefault(node, {})[scope] = work_unit
            collection = self.registered_collections[node]
            node.send_runtest_some([collection.index(nodeid) for nodeid, done in work_unit.items() if not done])
            decided(f"{pathlib.PurePath(scope).stem} to {node.gateway.id}")

    return FleetScheduling(config, log)


@pytest.fixture(scope="session")
def trixie_hosts(lab):
    return [h for h in lab if not h.endswith("-bookworm")]


@pytest.fixture(scope="module")
def fleet(trixie_hosts):
    """Three lab hosts prepared (CRIU, experimental mode) by the install playbook, shared (see ready())."""
    return ready(trixie_hosts[:3])


@pytest.fixture(scope="module")
def lab_as_shipped(lab):
    """Every lab host as the image ships it (no CRIU, no daemon.json), for the modules that test from there."""
    with lab_turn():
        on_hosts(as_shipped, lab)
    return lab


def docker_restore(host, container, checkpoint):
    """`docker start --checkpoint`, retried once on containerd's known 'content ... already exists' (LAB-FACTS): the
    identical blob of an earlier restore is still in the content store; it is removed first, as the module does."""
    proc = lab_exec(host, "docker", "start", "--checkpoint", checkpoint, container, check=False)
    stale = re.search(r"content (sha256:[0-9a-f]{64}): already exists", proc.stderr)
    if proc.returncode != 0 and stale:
        lab_exec(host, "ctr", "-n", "moby", "content", "rm", stale.group(1), check=False)
        proc = lab_exec(host, "docker", "start", "--checkpoint", checkpoint, container, check=False)
    assert proc.returncode == 0, proc.stderr


# -- The reliability table (issue: faults survived, bad input refused, nothing lost) ----------------------------------
# Tests marked fault(number, title) are the fault-injection suite (`make test-faults`); bad-input tests report their
# counts through record_bad_inputs. At the end of the session the table is printed and written to
# .build/reliability.json, from what really ran.

RELIABILITY = {"faults": {}, "bad_inputs": {}}
RELIABILITY_FILE = ROOT / ".build" / "reliability.json"


def pytest_configure(config):
    config.addinivalue_line("markers", "whole_lab: acts on every lab host; under pytest -n it runs alone (lab_turn)")
    config.addinivalue_line("markers", "fault(number, title): a fault-injection test (make test-faults)")
    config.addinivalue_line("markers", "soak: the host_reboot soak (make soak)")
    config.addinivalue_line("markers", "bad_inputs: a bad-input corpus test (make test-faults)")
    config.addinivalue_line("markers", "vm: on the lab's QEMU machines with Debian's kernel (make test-vm)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    marker = item.get_closest_marker("fault")
    if marker and (report.when == "call" or report.failed):
        number, title = marker.args
        entry = RELIABILITY["faults"].setdefault(number, {"title": title, "tests": {}})
        if hasattr(report, "wasxfail"):
            entry["tests"][item.name] = "known gap"
        else:
            entry["tests"][item.name] = "survived" if report.passed and entry["tests"].get(item.name) != "FAILED" \
                else "FAILED"


@pytest.fixture
def record_bad_inputs():
    """record_bad_inputs(suite, tried, refused_with_host_unchanged): the counts of one bad-input test."""
    def record(suite, tried, refused):
        RELIABILITY["bad_inputs"][suite] = {"tried": tried, "refused_host_unchanged": refused}
    return record


def pytest_sessionfinish(session):
    """Under pytest -n: a worker hands what it recorded to the controller, which prints the table."""
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["fleet_reliability"] = json.dumps(RELIABILITY, default=str)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):  # pylint: disable=unused-argument
    recorded = json.loads(getattr(node, "workeroutput", {}).get("fleet_reliability") or "{}")
    for number, entry in recorded.get("faults", {}).items():
        RELIABILITY["faults"].setdefault(int(number), {"title": entry["title"], "tests": {}})["tests"].update(
            entry["tests"])
    RELIABILITY["bad_inputs"].update(recorded.get("bad_inputs", {}))
    if recorded.get("soak"):
        RELIABILITY["soak"] = recorded["soak"]


def pytest_terminal_summary(terminalreporter):
    if hasattr(terminalreporter.config, "workerinput"):
        return
    if not (RELIABILITY["faults"] or RELIABILITY["bad_inputs"] or RELIABILITY.get("soak")):
        return
    write = terminalreporter.write_line
    write("")
    write("== reliability ==")
    if RELIABILITY["faults"]:
        write("| fault | injected | survived |")
        write("| --- | --- | --- |")
    for number in sorted(RELIABILITY["faults"]):
        entry = RELIABILITY["faults"][number]
        outcomes = list(entry["tests"].values())
        write(f"| {number}. {entry['title']} | {len(outcomes)} | {outcomes.count('survived')} |")
    if RELIABILITY["bad_inputs"]:
        write("")
        write("| bad inputs | tried | refused, host unchanged |")
        write("| --- | --- | --- |")
        for suite, counts_ in sorted(RELIABILITY["bad_inputs"].items()):
            write(f"| {suite} | {counts_['tried']} | {counts_['refused_host_unchanged']} |")
        total = [sum(c[key] for c in RELIABILITY["bad_inputs"].values()) for key in ("tried", "refused_host_unchanged")]
        write(f"| all | {total[0]} | {total[1]} |")
    soak = RELIABILITY.get("soak")
    if soak:
        write("")
        write("| soak cycles | hosts x containers | containers lost | counters reset | median s/cycle |")
        write("| --- | --- | --- | --- | --- |")
        write(f"| {soak['cycles']} | {soak['hosts']} x {soak['containers'] // soak['hosts']} | "
              f"{soak['containers_lost']} | {soak['counters_reset']} | {soak['seconds_per_cycle']} |")
    RELIABILITY_FILE.parent.mkdir(parents=True, exist_ok=True)
    RELIABILITY_FILE.write_text(json.dumps(RELIABILITY, indent=2, sort_keys=True, default=str))
