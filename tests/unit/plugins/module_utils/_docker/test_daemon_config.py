# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import json
import os
import stat

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._docker import daemon_config as dc


def write(path, text, mode=0o644):
    path.write_text(text, encoding="utf-8")
    os.chmod(path, mode)
    return str(path)


def test_missing_file_reads_as_empty_object(tmp_path):
    config = dc.read(str(tmp_path / "docker" / "daemon.json"))
    assert config.exists is False
    assert config.data == {}
    assert config.text == ""


@pytest.mark.parametrize("text", ["", "\n", "   \n\t\n"])
def test_empty_or_blank_file_is_empty_object(tmp_path, text):
    config = dc.read(write(tmp_path / "daemon.json", text))
    assert config.exists is True
    assert config.data == {}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ('{"experimental": tru}', "not valid JSON"),
        ('{"a": 1,}', "not valid JSON"),
        ("{'a': 1}", "not valid JSON"),
        ('["experimental"]', "JSON list, not an object"),
        ('"experimental"', "JSON str, not an object"),
        ("true", "JSON bool, not an object"),
        ('{"debug": true, "debug": false}', "duplicate key 'debug'"),
    ],
)
def test_unusable_content_is_refused_with_a_clear_error(tmp_path, text, fragment):
    path = write(tmp_path / "daemon.json", text)
    with pytest.raises(dc.DaemonConfigError) as err:
        dc.read(path)
    assert fragment in str(err.value)
    assert path in str(err.value)
    assert "not changed" in str(err.value)


def test_invalid_json_error_gives_the_position(tmp_path):
    path = write(tmp_path / "daemon.json", '{\n  "debug": true,\n  "experimental": yes\n}\n')
    with pytest.raises(dc.DaemonConfigError, match="line 3, column 19"):
        dc.read(path)


def test_non_utf8_file_is_refused(tmp_path):
    path = tmp_path / "daemon.json"
    path.write_bytes(b'{"label": "\xff"}')
    with pytest.raises(dc.DaemonConfigError, match="not UTF-8"):
        dc.read(str(path))


def test_directory_is_refused(tmp_path):
    with pytest.raises(dc.DaemonConfigError, match="is a directory"):
        dc.read(str(tmp_path))


def test_changes_keep_other_keys_order_and_types(tmp_path):
    text = json.dumps(
        {
            "storage-driver": "overlay2",
            "log-opts": {"max-size": "10m", "max-file": "3"},
            "debug": False,
            "max-concurrent-downloads": 3,
            "default-ulimits": {"nofile": {"Name": "nofile", "Hard": 64000, "Soft": 64000}},
            "ratio": 1.5,
            "dns": [],
            "registry-mirrors": None,
        },
        indent=4,
    )
    config = dc.read(write(tmp_path / "daemon.json", text))
    data = config.with_changes({"experimental": True})
    assert list(data) == list(json.loads(text)) + ["experimental"]
    rendered = json.loads(config.render(data))
    for key, value in json.loads(text).items():
        assert rendered[key] == value
        assert type(rendered[key]) is type(value)
    assert rendered["experimental"] is True


def test_existing_key_changes_in_place():
    data = dc.apply_changes({"a": 1, "experimental": False, "z": 2}, {"experimental": True})
    assert list(data.items()) == [("a", 1), ("experimental", True), ("z", 2)]


def test_removal_drops_only_that_key():
    data = dc.apply_changes({"a": 1, "experimental": True, "z": 2}, {}, ["experimental"])
    assert data == {"a": 1, "z": 2}
    assert list(data) == ["a", "z"]


def test_render_keeps_the_original_text_when_nothing_changes(tmp_path):
    text = '{ "experimental":true,   "debug": false }'
    config = dc.read(write(tmp_path / "daemon.json", text))
    assert config.render(config.with_changes({"experimental": True})) == text


@pytest.mark.parametrize("text, indent", [('{\n    "a": 1\n}', 4), ('{\n  "a": 1\n}', 2), ('{\n\t"a": 1\n}', "\t"), ('{"a": 1}', 2)])
def test_render_follows_the_file_indentation(tmp_path, text, indent):
    config = dc.read(write(tmp_path / "daemon.json", text))
    assert config.indent == indent
    rendered = config.render(config.with_changes({"experimental": True}))
    assert rendered.endswith("}\n")
    if indent != 2 or "\n" in text:
        assert f'\n{indent if isinstance(indent, str) else " " * indent}"experimental": true' in rendered


def test_render_has_a_trailing_newline_and_keeps_unicode():
    assert dc.render({"label": "ünïcode"}) == '{\n  "label": "ünïcode"\n}\n'


def test_write_atomic_creates_directory_and_file(tmp_path):
    target = tmp_path / "etc" / "docker" / "daemon.json"
    dc.write_atomic(str(target), '{"experimental": true}\n')
    assert target.read_text() == '{"experimental": true}\n'
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o755
    assert [p.name for p in target.parent.iterdir()] == ["daemon.json"]


def test_write_atomic_keeps_mode_and_replaces_the_inode(tmp_path):
    target = tmp_path / "daemon.json"
    write(target, "{}", mode=0o600)
    inode = target.stat().st_ino
    dc.write_atomic(str(target), '{"a": 1}\n')
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert target.stat().st_ino != inode  # renamed over, never truncated in place
    assert target.read_text() == '{"a": 1}\n'


def test_symlinked_path_writes_the_target_and_keeps_the_link(tmp_path):
    real = tmp_path / "real" / "daemon.json"
    real.parent.mkdir()
    write(real, '{"debug": true}\n')
    link = tmp_path / "daemon.json"
    link.symlink_to(real)
    config = dc.read(str(link))
    assert config.real_path == str(real)
    assert config.data == {"debug": True}
    dc.write_atomic(config.real_path, config.render(config.with_changes({"experimental": True})))
    assert link.is_symlink()
    assert json.loads(real.read_text()) == {"debug": True, "experimental": True}


def test_restore_puts_back_the_exact_text_or_removes_a_new_file(tmp_path):
    existing = tmp_path / "daemon.json"
    write(existing, '{ "debug":true }')
    config = dc.read(str(existing))
    dc.write_atomic(config.real_path, '{"experimental": true}\n')
    dc.restore(config)
    assert existing.read_text() == '{ "debug":true }'

    missing = tmp_path / "new" / "daemon.json"
    config = dc.read(str(missing))
    dc.write_atomic(config.real_path, '{"experimental": true}\n')
    dc.restore(config)
    assert not missing.exists()


@pytest.mark.parametrize(
    "state, live_restore, updates, removals",
    [
        ("enabled", "keep", {"experimental": True}, []),
        ("enabled", True, {"experimental": True, "live-restore": True}, []),
        ("enabled", False, {"experimental": True, "live-restore": False}, []),
        ("disabled", "keep", {}, ["experimental"]),
    ],
)
def test_wanted_changes(state, live_restore, updates, removals):
    assert dc.wanted_changes(state, live_restore) == (updates, removals)


@pytest.mark.parametrize("state, live_restore", [("on", "keep"), ("enabled", "yes")])
def test_wanted_changes_refuses_unknown_values(state, live_restore):
    with pytest.raises(ValueError):
        dc.wanted_changes(state, live_restore)
