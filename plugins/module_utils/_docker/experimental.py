# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The work of the docker_experimental module: plan the daemon.json change and the restart, then carry them out.

Restart plans (`mode`):
- none: the running daemon already has the wanted experimental mode;
- skip: a restart is needed but restart=never: only restart_required is reported;
- unsafe: restart=if_safe, containers are running and live-restore cannot be used: not restarted;
- plain: restart dockerd (no container running, or restart=always);
- live_restore_first: containers are running: write the change plus "live-restore": true, reload when the daemon
  does not have live-restore on yet (SIGHUP, live-restore is reloadable), restart (the stopping daemon and the
  starting one both have live-restore on, so running containers keep their processes), then write the wanted file.
  A reload changes only the keys present in the file: when "live-restore" was only wanted for the restart, the
  running daemon keeps it on until its next restart.
"""

from __future__ import annotations

import os
import tempfile
from typing import TYPE_CHECKING

from ansible_collections.fleet.checkpoint.plugins.module_utils._docker import daemon_config
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import DockerAPIError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.service import DockerServiceError
from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.dockerd_flags import FLAG_FOR_KEY, find_conflicts

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, Literal, NoReturn, NotRequired, TypeAlias, TypedDict

    from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.api import (
        DockerAPI,
        JSONDict,
        RunningContainer,
    )
    from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.daemon_config import DaemonConfig
    from ansible_collections.fleet.checkpoint.plugins.module_utils._docker.service import DockerService, RunCommand

    RestartMode: TypeAlias = Literal["none", "skip", "unsafe", "plain", "live_restore_first"]
    """See the module docstring."""

    class Plan(TypedDict):
        """What ExperimentalMode.plan() decides: the files to write and how to bring dockerd to them."""

        mode: NotRequired[RestartMode]  # always set by plan() before it returns
        final: JSONDict  # the wanted daemon.json
        intermediate: JSONDict | None  # written for the restart when live-restore must be on only for it
        running: dict[str, RunningContainer]  # containers found running, when that mattered for the plan
        reload: bool  # reload (SIGHUP) to apply a live-restore change without a restart
        reason: str | None  # why a needed restart is not done (mode unsafe)
        reload_live_restore: bool  # reload to turn live-restore on before the restart


class ExperimentalModeError(Exception):
    """The module must fail; `details` go into the failure result."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.details = details


