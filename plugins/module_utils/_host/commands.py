# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Finding the host's commands (runc, criu, crit, timeout)."""

from __future__ import annotations

import shutil

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def which(command: str) -> str | None:
    """The command's path: on PATH, else in the system's directories (a module's PATH may lack sbin); None."""
    return shutil.which(command) or shutil.which(command, path=SYSTEM_PATH)
