# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""state=absent: remove a checkpoint (through Docker's API), and the mark of a dump in doubt with it."""

from __future__ import annotations

import os

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import container
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.context import (
    HostContext,
    Result,
    new_result,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.errors import carrying


def absent(ctx: HostContext, ref: str, name: str) -> Result:
    """Make sure the container has no checkpoint `name`. A container stopped by that checkpoint keeps restart policy
    'no' (a restore would have put the recorded one back): a warning says so."""
    found = container.settled(ctx, container.inspect(ctx, ref))
    cid = found["Id"]
    result = new_result(found, name)
    with carrying(result):
        path = store.checkpoint_path(ctx.root_dir, cid, name, put_back_pages=not ctx.check_mode)
        if not os.path.isdir(path):
            return result
        metadata = store.read_metadata(path)
        result.update(changed=True, action="removed", path=path)
        recorded = metadata.get("restart_policy")
        running = (found.get("State") or {}).get("Running")
        if recorded and not container.is_no(recorded) and not running and container.is_no(container.policy(found)):
            result["warnings"].append(
                f"{result['container']} is stopped with restart policy 'no' since this checkpoint; its recorded "
                f"policy {recorded['Name']!r} is not put back (a restore would have). Set it with "
                "`docker update --restart` if the container should start again at boot"
            )
        if ctx.check_mode:
            return result
        ctx.api.delete(f"/containers/{cid}/checkpoints/{name}")
        in_doubt = store.in_doubt_marker(path)
        if os.path.exists(in_doubt):
            os.unlink(in_doubt)
    return result
