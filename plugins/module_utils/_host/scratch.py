# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A local, root-only scratch directory for what must never land beside an archive: the plain tar of an archive being
encrypted, the decrypted copy of one being imported.

Archives often live on shared or backed-up storage (the reason to encrypt them); their plaintext is made here instead,
on the host's own disk, in directories only root can enter, and removed when done. What a killed run left here is
swept by the next run that holds the host's lock (no other run can be using it then).
"""

from __future__ import annotations

import os
import shutil
import tempfile

SCRATCH = "/var/lib/fleet-checkpoint/tmp"


def new_dir(base: str = SCRATCH) -> str:
    """A new private directory (0700) under base, which is made 0700 (with its parents) when missing."""
    os.makedirs(base, mode=0o700, exist_ok=True)
    os.chmod(base, 0o700)
    path = tempfile.mkdtemp(prefix="fleet-", dir=base)
    os.chmod(path, 0o700)
    return path


def remove(path: str, base: str | None) -> None:
    """Remove a directory new_dir(base) made, and base when that is empty then (nothing stays behind a run); with
    base None (a directory of the system's temp), only the directory."""
    shutil.rmtree(path, ignore_errors=True)
    if base:
        try:
            os.rmdir(base)
        except OSError:
            pass  # not empty: another directory of this run


def sweep(base: str = SCRATCH) -> list[str]:
    """Remove everything under base (left by runs that were killed); the names removed. Only for a run that holds
    the host's lock."""
    try:
        names = sorted(os.listdir(base))
    except FileNotFoundError:
        return []
    for name in names:
        path = os.path.join(base, name)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
    try:
        os.rmdir(base)
    except OSError:
        pass
    return names
