# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Presence: a path inside a container looked up as a restore would find it."""

from __future__ import annotations

import os
import stat

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import file_presence
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.file_presence import Presence, in_layers


def put(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def whiteout(monkeypatch, path):
    """A whiteout; overlayfs' are character devices 0:0, which only root may make: a FIFO stands for one here."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    monkeypatch.setattr(file_presence, "_is_whiteout", lambda mode, rdev: stat.S_ISFIFO(mode))


def test_whiteout_test_is_overlayfs_one():
    assert file_presence._is_whiteout(stat.S_IFCHR | 0o600, 0)  # pylint: disable=protected-access
    assert not file_presence._is_whiteout(stat.S_IFCHR | 0o600, os.makedev(1, 3))  # (/dev/null)  # pylint: disable=protected-access
    assert not file_presence._is_whiteout(stat.S_IFREG | 0o600, 0)  # pylint: disable=protected-access


def test_upper_layer_first_then_the_lower_ones(tmp_path, monkeypatch):
    upper, middle, lower = tmp_path / "upper", tmp_path / "middle", tmp_path / "lower"
    for layer in (upper, middle, lower):
        layer.mkdir()
    put(lower / "usr/bin/app")
    put(middle / "data/seed")
    put(upper / "srv/new")
    layers = [str(upper), str(middle), str(lower)]
    assert in_layers(layers, "/usr/bin/app") and in_layers(layers, "/data/seed") and in_layers(layers, "/srv/new")
    assert not in_layers(layers, "/data/other")
    assert in_layers(layers, "/")
    # Deleted in the container: a whiteout in the upper layer hides the lower file, and a whited-out directory
    # everything under it.
    whiteout(monkeypatch, upper / "usr/bin/app")
    assert not in_layers(layers, "/usr/bin/app")
    whiteout(monkeypatch, upper / "data")
    assert not in_layers(layers, "/data/seed")


def test_an_opaque_directory_hides_what_the_layers_below_have_in_it(tmp_path):
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    put(lower / "etc/app/old.conf")
    put(upper / "etc/app/new.conf")
    layers = [str(upper), str(lower)]
    assert in_layers(layers, "/etc/app/old.conf")
    os.setxattr(upper / "etc/app", "user.overlay.opaque", b"y")
    assert not in_layers(layers, "/etc/app/old.conf") and in_layers(layers, "/etc/app/new.conf")


def test_a_file_in_an_upper_layer_hides_a_lower_directory_of_that_name(tmp_path):
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    put(lower / "srv/www/index.html")
    put(upper / "srv/www")
    assert not in_layers([str(upper), str(lower)], "/srv/www/index.html")


def inspect_of(tmp_path, running=False):
    upper, lower = tmp_path / "upper", tmp_path / "lower"
    put(lower / "usr/bin/app")
    upper.mkdir(exist_ok=True)
    (tmp_path / "volume").mkdir(exist_ok=True)
    put(tmp_path / "hosts")
    return {"State": {"Running": running, "Pid": 4242 if running else 0},
            "GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": str(upper), "LowerDir": str(lower)}},
            "Mounts": [{"Type": "volume", "Destination": "/data", "Source": str(tmp_path / "volume")},
                       {"Type": "bind", "Destination": "/data/cache", "Source": str(tmp_path / "cache")}],
            "HostsPath": str(tmp_path / "hosts")}


def test_a_stopped_container_is_looked_up_in_its_mounts_then_its_layers(tmp_path):
    presence = Presence(inspect_of(tmp_path))
    assert presence.exists("/usr/bin/app") and not presence.exists("/usr/bin/gone")
    assert presence.exists("/etc/hosts")  # (Docker's own file, kept in the container's directory)
    assert not presence.exists("/data/app.log")
    put(tmp_path / "volume/app.log")
    assert presence.exists("/data/app.log")
    # The deeper mount wins: /data/cache is a bind mount of its own, which is missing.
    put(tmp_path / "volume/cache/x")
    assert not presence.exists("/data/cache/x")


def test_a_running_container_is_looked_up_through_its_own_root(tmp_path):
    proc = tmp_path / "proc"
    put(proc / "4242/root/only/here")
    presence = Presence(inspect_of(tmp_path, running=True), proc_root=str(proc))
    assert presence.exists("/only/here") and not presence.exists("/usr/bin/app")


def test_another_storage_driver_is_not_guessed(tmp_path):
    found = inspect_of(tmp_path)
    found["GraphDriver"] = {"Name": "overlayfs", "Data": None}  # (the containerd image store)
    assert Presence(found).exists("/usr/bin/app") is None


def test_a_path_that_climbs_or_a_link_out_of_a_volume_is_not_looked_up_on_the_host(tmp_path):
    presence = Presence(inspect_of(tmp_path))
    assert presence.exists("/usr/../usr/bin/app") is None
    os.symlink("/etc", tmp_path / "volume" / "out")  # (a link in the volume to the host's /etc)
    assert presence.exists("/data/out/hostname") is None
    assert presence.exists("/data/out") is True  # (the link itself is in the volume)
