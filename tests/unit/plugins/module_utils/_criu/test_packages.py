# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import packages as pk

APT_POLICY = """criu:
  Installed: (none)
  Candidate: 4.1.1-1
  Version table:
     4.2.1-1 -1
         -1 http://deb.debian.org/debian forky/main amd64 Packages
     4.1.1-1 500
        500 http://deb.debian.org/debian trixie/main amd64 Packages
"""

DNF_INFO = """Available Packages
Name         : criu
Version      : 3.19
Release      : 1.el9
Architecture : x86_64
"""

ZYPPER_INFO = """Information for package criu:
-----------------------------
Repository     : Main Repository
Name           : criu
Version        : 3.18-bp156.1.5
Installed      : No
"""


@pytest.mark.parametrize(
    "text, family",
    [
        ('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nID=debian\nVERSION_CODENAME=trixie\n', "debian"),
        ('ID=ubuntu\nID_LIKE=debian\n', "debian"),
        ('ID="rocky"\nID_LIKE="rhel centos fedora"\n', "redhat"),
        ("ID=fedora\n", "redhat"),
        ('ID="opensuse-leap"\nID_LIKE="suse opensuse"\n', "suse"),
        ('ID="sles"\n', "suse"),
        ('ID=alpine\n', None),
    ],
)
def test_os_family(text, family):
    assert pk.os_family(pk.parse_os_release(text)) == family


def test_install_commands_per_family():
    assert pk.install_command("debian", ["criu"]) == [
        "apt-get", "install", "-y", "--no-install-recommends", "-o", "Dpkg::Options::=--force-confold", "criu"]
    assert pk.install_command("redhat", ["criu"]) == ["dnf", "install", "-y", "criu"]
    assert pk.install_command("redhat", ["criu"], upgrade=True, manager="yum") == ["yum", "upgrade", "-y", "criu"]
    assert pk.install_command("suse", ["criu"]) == ["zypper", "--non-interactive", "install", "--no-recommends", "criu"]
    assert pk.install_command("suse", ["criu"], upgrade=True) == [
        "zypper", "--non-interactive", "update", "--no-recommends", "criu"]


def test_remove_refresh_and_candidate_commands():
    assert pk.remove_command("debian", ["criu", "libcompel1"]) == ["apt-get", "remove", "-y", "criu", "libcompel1"]
    assert pk.remove_command("redhat", ["criu"]) == ["dnf", "remove", "-y", "criu"]
    assert pk.remove_command("suse", ["criu"]) == ["zypper", "--non-interactive", "remove", "criu"]
    assert pk.refresh_command("debian") == ["apt-get", "update", "-q"]
    assert pk.refresh_command("suse") == ["zypper", "--non-interactive", "refresh"]
    assert pk.candidate_command("debian") == ["apt-cache", "policy", "criu"]
    assert pk.candidate_command("redhat", manager="yum") == ["yum", "-q", "info", "criu"]


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="unsupported OS family"):
        pk.install_command("alpine", ["criu"])


def test_parse_candidate():
    assert pk.parse_candidate("debian", APT_POLICY) == "4.1.1-1"
    assert pk.parse_candidate("debian", "criu:\n  Installed: (none)\n  Candidate: (none)\n") is None
    assert pk.parse_candidate("debian", "") is None
    assert pk.parse_candidate("redhat", DNF_INFO) == "3.19"
    assert pk.parse_candidate("suse", ZYPPER_INFO) == "3.18-bp156.1.5"


def test_apt_source_deb822():
    text = pk.apt_source("http://deb.debian.org/debian", "forky")
    assert "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: forky\nComponents: main\n" in text
    flat = pk.apt_source(pk.OBS_URI.format(repo="Debian_12"), "/", signed_by="/usr/share/keyrings/criu.gpg")
    assert "Suites: /\n" in flat and "Components" not in flat and "Signed-By: /usr/share/keyrings/criu.gpg" in flat


