# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The work of the criu_install module: a CRIU that really works on this host's kernel, or a clear refusal."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, Protocol

from ansible.module_utils.urls import open_url

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import openpgp
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import crit
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import packages
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import selftest
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.kernel import effective_minimum
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.version import (
    at_least,
    compare,
    parse_criu_version,
    upstream_version,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable


class RunCommand(Protocol):
    """AnsibleModule.run_command, as far as it is used here: argv -> (rc, stdout, stderr)."""

    def __call__(self, args: list[str], *, environ_update: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Run argv (with extra environment variables): (rc, stdout, stderr)."""


CRIU_PATHS = ("/usr/sbin/criu", "/usr/bin/criu", "/usr/local/sbin/criu", "/usr/local/bin/criu")
CACHE_DIR = "/var/lib/fleet-checkpoint"
CACHE_FILE = os.path.join(CACHE_DIR, "criu-selftest.json")


class CriuInstallError(Exception):
    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


def find_criu() -> str | None:
    found = shutil.which("criu")
    if found:
        return found
    return next((path for path in CRIU_PATHS if os.access(path, os.X_OK)), None)


def _write_private(path: str, text: str, mode: int = 0o600) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def _write_bytes(path: str, content: bytes, mode: int) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as handle:
        handle.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


class CriuInstall:
    def __init__(self, params: dict[str, Any], run: RunCommand, check_mode: bool = False,
                 warn: Callable[[str], None] | None = None) -> None:
        self.params = params
        self.run_command = run
        self.check_mode = check_mode
        self.warn = warn or (lambda msg: None)
        self.kernel = os.uname().release
        self.changed = False
        self.apt_changed = False

    # ---- facts ------------------------------------------------------------------------------------------------

    def family(self) -> str:
        text = _read("/etc/os-release") or ""
        family = packages.os_family(packages.parse_os_release(text))
        if family is None:
            raise CriuInstallError("this host's OS is not Debian/Ubuntu, RHEL/Fedora or SUSE (from /etc/os-release): "
                                   "install CRIU yourself; nothing was changed")
        return family

    def manager(self) -> str:
        return "dnf" if shutil.which("dnf") else "yum"

    def installed(self) -> tuple[str | None, str | None]:
        path = find_criu()
        if not path:
            return None, None
        rc, out, err = self.run_command([path, "--version"])
        version = parse_criu_version(out + "\n" + err) if rc == 0 else None
        return path, version

    def criu_check(self, path: str) -> tuple[bool, str, str]:
        rc, out, err = self.run_command([path, "check"])
        text = (out + "\n" + err).strip()
        lines = [line for line in text.splitlines() if line.strip()]
        failing = [line for line in lines if "Error" in line or "error" in line or "fail" in line.lower()]
        return rc == 0, (failing[0] if failing else (lines[-1] if lines else "")), text

    def features(self, path: str) -> dict[str, bool]:
        result: dict[str, bool] = {}
        for name in self.params["features"] or []:
            rc, out, err = self.run_command([path, "check", "--feature", name])
            if "Unknown feature" in out + err:
                raise CriuInstallError(f"CRIU does not know the feature {name!r} (criu check --feature {name}): check "
                                       "the name against `criu check --help` or the CRIU release notes")
            result[name] = rc == 0
        return result

    def installed_packages(self, family: str, names: Iterable[str]) -> list[str]:
        """Which of `names` are installed (CRIU's own packages, removed by state=absent)."""
        found = []
        for name in names:
            if family == "debian":
                rc, out, _err = self.run_command(["dpkg-query", "-W", "-f", "${Status}", name])
                ok = rc == 0 and out.strip().endswith(" installed")
            else:
                rc, _out, _err = self.run_command(["rpm", "-q", name])
                ok = rc == 0
            if ok:
                found.append(name)
        return found

    # ---- apt source -------------------------------------------------------------------------------------------

    def wanted_apt_files(self) -> dict[str, bytes]:
        """{path: bytes} of our apt source, pin and (downloaded) key files; {} without apt_source."""
        source = self.params.get("apt_source")
        if not source:
            return {}
        os_release = packages.parse_os_release(_read("/etc/os-release") or "")
        try:
            source = packages.expand_preset(source, os_release)
            if not source.get("suite"):
                raise ValueError("suite is required (or a preset)")
            files: dict[str, bytes] = {}
            signed_by = source.get("signed_by")
            if source.get("key_url"):
                if not str(source["key_url"]).startswith(("https://", "file://")):
                    raise ValueError(f"key_url {source['key_url']} is neither an https:// URL nor a file:// one on this "
                                     "host: a key fetched over plain http can be replaced on the way - give the key's "
                                     "https:// address")
                key = self.download_key(source["key_url"])
                if source.get("key_fingerprint"):
                    try:
                        found = openpgp.fingerprint(key)
                    except openpgp.OpenPGPError as exc:
                        raise ValueError(f"the key from {source['key_url']} cannot be checked: {exc}") from exc
                    if found != openpgp.normalize(source["key_fingerprint"]):
                        raise ValueError(f"the key from {source['key_url']} has the fingerprint {found}, not the "
                                         f"expected {openpgp.normalize(source['key_fingerprint'])}: refused")
                armored = key.lstrip().startswith(b"-----BEGIN PGP")
                signed_by = packages.KEY_FILE + (".asc" if armored else ".gpg")
                files[signed_by] = key
            files[packages.SOURCE_FILE] = packages.apt_source(
                source["uri"], source["suite"], source["components"], signed_by).encode()
            files[packages.PIN_FILE] = packages.apt_pin(
                source["suite"], source["packages"], source["priority"], source["uri"],
                os_release.get("VERSION_CODENAME")).encode()
            return files
        except ValueError as exc:
            raise CriuInstallError(f"apt_source: {exc}; nothing was changed") from exc

    def download_key(self, url: str) -> bytes:
        try:
            response = open_url(url, timeout=30)
            key = response.read()
        except Exception as exc:  # open_url raises many kinds: URLError, HTTPError, SSLError, socket errors...
            raise CriuInstallError(f"apt_source: cannot download the signing key from {url}: {exc}; nothing was "
                                   "changed") from exc
        if not key.strip() or (b"PGP" not in key[:100] and key[:1] not in (b"\x99", b"\x98", b"\xc6")):
            raise CriuInstallError(f"apt_source: {url} did not give an OpenPGP key; nothing was changed")
        return key

    MANAGED_FILES: tuple[str, ...] = (packages.SOURCE_FILE, packages.PIN_FILE, packages.KEY_FILE + ".asc", packages.KEY_FILE + ".gpg")

    def sync_apt_files(self, wanted: dict[str, bytes]) -> dict[str, bytes | None]:
        """Write our source, pin and key files as wanted (or remove them); return {path: previous bytes or None}."""
        previous: dict[str, bytes | None] = {}
        for path in self.MANAGED_FILES:
            current = _read_bytes(path)
            target = wanted.get(path)
            if current == target:
                continue
            previous[path] = current
            self.changed = True
            if self.check_mode:
                continue
            if target is None:
                os.unlink(path)
            else:
                os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
                _write_bytes(path, target, 0o644)
        return previous

    def restore_apt_files(self, previous: dict[str, bytes | None]) -> None:
        for path, content in previous.items():
            if content is None:
                if os.path.exists(path):
                    os.unlink(path)
            else:
                _write_bytes(path, content, 0o644)

    # ---- the run ----------------------------------------------------------------------------------------------

    def _call(self, argv: list[str], what: str) -> str:
        rc, out, err = self.run_command(argv, environ_update={"DEBIAN_FRONTEND": "noninteractive"})
        if rc != 0:
            lines = [line.strip() for line in (out + "\n" + err).splitlines() if line.strip()]
            telling = [line for line in lines if "Depends:" in line or line.startswith("E:") or "rror" in line]
            raise CriuInstallError(f"{what} failed ({' '.join(argv)}): {' | '.join((telling or lines)[-8:])}")
        return out

    def candidate(self, family: str, manager: str) -> str | None:
        if (self.params["update_cache"] or self.apt_changed) and not self.check_mode:
            self._call(packages.refresh_command(family, manager), "refreshing the package lists")
        rc, out, _err = self.run_command(packages.candidate_command(family, "criu", manager))
        return packages.parse_candidate(family, out) if rc == 0 else None

    def candidate_with_source(self, wanted_files: dict[str, bytes]) -> str | None:
        """Check mode with a new apt source: ask apt in a private state directory, the host's apt left as it is."""
        work = tempfile.mkdtemp(prefix="fleet-criu-apt-")
        try:
            parts = os.path.join(work, "sources.list.d")
            prefs = os.path.join(work, "preferences.d")
            lists = os.path.join(work, "lists")
            for directory in (parts, prefs, os.path.join(lists, "partial")):
                os.makedirs(directory)
            for name in os.listdir("/etc/apt/sources.list.d"):
                if os.path.join("/etc/apt/sources.list.d", name) not in self.MANAGED_FILES:
                    shutil.copy(os.path.join("/etc/apt/sources.list.d", name), parts)
            for name in os.listdir("/etc/apt/preferences.d") if os.path.isdir("/etc/apt/preferences.d") else []:
                if os.path.join("/etc/apt/preferences.d", name) not in self.MANAGED_FILES:
                    shutil.copy(os.path.join("/etc/apt/preferences.d", name), prefs)
            signed_by: dict[str, str] = {}
            for path, content in wanted_files.items():
                if path.startswith(packages.KEY_FILE):
                    key_copy = os.path.join(work, os.path.basename(path))
                    _write_bytes(key_copy, content, 0o644)
                    signed_by[path] = key_copy
            for path, content in wanted_files.items():
                text = content.decode()
                for real, copy in signed_by.items():
                    text = text.replace(real, copy)
                if path == packages.SOURCE_FILE:
                    _write_bytes(os.path.join(parts, os.path.basename(path)), text.encode(), 0o644)
                elif path == packages.PIN_FILE:
                    _write_bytes(os.path.join(prefs, os.path.basename(path)), text.encode(), 0o644)
            options = ["-o", f"Dir::Etc::SourceParts={parts}", "-o", f"Dir::Etc::PreferencesParts={prefs}",
                       "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={work}"]
            self._call(["apt-get", "update", "-q"] + options, "reading the new apt source (in a private directory)")
            rc, out, _err = self.run_command(["apt-cache"] + options + ["policy", "criu"])
            return packages.parse_candidate("debian", out) if rc == 0 else None
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run(self) -> dict[str, Any]:
        params = self.params
        family = self.family()
        manager = self.manager()
        minimum, minimum_reason = effective_minimum(params["min_version"], self.kernel)
        path, version = self.installed()
        result: dict[str, Any] = {
            "changed": False, "kernel": self.kernel, "os_family": family, "min_version": minimum,
            "min_version_reason": minimum_reason, "criu_path": path, "criu_version": version,
            "installed_now": False, "candidate_version": None, "criu_check_ok": False, "features": {},
            "capabilities": {}, "self_test": {}, "self_test_ran": False, "crit_path": crit.find(),
            "crit_installed_now": False,
        }
        wanted_files = self.wanted_apt_files() if family == "debian" else {}
        if params.get("apt_source") and family != "debian":
            raise CriuInstallError(f"apt_source is for Debian/Ubuntu hosts; this one is {family}: nothing was changed")

        if params["state"] == "absent":
            # CRIU's own packages, not just criu: a libcompel1 left from another source would block the
            # distribution's criu later (it depends on its exact version).
            present = self.installed_packages(family, packages.CRIU_OWN_PACKAGES[family])
            if present:
                self.changed = True
                if not self.check_mode:
                    self._call(packages.remove_command(family, present, manager), "removing CRIU")
            self.sync_apt_files({})
            result.update(changed=self.changed, criu_path=None if self.changed else path,
                          criu_version=None if self.changed else version)
            return result

        path_before = path
        previous_files = self.sync_apt_files(wanted_files) if family == "debian" else {}
        self.apt_changed = bool(previous_files)
        need = not path or not version or not at_least(version, minimum) or params["state"] == "latest"
        try:
            if need:
                if self.check_mode and self.apt_changed:
                    candidate = self.candidate_with_source(wanted_files)
                else:
                    candidate = self.candidate(family, manager)
                result["candidate_version"] = candidate
                if candidate is None and (not path or not version or not at_least(version, minimum)):
                    raise CriuInstallError(
                        f"no CRIU package is available from this host's package sources ({family}). Configure a "
                        "source that has it (apt_source on Debian/Ubuntu). Nothing was installed.")
                if candidate is not None and not at_least(upstream_version(candidate), minimum):
                    raise CriuInstallError(
                        f"the package sources offer CRIU {upstream_version(candidate)}, but {minimum_reason}. Configure "
                        "a newer source (apt_source, e.g. a pinned Debian testing suite) and run again. "
                        "Nothing was installed.",
                        candidate_version=candidate, kernel=self.kernel)
                newer = candidate is not None and (not version or compare(upstream_version(candidate), version) > 0)
                if newer or not path:
                    self.changed = True
                    if self.check_mode:
                        # (candidate is known: newer has one; without a CRIU, none has been refused above)
                        result.update(changed=True, installed_now=True,
                                      criu_version=upstream_version(candidate) if candidate is not None else None)
                        return result
                    self._call(packages.install_command(family, ["criu"], upgrade=bool(path), manager=manager),
                               "installing CRIU")
                    result["installed_now"] = True
                    path, version = self.installed()
                    result.update(criu_path=path, criu_version=version)
            if not path:
                raise CriuInstallError("CRIU is not installed: run without check mode to install it.")
            check_ok, failing_line, check_text = self.criu_check(path)
            result["criu_check_ok"] = check_ok
            if not check_ok:
                raise CriuInstallError(
                    f"criu check fails with CRIU {version} on kernel {self.kernel}: {failing_line}. Fix: install a "
                    f"newer CRIU ({minimum_reason}), e.g. from a pinned Debian testing suite with apt_source.",
                    criu_check=check_text)
            result["features"] = self.features(path)
            missing = [name for name, ok in result["features"].items() if not ok]
            if missing:
                raise CriuInstallError(f"criu check --feature fails for {', '.join(missing)} with CRIU {version} on "
                                       f"kernel {self.kernel}", features=result["features"])
            self.self_test(path, version, result)
            if params.get("crit", True):
                self.ensure_crit(family, manager, result)
        except CriuInstallError:
            if not self.check_mode:
                self.undo(family, manager, previous_files, result["installed_now"], path_before=path_before)
            raise
        result["changed"] = self.changed
        return result

    def package_version(self, name: str) -> str:
        """An installed Debian package's version ('' when not installed)."""
        rc, out, _err = self.run_command(["dpkg-query", "-W", "-f", "${Version}", name])
        return out.strip() if rc == 0 else ""

    def ensure_crit(self, family: str, manager: str, result: dict[str, Any]) -> None:
        """crit, CRIU's image reader (docker_checkpoint_info details=true), beside CRIU: on Debian the python3-pycriu
        of CRIU's own version (a Recommends, which --no-install-recommends leaves out). A failure is a warning: CRIU
        itself works."""
        result["crit_path"] = crit.find()
        package = packages.CRIT_PACKAGES.get(family)
        wanted = self.package_version("criu") if family == "debian" else ""
        if not package or (result["crit_path"] and (not wanted or self.package_version(package) in ("", wanted))):
            return  # (a crit of another version than CRIU's may misread its images: CRIU 4.2 added fields)
        changed_before, self.changed = self.changed, True
        result["crit_installed_now"] = True
        if self.check_mode:
            return
        attempts = [[f"{package}={wanted}"]] if wanted else []
        if not result["crit_path"]:
            attempts.append([package])
        failure = ""
        for names in attempts:
            rc, out, err = self.run_command(packages.install_command(family, names, manager=manager),
                                            environ_update={"DEBIAN_FRONTEND": "noninteractive"})
            if rc == 0:
                result["crit_path"] = crit.find()
                return
            failure = " ".join((err or out).split())[-300:]
        self.changed, result["crit_installed_now"] = changed_before, False
        if result["crit_path"]:
            self.warn(f"{package} {wanted} (CRIU's own version) could not be installed; the crit here is of another "
                      f"version and may misread CRIU's images: {failure}")
        else:
            self.warn(f"crit ({package}) could not be installed, so docker_checkpoint_info details=true cannot read "
                      f"checkpoints on this host: {failure}")

    def undo(self, family: str, manager: str, previous_files: dict[str, bytes | None], installed_now: bool,
             path_before: str | None) -> None:
        """Leave no half-installed state: remove what this run installed and put the source files back."""
        if installed_now and not path_before:
            self.run_command(packages.remove_command(family, ["criu"], manager),
                             environ_update={"DEBIAN_FRONTEND": "noninteractive"})
        self.restore_apt_files(previous_files)
        if previous_files and family == "debian":
            self.run_command(packages.refresh_command(family, manager))

    # ---- self-test --------------------------------------------------------------------------------------------

    def self_test(self, path: str, version: str | None, result: dict[str, Any]) -> None:
        mode = self.params["self_test"]
        if mode == "never":
            return
        stat = os.stat(path)
        key = {"criu_path": path, "criu_version": version, "criu_size": stat.st_size,
               "criu_mtime": int(stat.st_mtime), "kernel": self.kernel}
        cached = None
        try:
            cached = json.loads(_read(CACHE_FILE) or "null")
        except ValueError:
            cached = None
        if mode == "auto" and cached and cached.get("key") == key:
            results = cached["results"]
        elif self.check_mode:
            return
        else:
            results = selftest.run_all(path, self.run_command)
            result["self_test_ran"] = True
            _write_private(CACHE_FILE, json.dumps({"key": key, "results": results}, indent=2) + "\n")
        result["self_test"] = results
        result["capabilities"] = {kind: outcome["ok"] for kind, outcome in results.items()}
        failures = selftest.summary(results)
        required = set(self.params["required_capabilities"] or []) | {"process"}
        failed_required = [kind for kind in required if not results.get(kind, {}).get("ok")]
        if failed_required:
            raise CriuInstallError(
                f"CRIU {version} is installed and `criu check` passes, but it cannot checkpoint/restore "
                f"{', '.join(sorted(failed_required))} on kernel {self.kernel}: " + "; ".join(failures),
                capabilities=result["capabilities"], self_test=results)
        for line in failures:
            self.warn(f"CRIU {version} self-test on kernel {self.kernel}: {line}")
