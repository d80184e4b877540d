"""criu_install and the criu role on the lab: real apt, real CRIU, real kernel. Nothing mocked."""

import pytest

from conftest import ROOT, ansible_playbook, docker_restore, lab_exec, run, run_module, sh

MODULE = "fleet.checkpoint.criu_install"
FORKY = {"suite": "forky", "packages": ["criu", "libcompel1", "python3-pycriu", "libnet9", "libnl-3-200"]}
SOURCE = "/etc/apt/sources.list.d/fleet-checkpoint-criu.sources"
PIN = "/etc/apt/preferences.d/fleet-checkpoint-criu"


def module(host, check=False, diff=False, **args):
    return run_module(host, MODULE, check=check, diff=diff, **args)


def no_criu(host):
    """CRIU, our apt files, runc.conf, logs and the self-test cache all gone; the package lists refreshed."""
    # libcompel1 must go too: testing's 4.2 would block the distribution's criu 4.1 (it depends on its exact version).
    sh(host, "DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq criu libcompel1 python3-pycriu libcriu2 >/dev/null 2>&1; "
             f"rm -f {SOURCE} {PIN}; "
             "rm -rf /etc/criu /var/log/criu /var/lib/fleet-checkpoint; apt-get update -qq")


def installed_criu(host):
    return sh(host, "dpkg-query -W -f '${Status} ${Version}' criu 2>/dev/null || true").stdout.strip()


def untouched(host):
    assert "installed" not in installed_criu(host).split()[:3], installed_criu(host)
    assert sh(host, f"ls {SOURCE} {PIN} 2>/dev/null || true").stdout == ""
    assert sh(host, "apt-get check -qq && echo ok").stdout.strip() == "ok"


@pytest.fixture(scope="module", autouse=True)
def shipped_lab(lab_as_shipped):
    """Every lab host as the image ships it before these tests; what they leave is undone by the next module's
    fixture (conftest.ready, lab_as_shipped)."""
    return lab_as_shipped


def test_distribution_criu_passes_check_but_cannot_dump_tcp(trixie_hosts):
    host = trixie_hosts[0]
    no_criu(host)
    result = module(host)
    assert result.get("failed") is not True, result.get("msg")
    assert result["changed"] is True and result["installed_now"] is True
    assert result["criu_version"].startswith("4.1.") and result["criu_check_ok"] is True
    assert result["min_version"] == "4.1" and "vdso" in result["min_version_reason"].lower()
    caps = result["capabilities"]
    assert caps["process"] and caps["pipe"] and caps["open_file"] and caps["child_process"] and caps["unix_socket"]
    assert caps["tcp_listen"] is False
    tcp = result["self_test"]["tcp_listen"]
    assert tcp["stage"] == "dump" and "RLIMIT" not in tcp["error"], tcp
    assert any("tcp_listen" in w for w in result.get("warnings", [])), result.get("warnings")
    cache = sh(host, "stat -c '%a %U' /var/lib/fleet-checkpoint /var/lib/fleet-checkpoint/criu-selftest.json").stdout.split("\n")
    assert cache[:2] == ["700 root", "600 root"]

    again = module(host)
    assert again["changed"] is False and again["self_test_ran"] is False
    assert again["capabilities"] == caps

    strict = module(host, required_capabilities=["tcp_listen"])
    assert strict.get("failed") is True
    assert "tcp_listen" in strict["msg"] and "4.1" in strict["msg"] and "fix:" in strict["msg"]


def test_pinned_testing_source_gives_a_criu_that_dumps_everything(trixie_hosts):
    host = trixie_hosts[1]
    no_criu(host)
    predicted = module(host, check=True, apt_source=FORKY, required_capabilities=["tcp_listen"])
    assert predicted["changed"] is True and predicted["installed_now"] is True
    assert predicted["criu_version"].startswith("4.2") and predicted["candidate_version"].startswith("4.2")
    untouched(host)
    assert "forky" not in sh(host, "apt-cache policy").stdout  # the host's apt never saw the source

    result = module(host, apt_source=FORKY, required_capabilities=["tcp_listen"], self_test="always")
    assert result.get("failed") is not True, result.get("msg")
    assert result["criu_version"].startswith("4.2") and result["criu_check_ok"] is True
    assert all(result["capabilities"].values()), result["self_test"]
    assert set(result["capabilities"]) == {"process", "pipe", "open_file", "child_process", "unix_socket", "tcp_listen"}
    # Only CRIU's packages may come from testing: anything else from there is pinned away.
    assert "Pin-Priority: -1" in sh(host, f"cat {PIN}").stdout
    policy = sh(host, "apt-cache policy bash").stdout
    assert "forky" not in policy.split("Candidate:")[1].split("\n")[0]
    assert sh(host, "dpkg-query -W -f '${Version}' libc6").stdout.startswith("2.41")  # trixie's libc stays

    again = module(host, apt_source=FORKY, required_capabilities=["tcp_listen"])
    assert again["changed"] is False


