# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""CRIU's own log under Docker: where runc.conf has CRIU write it, and its error lines added to a failure message.

Docker deletes CRIU's log when a dump or restore fails; a `log-file` in /etc/criu/runc.conf (set by the
fleet.checkpoint.criu role) keeps it, and runc passes it on to CRIU.
"""

from __future__ import annotations

import os

RUNC_CONF = "/etc/criu/runc.conf"
HARMLESS = ("RLIMIT_NOFILE",)  # CRIU warns it cannot raise RLIMIT_NOFILE without CAP_SYS_RESOURCE: harmless


def criu_log_path(runc_conf: str = RUNC_CONF) -> str | None:
    """The `log-file` CRIU is given through runc.conf (set by the criu role), or None."""
    try:
        with open(runc_conf, encoding="utf-8") as handle:
            for line in handle:
                parts = line.split(None, 1)
                if len(parts) == 2 and parts[0] == "log-file":
                    return parts[1].strip()
    except OSError:
        pass
    return None


def criu_log_excerpt(path: str | None, since: float | None = None, limit: int = 15) -> list[str]:
    """Error and warning lines of CRIU's log (only when written after `since`), the harmless ones left out."""
    if not path:
        return []
    try:
        if since is not None and os.path.getmtime(path) < since:
            return []
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    picked = [line.strip() for line in lines
              if ("Error" in line or "Warn" in line) and not any(word in line for word in HARMLESS)]
    return picked[-limit:]


def explain(log_path: str | None, what: str, detail: str, since: float | None) -> str:
    """A failure message: what failed and the detail, then CRIU's lines from its log since `since` (or, when CRIU
    keeps no log, how to make it keep one)."""
    lines = criu_log_excerpt(log_path, since=since)
    text = f"{what}: {detail.strip()}"
    if lines:
        text += f" | CRIU log ({log_path}): " + " / ".join(lines)
    elif log_path is None:
        text += (" | CRIU's log is not kept on this host: the fleet.checkpoint.criu role sets log-file in "
                 "/etc/criu/runc.conf so that failures can be explained")
    return text
