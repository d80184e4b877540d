# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Package-manager command lines and apt source/pin files for CRIU, per OS family. Plain Python, unit-tested."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    OsRelease = dict[str, str]  # parsed /etc/os-release: KEY -> value
    AptSource = dict[str, Any]  # the criu_install module's apt_source option

FAMILIES = ("debian", "redhat", "suse")

# OS ids (from /etc/os-release ID and ID_LIKE) to package-manager families.
_FAMILY_OF_ID = {
    "debian": "debian", "ubuntu": "debian", "raspbian": "debian", "linuxmint": "debian", "pop": "debian",
    "rhel": "redhat", "centos": "redhat", "fedora": "redhat", "rocky": "redhat", "almalinux": "redhat",
    "ol": "redhat", "amzn": "redhat",
    "sles": "suse", "suse": "suse", "opensuse": "suse", "opensuse-leap": "suse", "opensuse-tumbleweed": "suse",
}

# What the "ubuntu_ppa" and "obs" source presets point at.
UBUNTU_PPA_URI = "https://ppa.launchpadcontent.net/criu/ppa/ubuntu"
OBS_URI = "https://download.opensuse.org/repositories/devel:/tools:/criu/{repo}/"

# Packages that belong to CRIU alone (shared libraries it pulls in, like libnl, are left in place).
CRIU_OWN_PACKAGES = {
    "debian": ["criu", "libcompel1", "python3-pycriu", "libcriu2"],
    "redhat": ["criu", "criu-libs", "python3-criu", "crit"],
    "suse": ["criu", "python3-criu"],
}

# crit, CRIU's image reader, per family (Debian's criu only recommends it).
CRIT_PACKAGES = {"debian": "python3-pycriu", "redhat": "crit", "suse": "python3-criu"}

SOURCE_FILE = "/etc/apt/sources.list.d/fleet-checkpoint-criu.sources"
KEY_FILE = "/etc/apt/keyrings/fleet-checkpoint-criu"

# Ready-made apt sources that CRIU users use: uri, suite ({codename} is the host's), key.
PRESETS = {
    "ubuntu_ppa": {
        "uri": UBUNTU_PPA_URI,
        "suite": "{codename}",
        "key_url": "https://keyserver.ubuntu.com/pks/lookup?op=get&search=0x4E2A48715C45AEEC077B48169B29EEC9246B6CE2",
        "key_fingerprint": "4E2A48715C45AEEC077B48169B29EEC9246B6CE2",
    },
    "obs": {
        "uri": "https://download.opensuse.org/repositories/devel:/tools:/criu/{obs_repo}/",
        "suite": "/",
        "key_url": "https://download.opensuse.org/repositories/devel:/tools:/criu/{obs_repo}/Release.key",
    },
}

# Hosts of the distributions' own mirrors: their release may not be pinned by origin.
DISTRIBUTION_MIRRORS = ("deb.debian.org", "security.debian.org", "archive.ubuntu.com", "security.ubuntu.com")


def obs_repo(os_release: OsRelease) -> str:
    """The OBS repository name for a Debian/Ubuntu release, e.g. Debian_12 or xUbuntu_24.04."""
    os_id = os_release.get("ID", "")
    version = os_release.get("VERSION_ID", "")
    if os_id == "debian" and version:
        return f"Debian_{version.split('.')[0]}"
    if os_id == "ubuntu" and version:
        return f"xUbuntu_{version}"
    raise ValueError(f"no openSUSE Build Service CRIU repository is known for {os_id} {version}")


def expand_preset(source: AptSource, os_release: OsRelease) -> AptSource:
    """Fill uri, suite and key_url of an apt_source from its preset, for this host's release."""
    preset = source.get("preset")
    if not preset:
        return dict(source)
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: use one of {', '.join(sorted(PRESETS))}")
    values = {"codename": os_release.get("VERSION_CODENAME", "")}
    if preset == "obs":
        values["obs_repo"] = obs_repo(os_release)
    if preset == "ubuntu_ppa" and os_release.get("ID") != "ubuntu":
        raise ValueError("the ubuntu_ppa preset is for Ubuntu hosts")
    merged = dict(source)
    for key, template in PRESETS[preset].items():
        if key == "key_fingerprint" and merged.get("key_url") and merged.get("key_url") != PRESETS[preset]["key_url"]:
            continue  # the user's own key: the preset's fingerprint is not its
        if not merged.get(key) or key in ("uri", "suite"):
            merged[key] = template.format(**values)
    return merged


PIN_FILE = "/etc/apt/preferences.d/fleet-checkpoint-criu"
_APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")


def parse_os_release(text: str) -> OsRelease:
    """KEY=value pairs of /etc/os-release (quotes removed)."""
    data: OsRelease = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            data[key] = value.strip().strip("\"'")
    return data


def os_family(os_release: OsRelease) -> str | None:
    """'debian', 'redhat' or 'suse' for parsed /etc/os-release data; None when unknown."""
    ids = [os_release.get("ID", "")] + os_release.get("ID_LIKE", "").split()
    for os_id in ids:
        family = _FAMILY_OF_ID.get(os_id.lower())
        if family:
            return family
    return None


