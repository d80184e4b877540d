# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Root-only files and directories on the host: JSON written atomically 0600, directories made 0700.

Everything fleet.checkpoint writes beside a checkpoint (metadata, markers, host manifests) may describe processes
whose memory holds secrets, so nothing it writes is readable by anyone but root.
"""

from __future__ import annotations

import json
import os
from typing import Any


def write_private_json(path: str, data: Any) -> None:
    """Write JSON atomically, root-only (0600)."""
    tmp = f"{path}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=True)
        handle.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure_private_dir(path: str) -> None:
    """Create path (and parents) 0700 when missing; make an existing one 0700."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)
