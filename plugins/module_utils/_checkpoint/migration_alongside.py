# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A group moved from several sources to one target (migrate.yml's fleet_checkpoint_migrate_sources): what the other
sources' parts bring to the target too.

Each source's part is pre-flighted on the target by itself (migration_preflight.target_problems), which cannot see
that two parts meet there: a volume of one name that two sources carry, a host port two members publish, one fixed
address on one network, and the disk the parts need together."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import port_conflicts

Plan = Mapping[str, Any]  # docker_migration_preflight side=source's `plan`


def _containers(plan: Plan) -> list[Mapping[str, Any]]:
    return list(plan.get("containers") or [])


def _addresses(container: Mapping[str, Any]) -> set[tuple[str, str]]:
    """(network, address) of each fixed address the container was given (`--ip`, `--ip6`)."""
    found = set()
    for network, endpoint in ((container.get("config") or {}).get("networks") or {}).items():
        for key in ("ipv4_address", "ipv6_address"):
            if (endpoint or {}).get(key):
                found.add((network, str(endpoint[key])))
    return found


def clashes(the_plan: Plan, alongside: Mapping[str, Plan]) -> list[str]:
    """What one of this part's containers and one of another source's (`alongside`, by source host) would both
    take on the target, as messages."""
    problems = []
    for host, other in sorted(alongside.items()):
        for mine in _containers(the_plan):
            for theirs in _containers(other):
                both = f"{mine['name']} and {theirs['name']} (from {host}) both"
                for volume in sorted(set((mine.get("disk") or {}).get("volumes") or [])
                                     & set((theirs.get("disk") or {}).get("volumes") or [])):
                    problems.append(f"{both} carry a volume named {volume}, and the target can hold only one: on "
                                    "one source, copy it into a volume of another name and recreate its container "
                                    "with that one")
                held = set(port_conflicts.bindings(theirs.get("config") or {}))
                for address, port, proto in port_conflicts.taken(port_conflicts.bindings(mine.get("config") or {}),
                                                                 held):
                    problems.append(f"{both} publish {address or '0.0.0.0'}:{port}/{proto} on the target: publish "
                                    "another port for one of them, or move them to different targets")
                for network, address in sorted(_addresses(mine) & _addresses(theirs)):
                    problems.append(f"{both} have the address {address} on network {network}: give one of them "
                                    "another address, or move them to different targets")
    return problems


def containers_of(alongside: Mapping[str, Plan]) -> Iterable[Mapping[str, Any]]:
    """Every container the other sources' parts bring (for the disk the parts need together)."""
    for _host, other in sorted(alongside.items()):
        yield from _containers(other)