class ExperimentalMode:
    restart_attempted: bool  # set by execute(): whether dockerd may have been restarted

    def __init__(
        self,
        params: Mapping[str, Any],
        api: DockerAPI,
        service: DockerService,
        run: RunCommand,
        check_mode: bool = False,
        backup: Callable[[str], str] | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.params = params
        self.api = api
        self.service = service
        self.run_command = run
        self.check_mode = check_mode
        self.backup = backup
        self.warn = warn or (lambda msg: None)

    # ---- planning ---------------------------------------------------------------------------------------------

    def _daemon_info(self) -> JSONDict | None:
        try:
            return self.api.info()
        except DockerAPIError as exc:
            if self.params["restart"] == "never":
                return None
            raise ExperimentalModeError(
                f"{exc}. Start Docker (systemctl start docker) and run again, or use restart=never to only edit "
                "daemon.json. Nothing was changed."
            ) from exc

    def plan(self, config: DaemonConfig, info: JSONDict | None) -> Plan:
        params = self.params
        want_experimental = params["state"] == "enabled"
        updates, removals = daemon_config.wanted_changes(params["state"], params["live_restore"])
        final = config.with_changes(updates, removals)
        plan: Plan = {"final": final, "intermediate": None, "running": {}, "reload": False, "reason": None,
                      "reload_live_restore": False}
        if info is None:
            plan["mode"] = "skip"
            return plan
        swarm = (info.get("Swarm") or {}).get("LocalNodeState") == "active"
        if params["live_restore"] is True and swarm:
            raise ExperimentalModeError(
                "live_restore=true is incompatible with swarm mode and this host is an active swarm node: dockerd "
                "would refuse to start. Use live_restore=keep (or false). Nothing was changed."
            )
        if bool(info.get("ExperimentalBuild")) == want_experimental:
            plan["mode"] = "none"
        elif params["restart"] == "never":
            plan["mode"] = "skip"
        elif params["restart"] == "always":
            plan["mode"] = "plain"
        else:
            plan["running"] = self.api.running_containers()
            if not plan["running"]:
                plan["mode"] = "plain"
            elif params["live_restore"] is False or swarm:
                plan["mode"] = "unsafe"
                why = "live_restore=false was asked for" if params["live_restore"] is False else "this host is a swarm node"
                plan["reason"] = (
                    f"{len(plan['running'])} container(s) are running and live-restore cannot be used ({why}): "
                    "dockerd was not restarted, so experimental mode is not active yet. Restart Docker in a "
                    "maintenance window, or run with restart=always."
                )
            else:
                # Both the daemon that stops and the one that starts must have live-restore on, or the new daemon
                # stops the containers it finds running: the file must say so at restart time.
                plan["mode"] = "live_restore_first"
                plan["reload_live_restore"] = not info.get("LiveRestoreEnabled")
                if final.get("live-restore") is not True:
                    plan["intermediate"] = daemon_config.apply_changes(final, {"live-restore": True})
        wanted_live_restore = final.get("live-restore", False) if "live-restore" in updates else None
        if (
            wanted_live_restore is not None
            and plan["mode"] in ("none", "skip", "unsafe")
            and bool(info.get("LiveRestoreEnabled")) != wanted_live_restore
        ):
            plan["reload"] = True
        return plan

    def check_conflicts(self, config: DaemonConfig, plan: Plan) -> None:
        keys = [key for key in FLAG_FOR_KEY if key in plan["final"] or key in (plan["intermediate"] or {})]
        if self.params["state"] == "disabled":
            keys.append("experimental")
        conflicts = find_conflicts(sorted(set(keys)), config.path, self.service.unit_text())
        if not conflicts:
            return
        lines: list[str] = []
        for conflict in conflicts:
            if conflict.key == "config-file":
                lines.append(f"dockerd is started with {conflict.flag} (from {conflict.source}), so it does not read "
                             f"{config.path}: set path to that file")
            elif self.params["state"] == "disabled" and conflict.key == "experimental":
                lines.append(f"dockerd is started with {conflict.flag} (from {conflict.source}): experimental mode "
                             "cannot be turned off in daemon.json; remove the flag there")
            else:
                lines.append(f"dockerd is started with {conflict.flag} (from {conflict.source}); writing "
                             f"{conflict.key!r} to {config.path} as well would stop dockerd from starting. Remove the "
                             "flag (and reload systemd), or leave this setting to the command line")
        raise ExperimentalModeError(
            "; ".join(lines) + f". {config.path} was not changed.",
            conflicts=[c.as_dict() for c in conflicts],
        )

    def dockerd_validates(self) -> bool:
        """True when the installed dockerd has --validate (Docker 23 and later)."""
        try:
            rc, out, err = self.run_command(["dockerd", "--help"])
        except OSError:
            return False
        return rc == 0 and "--validate" in (out + err)

    def validate(self, config: DaemonConfig, data: JSONDict) -> None:
        """Check a candidate daemon.json with `dockerd --validate` in the target directory; raise when refused."""
        directory = tempfile.mkdtemp(prefix="fleet-daemon-json-")  # private (0700): check mode writes nothing in /etc
        tmp_path = os.path.join(directory, "daemon.json")
        try:
            with open(tmp_path, "w", encoding="utf-8") as handle:
                handle.write(daemon_config.render(data, config.indent))
            rc, out, err = self.run_command(["dockerd", "--validate", "--config-file", tmp_path])
        finally:
            os.unlink(tmp_path)
            os.rmdir(directory)
        if rc != 0:
            message = (err or out).strip().replace(tmp_path, config.path)
            raise ExperimentalModeError(
                f"dockerd --validate refuses the new {config.path}: {message}. Nothing was changed."
            )

    # ---- doing ------------------------------------------------------------------------------------------------

    def _write(self, config: DaemonConfig, data: JSONDict) -> None:
        daemon_config.write_atomic(config.real_path, config.render(data))

    def _wait_experimental(self, want: bool) -> JSONDict:
        return self.service.wait_for(lambda info: bool(info.get("ExperimentalBuild")) == want,
                                     f"healthy with experimental={str(want).lower()}")

    def _wait_live_restore(self, want: bool) -> JSONDict:
        return self.service.wait_for(lambda info: bool(info.get("LiveRestoreEnabled")) == want,
                                     f"reloaded with live-restore={str(want).lower()}")

    def execute(self, config: DaemonConfig, plan: Plan, want_experimental: bool) -> None:
        mode = plan["mode"]
        final = plan["final"]
        self.restart_attempted = False
        if mode == "live_restore_first":
            self._write(config, plan["intermediate"] or final)
            if plan["reload_live_restore"]:
                self.service.reload()
                self._wait_live_restore(True)
            self.restart_attempted = True
            self.service.restart()
            self._wait_experimental(want_experimental)
            if plan["intermediate"] is not None:
                # Back to the wanted file. A reload only changes keys present in the file, so an absent
                # "live-restore" leaves it on in the running daemon until its next restart.
                self._write(config, final)
                if "live-restore" in final:
                    self.service.reload()
                    self._wait_live_restore(bool(final["live-restore"]))
        elif mode == "plain":
            self._write(config, final)
            self.restart_attempted = True
            self.service.restart()
            self._wait_experimental(want_experimental)
        else:
            if config.render(final) != config.text or not config.exists:
                if final or config.exists:
                    self._write(config, final)
            if plan["reload"]:
                self.service.reload()
                self._wait_live_restore(bool(final.get("live-restore", False)))

    def rollback(self, config: DaemonConfig, plan: Plan, failure: BaseException) -> NoReturn:
        """Put daemon.json back and bring dockerd back as it was; raise an error telling what happened."""
        journal = self.service.journal_excerpt()
        steps: list[str] = []
        restarted = getattr(self, "restart_attempted", False)
        try:
            if plan["mode"] == "live_restore_first" and restarted:
                # Keep the running containers alive: come back with live-restore on, then drop it by reload.
                try:
                    daemon_config.write_atomic(
                        config.real_path,
                        daemon_config.render(daemon_config.apply_changes(config.data, {"live-restore": True}),
                                             config.indent))
                    self.service.restart()
                    self.service.wait_for(lambda info: True, "reachable")
                    daemon_config.restore(config)
                    if "live-restore" in config.data:
                        self.service.reload()
                        self.service.wait_for(lambda info: True, "reachable")
                    steps.append("previous daemon.json restored; Docker restarted with live-restore on, so running "
                                 "containers were kept")
                except (DockerServiceError, OSError):
                    daemon_config.restore(config)
                    self.service.restart()
                    self.service.wait_for(lambda info: True, "reachable")
                    steps.append("previous daemon.json restored and Docker restarted")
            else:
                daemon_config.restore(config)
                if restarted:
                    self.service.restart()
                else:
                    self.service.reload()
                self.service.wait_for(lambda info: True, "reachable")
                steps.append("previous daemon.json restored and Docker " + ("restarted" if restarted else "reloaded"))
        except (DockerServiceError, OSError) as exc:
            steps.append(f"ROLLBACK FAILED: {exc}; Docker may be down: check systemctl status docker")
        raise ExperimentalModeError(
            f"{failure}. Rolled back: {'; '.join(steps)}. Docker's log: " + (" | ".join(journal) or "(nothing)"),
            journal=journal,
            rolled_back=True,
        )

    # ---- the whole run ----------------------------------------------------------------------------------------

    def run(self) -> JSONDict:
        try:
            return self._run()
        except DockerAPIError as exc:
            raise ExperimentalModeError(f"the Docker Engine API failed: {exc}") from exc

    def _run(self) -> JSONDict:
        params = self.params
        try:
            config = daemon_config.read(params["path"])
        except daemon_config.DaemonConfigError as exc:
            raise ExperimentalModeError(str(exc)) from exc
        info = self._daemon_info()
        plan = self.plan(config, info)
        want_experimental = params["state"] == "enabled"
        final_text = config.render(plan["final"])
        file_changes = final_text != config.text and (config.exists or bool(plan["final"]))
        will_restart = plan["mode"] in ("plain", "live_restore_first")
        if file_changes or will_restart or plan["reload"]:
            self.check_conflicts(config, plan)
        if will_restart and not self.service.managed_by_systemd():
            raise ExperimentalModeError(
                "dockerd must be restarted for experimental mode, but docker.service is not managed by systemd here. "
                "Use restart=never and restart dockerd yourself. Nothing was changed."
            )
        validated = False
        if (file_changes or plan["intermediate"]) and params["validate"] and self.dockerd_validates():
            for candidate in (plan["final"], plan["intermediate"]):
                if candidate is not None:
                    self.validate(config, candidate)
            validated = True

        daemon_before = {
            "experimental": bool(info.get("ExperimentalBuild")) if info else None,
            "live_restore": bool(info.get("LiveRestoreEnabled")) if info else None,
        }
        result: JSONDict = {
            "changed": bool(file_changes or will_restart or plan["reload"]),
            "daemon_json": config.path,
            "docker_version": info.get("ServerVersion") if info else None,
            "restart_mode": plan["mode"],
            "restart_required": plan["mode"] in ("skip", "unsafe"),
            "restarted": will_restart,
            "reloaded": bool(plan["reload"] or plan["reload_live_restore"]
                             or (plan["intermediate"] is not None and "live-restore" in plan["final"])),
            "validated": validated,
            "backup_file": None,
            "containers_kept_running": [],
            "containers_stopped": [],
            "live_restored_containers": [],
            "diff": {
                "before": config.text,
                "after": final_text if (file_changes or config.exists) else "",
                "before_header": f"{config.path} (before)",
                "after_header": f"{config.path} (after)",
            },
        }
        if plan["reason"]:
            self.warn(plan["reason"])
            result["restart_reason"] = plan["reason"]

        predicted_experimental = want_experimental if will_restart else daemon_before["experimental"]
        final = plan["final"]
        predicted_live_restore: bool | None
        if plan["mode"] == "live_restore_first":
            predicted_live_restore = bool(final.get("live-restore", True))
        elif will_restart:
            predicted_live_restore = bool(final.get("live-restore", False))
        elif plan["reload"]:
            predicted_live_restore = bool(final["live-restore"])
        else:
            predicted_live_restore = daemon_before["live_restore"]
        result["experimental"] = {"before": daemon_before["experimental"], "after": predicted_experimental}
        result["live_restore"] = {"before": daemon_before["live_restore"], "after": predicted_live_restore}
        running_before = plan["running"] or (self.api.running_containers() if will_restart else {})
        if self.check_mode or not result["changed"]:
            if will_restart:
                names = sorted(c["name"] for c in running_before.values())
                kept = plan["mode"] == "live_restore_first" or (
                    daemon_before["live_restore"] and plan["final"].get("live-restore") is True)
                if kept:
                    result["containers_kept_running"] = result["live_restored_containers"] = names
                else:
                    result["containers_stopped"] = names
            return result

        # The module always passes backup (module.backup_local).
        if params["backup"] and config.exists and file_changes and self.backup is not None:
            result["backup_file"] = self.backup(config.real_path)
        try:
            self.execute(config, plan, want_experimental)
        except (DockerServiceError, OSError) as exc:
            self.rollback(config, plan, exc)

        if info is not None:
            after = self.api.info()
            result["experimental"]["after"] = bool(after.get("ExperimentalBuild"))
            result["live_restore"]["after"] = bool(after.get("LiveRestoreEnabled"))
            result["docker_version"] = after.get("ServerVersion")
        if will_restart:
            running_after = self.api.running_containers()
            for cid, before in sorted(running_before.items(), key=lambda item: item[1]["name"]):
                now = running_after.get(cid)
                if now and now["pid"] == before["pid"]:
                    result["containers_kept_running"].append(before["name"])
                else:
                    result["containers_stopped"].append(before["name"])
            result["live_restored_containers"] = list(result["containers_kept_running"])
        return result
