# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The options every module that talks to the Docker Engine takes (docker_host, api_timeout): one argument spec,
documented once by the doc fragment plugins/doc_fragments/_docker_host.py."""

from __future__ import annotations

import copy
from typing import Any, Dict

from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DEFAULT_DOCKER_HOST

_DOCKER_HOST_ARGS: Dict[str, Dict[str, Any]] = {
    "docker_host": {"type": "str", "default": DEFAULT_DOCKER_HOST},
    "api_timeout": {"type": "int", "default": 60},
}


def docker_host_argument_spec() -> dict[str, dict[str, Any]]:
    """The docker_host and api_timeout options (a copy: a module may add to its spec)."""
    return copy.deepcopy(_DOCKER_HOST_ARGS)
