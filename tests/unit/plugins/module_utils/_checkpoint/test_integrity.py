"""A checkpoint's files compared with what was recorded at dump time (size and sha256 per file)."""

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.integrity import damage as _damage
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.integrity import images as _images
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import store


def _checkpoint(tmp_path):
    (tmp_path / "pages-1.img").write_bytes(b"p" * 4096)
    (tmp_path / "core-1.img").write_bytes(b"c" * 100)
    (tmp_path / store.METADATA_NAME).write_text("{}")
    return {"files": _images(str(tmp_path))}


def test_an_untouched_checkpoint_has_no_damage(tmp_path):
    metadata = _checkpoint(tmp_path)
    assert set(metadata["files"]) == {"pages-1.img", "core-1.img"}
    assert _damage(metadata, _images(str(tmp_path))) == []


def test_truncation_corruption_loss_and_additions_are_all_named(tmp_path):
    metadata = _checkpoint(tmp_path)
    with open(tmp_path / "pages-1.img", "r+b") as handle:
        handle.truncate(1000)
    problems = _damage(metadata, _images(str(tmp_path)))
    assert problems == ["pages-1.img has 1000 bytes, 4096 at dump time (truncated?)"]

    (tmp_path / "pages-1.img").write_bytes(b"q" + b"p" * 4095)
    assert _damage(metadata, _images(str(tmp_path))) == ["pages-1.img does not match its sha256 from dump time (corrupted)"]

    (tmp_path / "core-1.img").unlink()
    (tmp_path / "extra.img").write_bytes(b"x")
    problems = _damage(metadata, _images(str(tmp_path)))
    assert "core-1.img is missing" in problems and "extra.img was added after the dump" in problems


def test_a_checkpoint_without_recorded_files_is_not_judged(tmp_path):
    _checkpoint(tmp_path)
    assert _damage({}, _images(str(tmp_path))) == []
    assert _damage({"files": None}, _images(str(tmp_path))) == []
