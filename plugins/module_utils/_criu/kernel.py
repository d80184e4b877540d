# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which CRIU a kernel needs: a small, sourced table of kernel floors.

A version number alone does not prove CRIU works on a kernel (the module's self-test does that); the table only
says which CRIU releases cannot work, so that the module asks for a newer one up front and explains why.
"""

from __future__ import annotations

from typing import TypedDict

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.version import at_least, kernel_version

# (kernel at least, CRIU at least, why, source). Keep sorted by kernel version.
KERNEL_FLOORS: tuple[tuple[tuple[int, ...], str, str, str], ...] = (
    (
        (6, 13),
        "4.1",
        "Linux 6.13 moved the vDSO clock pages into their own mapping (vvar_vclock); older CRIU fails "
        "`criu check` and every dump with 'vdso: Unexpected rt vDSO area bounds'",
        "https://github.com/checkpoint-restore/criu/issues/2532 (fixed by criu PR #2539, released in CRIU 4.1)",
    ),
)


class KernelFloor(TypedDict):
    """The kernel floor that applies: the CRIU it needs, why, where that is documented, and the kernel (e.g. '6.13')."""

    criu: str
    reason: str
    source: str
    kernel: str


def kernel_floor(kernel_release: str) -> KernelFloor | None:
    """The strictest floor that applies to this kernel: dict(criu=, reason=, source=, kernel=) or None."""
    kernel = kernel_version(kernel_release)
    best: KernelFloor | None = None
    for floor_kernel, criu, reason, source in KERNEL_FLOORS:
        if kernel[: len(floor_kernel)] >= floor_kernel and (best is None or at_least(criu, best["criu"])):
            best = {"criu": criu, "reason": reason, "source": source,
                    "kernel": ".".join(str(part) for part in floor_kernel)}
    return best


def effective_minimum(min_version: str, kernel_release: str) -> tuple[str, str]:
    """The CRIU version to require: the higher of the user's min_version and the kernel floor, with the reason."""
    floor = kernel_floor(kernel_release)
    if floor and not at_least(min_version, floor["criu"]):
        return floor["criu"], (
            f"kernel {kernel_release} needs CRIU {floor['criu']} or newer: {floor['reason']} ({floor['source']})"
        )
    return min_version, f"min_version {min_version}"
