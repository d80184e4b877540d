# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""What a checkpoint or restore needs from the host, checked before anything is touched, with the remedy named.

Docker's checkpoint API exists only in experimental mode (fleet.checkpoint.docker_experimental turns it on) and runs
CRIU through runc (fleet.checkpoint.criu_install installs a CRIU that works on the host's kernel).
"""

from __future__ import annotations

import os
from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import Run
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu import check_cache
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.log import HARMLESS
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.kernel import effective_minimum
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.version import at_least, parse_criu_version


class PreflightError(Exception):
    """The host cannot do what was asked; the message says what to do."""


def check_experimental(info: dict[str, Any]) -> None:
    if not info.get("ExperimentalBuild"):
        raise PreflightError(
            "Docker's experimental mode is off on this host, so its checkpoint API is not served: turn it on with "
            "fleet.checkpoint.docker_experimental (or the fleet.checkpoint.docker_experimental role) first"
        )


def _kernel_release() -> str:
    return os.uname().release


def _require_criu(criu_path: str | None) -> str:
    if not criu_path:
        raise PreflightError(
            "CRIU is not installed on this host (no criu in PATH): install a CRIU that works on this kernel with "
            "fleet.checkpoint.criu_install (or the fleet.checkpoint.criu role)"
        )
    return criu_path


def _criu_version(run: Run, criu_path: str) -> str:
    rc, out, err = run([criu_path, "--version"])
    version = parse_criu_version(out) if rc == 0 else None
    if not version:
        raise PreflightError(f"`{criu_path} --version` failed ({(err or out).strip()}): reinstall CRIU with "
                             "fleet.checkpoint.criu_install")
    return version


def check_criu(run: Run, criu_path: str | None, kernel_release: str | None = None, version: str | None = None) -> str:
    """Return CRIU's version; raise PreflightError when it is missing or too old for the kernel."""
    kernel_release = kernel_release or _kernel_release()
    path = _require_criu(criu_path)
    version = version or _criu_version(run, path)
    minimum, why = effective_minimum("2.0", kernel_release)
    if not at_least(version, minimum):
        raise PreflightError(f"CRIU {version} is too old: {why}. Install a newer one with fleet.checkpoint.criu_install")
    return version


def check_criu_works(run: Run, criu_path: str) -> None:
    """`criu check` on this host; raise PreflightError with CRIU's own lines when it does not pass."""
    rc, out, err = run([criu_path, "check"])
    text = f"{out}\n{err}"
    if rc != 0 or "Looks good" not in text:
        lines = [line.strip() for line in text.splitlines()
                 if line.strip() and not any(word in line for word in HARMLESS)]
        raise PreflightError(f"`criu check` does not pass on this host ({' / '.join(lines[-5:]) or f'exit {rc}'}): "
                             "install a CRIU that works on this kernel with fleet.checkpoint.criu_install")


def criu_preflight(run: Run, criu_path: str | None, works: bool = False, cache_dir: str = check_cache.DEFAULT_DIR,
                   record: bool = True) -> str:
    """check_criu, and with works=True check_criu_works, asking CRIU only what this boot has not answered yet for
    this binary (see _criu.check_cache); returns CRIU's version. record=False (check mode) writes nothing."""
    path = _require_criu(criu_path)
    key = check_cache.cache_key(path)
    known = check_cache.read(key, cache_dir)
    version = check_criu(run, path, version=known.get("version"))
    checked = known.get("check", False)
    if works and not checked:
        check_criu_works(run, path)
        checked = True
    if record and (version, checked) != (known.get("version"), known.get("check", False)):
        check_cache.write(key, version, checked, cache_dir)
    return version


def check_free_space(path: str, needed: int) -> int:
    """Raise PreflightError when the filesystem holding path has less than `needed` bytes free."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    stat = os.statvfs(probe)
    free = stat.f_bavail * stat.f_frsize
    if free < needed:
        raise PreflightError(
            f"not enough free disk for the dump: about {needed // (1024 * 1024)} MiB needed (the container's "
            f"resident memory plus margin), {free // (1024 * 1024)} MiB free on the filesystem of {probe}; "
            "free some space (for example remove old checkpoints with state=absent or keep_last)"
        )
    return free