@pytest.mark.parametrize("uri, suite", [("ftp://x/debian", "forky"), ("deb.debian.org", "forky"),
                                        ("http://deb.debian.org/debian\n", "forky"), ("http://x/d", "forky\n"),
                                        ("http://deb.debian.org/debian", "forky; rm -rf /"), ("http://x/d", "")])
def test_apt_source_refuses_bad_input(uri, suite):
    with pytest.raises(ValueError):
        pk.apt_source(uri, suite)


def test_apt_pin_limits_the_suite_to_the_named_packages():
    text = pk.apt_pin("forky", ["criu", "libcompel1", "python3-pycriu", "libnet9", "libnl-3-200"])
    blocks = text.split("\n\n")
    assert "Package: criu libcompel1 python3-pycriu libnet9 libnl-3-200\nPin: release n=forky\nPin-Priority: 990" in blocks[0]
    assert blocks[1] == "Package: *\nPin: release n=forky\nPin-Priority: -1\n"


@pytest.mark.parametrize("packages", [[], ["criu", "Bad Name"], ["criu", "../x"], ["criu\n"]])
def test_apt_pin_refuses_bad_package_lists(packages):
    with pytest.raises(ValueError):
        pk.apt_pin("forky", packages)


@pytest.mark.parametrize(
    "suite, uri, selector",
    [
        ("forky", None, "release n=forky"),
        ("testing", None, "release a=testing"),
        ("unstable", None, "release a=unstable"),
        ("/", "https://download.opensuse.org/repositories/devel:/tools:/criu/Debian_12/", "origin download.opensuse.org"),
    ],
)
def test_pin_selector_matches_codenames_archives_and_flat_repositories(suite, uri, selector):
    assert pk.pin_selector(suite, uri) == selector
    assert f"Pin: {selector}\n" in pk.apt_pin(suite, ["criu"], uri=uri)


def test_flat_repository_without_uri_is_refused():
    with pytest.raises(ValueError, match="pinned by origin"):
        pk.pin_selector("/", None)


NOBLE = {"ID": "ubuntu", "VERSION_ID": "24.04", "VERSION_CODENAME": "noble"}
BOOKWORM = {"ID": "debian", "VERSION_ID": "12", "VERSION_CODENAME": "bookworm"}


def test_ppa_preset_is_pinned_by_origin_not_by_the_host_release():
    source = pk.expand_preset({"preset": "ubuntu_ppa", "uri": "http://deb.debian.org/debian"}, NOBLE)
    assert source["uri"] == pk.UBUNTU_PPA_URI and source["suite"] == "noble"
    assert "4E2A48715C45AEEC077B48169B29EEC9246B6CE2" in source["key_url"]
    pin = pk.apt_pin(source["suite"], ["criu"], uri=source["uri"], host_codename="noble")
    assert "Pin: origin ppa.launchpadcontent.net\n" in pin and "n=noble" not in pin


def test_obs_preset_for_debian_is_a_flat_repository_with_its_release_key():
    source = pk.expand_preset({"preset": "obs"}, BOOKWORM)
    assert source["uri"] == "https://download.opensuse.org/repositories/devel:/tools:/criu/Debian_12/"
    assert source["suite"] == "/" and source["key_url"].endswith("/Debian_12/Release.key")
    assert pk.pin_selector("/", source["uri"]) == "origin download.opensuse.org"


@pytest.mark.parametrize("preset, release, fragment", [("ubuntu_ppa", BOOKWORM, "for Ubuntu hosts"),
                                                       ("obs", {"ID": "fedora"}, "no openSUSE Build Service"),
                                                       ("ppa", NOBLE, "unknown preset")])
def test_presets_refuse_what_they_cannot_do(preset, release, fragment):
    with pytest.raises(ValueError, match=fragment):
        pk.expand_preset({"preset": preset}, release)


def test_the_host_release_on_its_own_mirror_is_refused():
    with pytest.raises(ValueError, match="own release"):
        pk.pin_selector("trixie", "http://deb.debian.org/debian", host_codename="trixie")