def install_command(family: str, packages: Iterable[str], upgrade: bool = False, manager: str = "dnf") -> list[str]:
    """argv that installs (or, with upgrade, upgrades to the newest) `packages` without prompting."""
    packages = list(packages)
    if family == "debian":
        return ["apt-get", "install", "-y", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold"] + packages
    if family == "redhat":
        return [manager, "upgrade" if upgrade else "install", "-y"] + packages
    if family == "suse":
        return ["zypper", "--non-interactive", "update" if upgrade else "install", "--no-recommends"] + packages
    raise ValueError(f"unsupported OS family {family!r}")


def remove_command(family: str, packages: Iterable[str], manager: str = "dnf") -> list[str]:
    packages = list(packages)
    if family == "debian":
        return ["apt-get", "remove", "-y"] + packages
    if family == "redhat":
        return [manager, "remove", "-y"] + packages
    if family == "suse":
        return ["zypper", "--non-interactive", "remove"] + packages
    raise ValueError(f"unsupported OS family {family!r}")


def refresh_command(family: str, manager: str = "dnf") -> list[str]:
    """argv that refreshes the package lists (metadata) before asking for a candidate."""
    if family == "debian":
        return ["apt-get", "update", "-q"]
    if family == "redhat":
        return [manager, "makecache", "-q"]
    if family == "suse":
        return ["zypper", "--non-interactive", "refresh"]
    raise ValueError(f"unsupported OS family {family!r}")


def candidate_command(family: str, package: str = "criu", manager: str = "dnf") -> list[str]:
    """argv whose output tells the version the package manager would install."""
    if family == "debian":
        return ["apt-cache", "policy", package]
    if family == "redhat":
        return [manager, "-q", "info", package]
    if family == "suse":
        return ["zypper", "--non-interactive", "info", package]
    raise ValueError(f"unsupported OS family {family!r}")


def parse_candidate(family: str, text: str) -> str | None:
    """The candidate version from candidate_command's output, or None when there is none."""
    if family == "debian":
        match = re.search(r"^\s*Candidate:\s*(\S+)", text, re.MULTILINE)
        if not match or match.group(1) == "(none)":
            return None
        return match.group(1)
    if family in ("redhat", "suse"):
        versions = re.findall(r"^Version\s*:\s*(\S+)", text, re.MULTILINE)
        return versions[-1] if versions else None
    raise ValueError(f"unsupported OS family {family!r}")


def validate_apt_names(packages: Sequence[str]) -> list[str]:
    bad = [name for name in packages if not _APT_NAME.fullmatch(str(name))]
    if bad:
        raise ValueError(f"not valid Debian package names: {', '.join(map(str, bad))}")
    return list(packages)


def apt_source(uri: str | None, suite: str | None, components: Iterable[str] = ("main",),
               signed_by: str | None = None) -> str:
    """A deb822 .sources file for one repository (a flat repository has suite '/' and no components)."""
    if not re.fullmatch(r"(https?|file)://\S+", uri or ""):
        raise ValueError(f"apt source uri must be an http(s):// or file:// URL, not {uri!r}")
    if not suite or not re.fullmatch(r"[A-Za-z0-9./_-]+", suite):
        raise ValueError(f"apt source suite {suite!r} is not a valid suite name")
    lines = [
        "# Managed by fleet.checkpoint.criu_install: a source for CRIU only (see the pin file beside it).",
        "Types: deb",
        f"URIs: {uri}",
        f"Suites: {suite}",
    ]
    if suite != "/" and not suite.endswith("/"):
        lines.append(f"Components: {' '.join(components)}")
    if signed_by:
        lines.append(f"Signed-By: {signed_by}")
    return "\n".join(lines) + "\n"


# Archive names (a=) as opposed to codenames (n=) in a Release file.
ARCHIVE_NAMES = ("stable", "oldstable", "oldoldstable", "testing", "unstable", "experimental",
                 "stable-backports", "stable-updates", "stable-security")


def _uri_host(uri: str | None) -> str | None:
    host = re.sub(r"^[a-z]+://([^/:]+).*$", r"\1", uri or "")
    return None if not host or host == uri else host


def pin_selector(suite: str, uri: str | None = None, host_codename: str | None = None) -> str:
    """The apt `Pin:` value that matches `suite` of the source at `uri` (and nothing of the host's own release)."""
    if suite == "/" or suite.endswith("/") or (host_codename and suite == host_codename):
        host = _uri_host(uri)
        if not host:
            raise ValueError(f"a source with suite {suite!r} must be pinned by origin, which needs its uri")
        if host in DISTRIBUTION_MIRRORS:
            raise ValueError(f"suite {suite!r} of {host} is this host's own release: pinning it would hold back every "
                             "other package of the release; give another release's suite (e.g. forky)")
        return f"origin {host}"
    if suite in ARCHIVE_NAMES:
        return f"release a={suite}"
    return f"release n={suite}"


def apt_pin(suite: str, packages: Sequence[str], priority: int = 990, uri: str | None = None,
            host_codename: str | None = None) -> str:
    """An apt preferences file: only `packages` may come from `suite`; nothing else ever does."""
    packages = validate_apt_names(packages)
    if not packages:
        raise ValueError("apt pinning needs at least one package")
    pin = pin_selector(suite, uri, host_codename)
    return (
        "# Managed by fleet.checkpoint.criu_install.\n"
        f"# Only these packages may come from {suite}; every other package keeps coming from the host's release.\n"
        f"Package: {' '.join(packages)}\n"
        f"Pin: {pin}\n"
        f"Pin-Priority: {int(priority)}\n"
        "\n"
        "Package: *\n"
        f"Pin: {pin}\n"
        "Pin-Priority: -1\n"
    )
