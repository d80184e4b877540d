# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A downloaded apt signing key is checked against the fingerprint expected (issue 20, finding 9), and fetched over
https only."""

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import install, openpgp

# Made with gpg 2.2.40 (--quick-gen-key ... ed25519) for these tests; gpg --fingerprint says:
FINGERPRINT = "03F805846294A2A0B439F38996F4214319B8CD90"
ARMORED = b"""-----BEGIN PGP PUBLIC KEY BLOCK-----

mDMEaxEoexYJKwYBBAHaRw8BAQdACpGRFWfDJDR5YGxtz9tyH2E+NbsUhfAeKfq0
+q2eac20IWZsZWV0IHRlc3QgPHRlc3RAZXhhbXBsZS5pbnZhbGlkPoiQBBMWCAA4
FiEEA/gFhGKUoqC0OfOJlvQhQxm4zZAFAmsRKHsCGwMFCwkIBwIGFQoJCAsCBBYC
AwECHgECF4AACgkQlvQhQxm4zZB7TgD/VCLO0jsgSLqPkxXgauceA2eWQM7V5TSG
hDNWVtUOuP0BANybPVdZ9KS8EOer4sX3R1t5v+LLM/doH6mX9geumrYB
=t+cZ
-----END PGP PUBLIC KEY BLOCK-----
"""


def test_the_fingerprint_of_an_armored_and_of_a_binary_key_is_gpgs():
    assert openpgp.fingerprint(ARMORED) == FINGERPRINT
    assert openpgp.fingerprint(openpgp.dearmor(ARMORED)) == FINGERPRINT
    assert openpgp.normalize("0x03f8 0584 6294 a2a0 b439  f389 96f4 2143 19b8 cd90") == FINGERPRINT


@pytest.mark.parametrize("data", [b"", b"hello", b"\x99\x00", bytes([0xC6, 5, 4, 0, 0]), b"-----BEGIN PGP x\n\n!!!\n"])
def test_what_is_not_a_key_is_refused(data):
    with pytest.raises(openpgp.OpenPGPError):
        openpgp.fingerprint(data)


def apt_files(monkeypatch, key_url, key=ARMORED, fingerprint=None):
    source = {"uri": "https://example.invalid/criu", "suite": "stable", "components": ["main"], "packages": ["criu"],
              "priority": 990, "key_url": key_url, "key_fingerprint": fingerprint, "preset": None, "signed_by": None}
    job = install.CriuInstall({"apt_source": source}, run=lambda *args, **kwargs: (0, "", ""))
    monkeypatch.setattr(install.CriuInstall, "download_key", lambda self, url: key)
    return job.wanted_apt_files()


def test_a_key_with_another_fingerprint_is_refused_and_nothing_changes(monkeypatch):
    files = apt_files(monkeypatch, "https://example.invalid/key.asc", fingerprint=FINGERPRINT)
    assert files["/etc/apt/keyrings/fleet-checkpoint-criu.asc"] == ARMORED
    with pytest.raises(install.CriuInstallError, match=f"has the fingerprint {FINGERPRINT}, not the expected 4E2A"):
        apt_files(monkeypatch, "https://example.invalid/key.asc", fingerprint="4E2A48715C45AEEC077B48169B29EEC9246B6CE2")


def test_a_key_url_that_is_not_https_is_refused(monkeypatch):
    with pytest.raises(install.CriuInstallError, match="is neither an https:// URL nor a file:// one"):
        apt_files(monkeypatch, "http://example.invalid/key.asc")
