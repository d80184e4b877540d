# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later


class ModuleDocFragment:
    """How a module reaches the Docker Engine on the managed host (private to fleet.checkpoint).

    DOCUMENTATION documents the argument spec of plugins/module_utils/_docker/common_args.py: change both together.
    """

    DOCUMENTATION = r"""
options:
  docker_host:
    description:
      - The Docker Engine API to talk to, on the managed host.
      - V(unix:///path) for a unix socket, or V(tcp://host:port) for plain TCP (TLS is not supported; reach remote
        hosts through Ansible's own connection instead).
      - The API is used directly through Python's standard library; the managed host needs no Docker SDK.
    type: str
    default: unix:///var/run/docker.sock
  api_timeout:
    description:
      - Seconds to wait for one answer from the Docker Engine API.
    type: int
    default: 60
"""

    ATTRIBUTES = r"""
attributes:
  action_group:
    description: Use C(group/fleet.checkpoint.docker) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - fleet.checkpoint.docker
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: posix
"""

    INFO_MODULE = r"""
attributes:
  check_mode:
    description: Never changes anything; runs the same in check mode.
    support: full
  diff_mode:
    description: Nothing to compare.
    support: N/A
"""