def test_bookworm_distribution_criu_is_refused_before_installing(lab):
    host = next(h for h in lab if h.endswith("-bookworm"))
    no_criu(host)
    result = module(host)
    assert result.get("failed") is True
    msg = result["msg"]
    assert "3.17" in msg and "4.1" in msg and "vDSO" in msg and "2532" in msg and "Nothing was installed" in msg
    untouched(host)


def test_a_source_that_cannot_work_on_bookworm_leaves_nothing_behind(lab):
    host = next(h for h in lab if h.endswith("-bookworm"))
    no_criu(host)
    result = module(host, apt_source=dict(FORKY, suite="trixie"))
    assert result.get("failed") is True
    assert "installing CRIU failed" in result["msg"] and "Depends" in result["msg"], result["msg"]
    untouched(host)


def test_latest_upgrades_and_absent_leaves_a_host_the_distribution_criu_installs_on(trixie_hosts):
    host = trixie_hosts[2]
    no_criu(host)
    assert module(host)["criu_version"].startswith("4.1.")
    upgraded = module(host, state="latest", apt_source=FORKY, self_test="never")
    assert upgraded["changed"] is True and upgraded["criu_version"].startswith("4.2")
    assert module(host, state="latest", apt_source=FORKY, self_test="never")["changed"] is False

    removed = module(host, state="absent")
    assert removed["changed"] is True
    for package in ("criu", "libcompel1", "python3-pycriu"):
        assert "ok installed" not in sh(host, f"dpkg-query -W -f '${{Status}}' {package} 2>/dev/null || true").stdout
    untouched(host)
    assert module(host, state="absent")["changed"] is False
    # Nothing left from testing blocks the distribution's CRIU.
    assert module(host, self_test="never")["criu_version"].startswith("4.1.")


def test_features_are_checked_and_unknown_names_are_refused(trixie_hosts):
    host = trixie_hosts[2]
    result = module(host, features=["get_rseq_conf", "timens"], self_test="never")
    assert result["features"] == {"get_rseq_conf": True, "timens": True}
    unknown = module(host, features=["teleport"], self_test="never")
    assert unknown.get("failed") is True and "does not know the feature 'teleport'" in unknown["msg"]


def primary_fingerprint(host, path, tmp_path):
    """The fingerprint of the first key in a key file on a host, as gpg (on the controller) computes it."""
    run(["docker", "cp", "-L", f"{host}:{path}", str(tmp_path / "key.gpg")])
    (tmp_path / "gnupg").mkdir(mode=0o700, exist_ok=True)
    shown = run(["gpg", "--homedir", str(tmp_path / "gnupg"), "--with-colons", "--show-keys", str(tmp_path / "key.gpg")])
    return next(line.split(":")[9] for line in shown.stdout.splitlines() if line.startswith("fpr:"))


