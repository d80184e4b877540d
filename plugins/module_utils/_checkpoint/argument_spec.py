# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""docker_checkpoint's options, as AnsibleModule takes them (documented in the module and its doc fragment)."""

from __future__ import annotations

from typing import Any

from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.common_args import docker_host_argument_spec


def argument_spec() -> dict[str, Any]:
    """The module's options (docker_host and api_timeout shared with the other Docker modules)."""
    return dict(
        name=dict(type="str"),
        state=dict(type="str", default="present", choices=["present", "absent", "restored", "exported", "imported"]),
        container=dict(type="str"),
        containers=dict(type="list", elements="str"),
        all_running=dict(type="bool"),
        filters=dict(type="dict"),
        exclude=dict(type="list", elements="str", default=[]),
        leave_running=dict(type="bool", default=False),
        consistent=dict(type="bool", default=False),
        barrier_dir=dict(type="path"),
        barrier_timeout=dict(type="int", default=60),
        force=dict(type="bool", default=False),
        method=dict(type="str", default="auto", choices=["auto", "api", "containerd"]),
        target=dict(type="str"),
        archive_path=dict(type="path"),
        archive_dir=dict(type="path"),
        compression=dict(type="str", default="zstd", choices=["zstd", "gzip", "none"]),
        archive_layout=dict(type="str", default="fleet", choices=["fleet", "podman"]),
        encryption_key=dict(type="str", no_log=True),
        encryption_key_file=dict(type="path", no_log=False),
        keep_last=dict(type="int"),
        max_age=dict(type="str"),
        verify=dict(type="bool", default=True),
        parallel=dict(type="int"),
        timeout=dict(type="int", default=600),
        manifest_path=dict(type="path"),
        release_run_lock=dict(type="str"),
        lock_timeout=dict(type="int", default=300),
        create=dict(type="bool", default=False),
        send_to=dict(type="dict", options=dict(
            via=dict(type="str", default="ssh", choices=["ssh", "relay"]),
            host=dict(type="str"),
            user=dict(type="str", default="root"),
            port=dict(type="int", default=22),
            directory=dict(type="path", required=True),
            known_hosts_file=dict(type="path"),
            identity_file=dict(type="path"),
            python=dict(type="str", default="python3"),
            ready_timeout=dict(type="int", default=30),
            writable_layer=dict(type="bool", default=False),
            volumes=dict(type="str", default="none", choices=["all", "named", "none"]),
            precopy=dict(type="bool", default=True),
            lazy=dict(type="bool", default=False),
            memory_rounds=dict(type="int", default=0),
            memory_goal=dict(type="int", default=70),
        ), required_if=[("via", "ssh", ("host",))]),
        receive_timeout=dict(type="int"),
        rename=dict(type="dict", default={}),
        allow_bind_mounts=dict(type="list", elements="str", default=[]),
        allow_network_modes=dict(type="list", elements="str", default=[], choices=["host", "container"]),
        fallback=dict(type="str", default="fail", choices=["cold_start", "leave_stopped", "fail"]),
        **docker_host_argument_spec(),
    )
