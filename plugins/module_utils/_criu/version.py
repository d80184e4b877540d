# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""CRIU and kernel version strings: parsing and comparison. Plain Python, unit-tested directly."""

from __future__ import annotations

import re

_CRIU_VERSION = re.compile(r"^\s*Version:\s*([0-9]+(?:\.[0-9]+)*)", re.MULTILINE)
_NUMERIC_PREFIX = re.compile(r"^([0-9]+(?:\.[0-9]+)*)")


def parse_criu_version(text: str | None) -> str | None:
    """The version from `criu --version` output ("Version: 4.1.1", maybe a "GitID:" line), or None."""
    match = _CRIU_VERSION.search(text or "")
    return match.group(1) if match else None


def version_tuple(version: str | None, width: int = 3) -> tuple[int, ...]:
    """'4.1' -> (4, 1, 0). Accepts package versions: epoch and Debian/RPM revision are dropped."""
    if version is None:
        raise ValueError("no version")
    text = str(version).strip()
    if ":" in text:  # Debian/RPM epoch
        text = text.split(":", 1)[1]
    match = _NUMERIC_PREFIX.match(text)
    if not match:
        raise ValueError(f"not a version: {version!r}")
    parts = [int(part) for part in match.group(1).split(".")]
    return tuple(parts + [0] * (width - len(parts))) if len(parts) < width else tuple(parts)


def upstream_version(package_version: str) -> str:
    """'3.17.1-2+deb12u2' -> '3.17.1'; '1:4.1.1-1' -> '4.1.1'; '4.2-13.fc44' -> '4.2'."""
    text = str(package_version).strip()
    if ":" in text:
        text = text.split(":", 1)[1]
    match = _NUMERIC_PREFIX.match(text)
    if not match:
        raise ValueError(f"not a package version: {package_version!r}")
    return match.group(1)


def compare(left: str, right: str) -> int:
    """-1, 0 or 1, comparing two version strings numerically ('4.1' == '4.1.0')."""
    a, b = version_tuple(left), version_tuple(right)
    width = max(len(a), len(b))
    a, b = a + (0,) * (width - len(a)), b + (0,) * (width - len(b))
    return (a > b) - (a < b)


def at_least(version: str, minimum: str) -> bool:
    return compare(version, minimum) >= 0


def kernel_version(release: str) -> tuple[int, ...]:
    """'6.18.44-fc-v669' -> (6, 18, 44)."""
    return version_tuple(release)