def test_key_url_puts_the_signing_key_beside_the_source(trixie_hosts, tmp_path):
    host = trixie_hosts[2]
    no_criu(host)
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    expected = primary_fingerprint(host, keyring, tmp_path)
    # A key whose fingerprint is not the one given is refused before anything is written.
    wrong = dict(FORKY, key_url=f"file://{keyring}", key_fingerprint="0x" + "AB12" * 10)
    refused = module(host, apt_source=wrong, self_test="never")
    assert refused.get("failed") is True and f"has the fingerprint {expected}, not the expected" in refused["msg"], \
        refused.get("msg")
    untouched(host)
    assert sh(host, "ls /etc/apt/keyrings/fleet-checkpoint-criu.* 2>/dev/null || echo none").stdout.strip() == "none"
    # Given as people copy it (0x, spaces, lower case), the right fingerprint is accepted.
    spaced = " ".join(expected[i:i + 4] for i in range(0, 40, 4)).lower()
    keyed = dict(FORKY, key_url=f"file://{keyring}", key_fingerprint=spaced)
    result = module(host, apt_source=keyed, self_test="never")
    assert result.get("failed") is not True, result.get("msg")
    assert result["criu_version"].startswith("4.2")
    assert "Signed-By: /etc/apt/keyrings/fleet-checkpoint-criu.gpg" in sh(host, f"cat {SOURCE}").stdout
    assert sh(host, "cmp /usr/share/keyrings/debian-archive-keyring.gpg /etc/apt/keyrings/fleet-checkpoint-criu.gpg "
                    "&& echo same").stdout.strip() == "same"
    assert module(host, apt_source=keyed, self_test="never")["changed"] is False
    module(host, apt_source=FORKY, self_test="never")
    assert sh(host, "ls /etc/apt/keyrings/fleet-checkpoint-criu.gpg 2>/dev/null || echo gone").stdout.strip() == "gone"
    bad = module(host, apt_source=dict(FORKY, key_url="file:///etc/hostname"), self_test="never")
    assert bad.get("failed") is True and "did not give an OpenPGP key" in bad["msg"]


def test_bad_input_is_refused_before_anything_changes(trixie_hosts):
    host = trixie_hosts[0]
    no_criu(host)
    for args, fragment in (
        ({"min_version": "four"}, "min_version must be a version"),
        ({"apt_source": {"suite": "forky; rm -rf /"}}, "not a valid suite name"),
        ({"apt_source": {"suite": "forky", "uri": "ftp://example.org/debian"}}, "http(s)://"),
        ({"apt_source": {"suite": "forky", "packages": ["criu", "../etc"]}}, "not valid Debian package names"),
        ({"required_capabilities": ["teleport"]}, "required_capabilities"),
        ({"apt_source": {"preset": "ubuntu_ppa"}}, "for Ubuntu hosts"),
        ({"apt_source": {"suite": "trixie"}}, "own release"),
        ({"apt_source": {"components": ["main"]}}, "suite is required"),
    ):
        result = module(host, **args)
        assert result.get("failed") is True and fragment in result["msg"], (args, result["msg"])
        untouched(host)


def test_install_playbook_gives_every_trixie_host_a_working_criu_and_experimental_mode(trixie_hosts):
    limit = ",".join(trixie_hosts)
    rc, result = ansible_playbook(ROOT / "playbooks" / "install.yml", limit=limit)
    assert rc == 0, result["stats"]
    for host in trixie_hosts:
        assert result["stats"][host]["failures"] == 0
        assert sh(host, "criu --version").stdout.startswith("Version: 4.2")
        assert "true" == lab_exec(host, "docker", "info", "--format", "{{json .ExperimentalBuild}}").stdout.strip()
        assert sh(host, "cat /etc/criu/runc.conf | grep -v '^#'").stdout.split("\n")[:2] == [
            "log-file /var/log/criu/runc.log", "tcp-established"]
        assert sh(host, "stat -c '%a %U' /var/log/criu").stdout.strip() == "700 root"
    rc, again = ansible_playbook(ROOT / "playbooks" / "install.yml", limit=limit)
    assert rc == 0
    assert all(again["stats"][host]["changed"] == 0 for host in trixie_hosts), again["stats"]

    # Docker really checkpoints through this CRIU, with runc.conf's options (its log is kept).
    host = trixie_hosts[0]
    sh(host, "docker rm -f criu-probe >/dev/null 2>&1; docker run -d --name criu-probe fleet-lab-workload:busybox; sleep 2")
    sh(host, "docker checkpoint create criu-probe cp1")
    docker_restore(host, "criu-probe", "cp1")
    assert lab_exec(host, "docker", "inspect", "-f", "{{.State.Running}}", "criu-probe").stdout.strip() == "true"
    assert sh(host, "test -s /var/log/criu/runc.log && echo kept").stdout.strip() == "kept"
    sh(host, "docker rm -f criu-probe")

    rc, removed = ansible_playbook(ROOT / "playbooks" / "install.yml", limit=host,
                                   extra_vars={"criu_runc_conf_state": "absent"})
    assert rc == 0 and sh(host, "ls /etc/criu/runc.conf 2>/dev/null || echo gone").stdout.strip() == "gone"
