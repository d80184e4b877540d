# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The error every per-container checkpoint operation raises (its own module, so that every part can raise it)."""

from __future__ import annotations


class OpError(Exception):
    """This container's operation failed; the message says why and what to do."""
