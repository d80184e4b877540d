# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import (
    ArchiveError,
    check_member,
    file_inventory,
)
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.manifest import ManifestError, build
from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.archive import (
    Tarball,
    archive_context,
    archive_name,
    is_zstd,
    read_manifest,
    verify_stream,
    write_archive,
)

INSPECT = {
    "Id": "ab" * 32,
    "Name": "/web",
    "Image": "sha256:" + "c" * 64,
    "Config": {"Image": "busybox"},
    "HostConfig": {"RestartPolicy": {"Name": "always"}},
}
VERSIONS = {"criu": "4.2.1", "docker": "26.1.5", "kernel": "6.18.0"}
ZSTD = shutil.which("zstd")


def no_run(argv):
    raise AssertionError(f"nothing should be run, got {argv}")


def real_run(argv):
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def checkpoint(tmp_path):
    cp = tmp_path / "cp"
    (cp / "sub").mkdir(parents=True)
    (cp / "pages-1.img").write_bytes(bytes(range(256)) * 64)
    (cp / "core-1.img").write_bytes(b"core")
    (cp / "sub" / "descriptors.json").write_bytes(b'{"a": 1}')
    (cp / "empty.img").write_bytes(b"")
    return cp


@pytest.fixture
def manifest(checkpoint):
    return build("pre-reboot", INSPECT, file_inventory(str(checkpoint)), VERSIONS, "api", 1700000000.0)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_write_archive_is_root_only_with_manifest_first(tmp_path, checkpoint, manifest, compression):
    destination = tmp_path / "out" / archive_name("web", "pre-reboot", compression)
    digest = write_archive(str(checkpoint), manifest, str(destination), compression, no_run, None)
    assert digest == sha256(destination)
    assert mode(destination) == 0o600
    assert mode(destination.parent) == 0o700
    assert os.listdir(destination.parent) == [destination.name]  # no temporary directory left behind
    with tarfile.open(destination, "r:*") as tar:
        members = tar.getmembers()
        assert members[0].name == "manifest.json"
        assert json.loads(tar.extractfile(members[0]).read()) == manifest
        assert [member.name for member in members[1:]] == sorted(manifest["files"])
        assert (members[0].mode, members[0].uid, members[0].gid, members[0].mtime) == (0o600, 0, 0, 0)
        for member in members[1:]:
            assert (member.mode, member.uid, member.gid, member.uname, member.gname) == (0o600, 0, 0, "root", "root")
        assert all(member.isfile() for member in members)
        assert tar.extractfile("sub/descriptors.json").read() == b'{"a": 1}'
    if compression == "gzip":
        with gzip.open(destination, "rb") as handle:
            assert tarfile.open(fileobj=io.BytesIO(handle.read())).getnames()[0] == "manifest.json"
    else:
        assert destination.read_bytes()[:2] != b"\x1f\x8b"
        with tarfile.open(destination, "r:") as tar:  # plain tar, no compression
            assert tar.getnames()[0] == "manifest.json"


def test_write_archive_replaces_an_existing_archive_atomically(tmp_path, checkpoint, manifest):
    destination = tmp_path / "web.tar"
    destination.write_bytes(b"old archive")
    os.chmod(destination, 0o644)
    write_archive(str(checkpoint), manifest, str(destination), "none", no_run, None)
    assert read_manifest(str(destination)) == manifest
    assert mode(destination) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["cp", "web.tar"]


def test_write_archive_fails_cleanly_when_a_listed_file_is_missing(tmp_path, checkpoint, manifest):
    os.unlink(checkpoint / "core-1.img")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(OSError):
        write_archive(str(checkpoint), manifest, str(out / "web.tar"), "none", no_run, None)
    assert os.listdir(out) == []


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_read_manifest_round_trip(tmp_path, checkpoint, manifest, compression):
    destination = tmp_path / archive_name("web", "pre-reboot", compression)
    write_archive(str(checkpoint), manifest, str(destination), compression, no_run, None)
    with Tarball(str(destination), no_run, None) as tar_path:
        assert tar_path == str(destination)  # not zstd: read in place, nothing run
        assert read_manifest(tar_path) == manifest
        assert verify_stream(tar_path, manifest) == []


def add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_read_manifest_refuses_an_archive_not_starting_with_the_manifest(tmp_path, manifest):
    path = tmp_path / "other.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "pages-1.img", b"p")
        add(tar, "manifest.json", json.dumps(manifest).encode())
    with pytest.raises(ArchiveError, match="does not start with manifest.json"):
        read_manifest(str(path))


def test_read_manifest_refuses_an_empty_archive_and_a_manifest_directory(tmp_path):
    empty = tmp_path / "empty.tar"
    with tarfile.open(empty, "w"):
        pass
    with pytest.raises(ArchiveError, match="does not start with manifest.json"):
        read_manifest(str(empty))
    directory = tmp_path / "dir.tar"
    with tarfile.open(directory, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    with pytest.raises(ArchiveError, match="does not start with manifest.json"):
        read_manifest(str(directory))


def test_read_manifest_refuses_an_unsafe_first_entry(tmp_path):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        tar.addfile(info)
    with pytest.raises(ArchiveError, match="is a link"):
        read_manifest(str(path))


def test_read_manifest_refuses_bad_json_and_bad_manifests(tmp_path, manifest):
    bad_json = tmp_path / "bad.tar"
    with tarfile.open(bad_json, "w") as tar:
        add(tar, "manifest.json", b"{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        read_manifest(str(bad_json))
    wrong = copy.deepcopy(manifest)
    wrong["format"] = "something/else"
    bad_format = tmp_path / "format.tar"
    with tarfile.open(bad_format, "w") as tar:
        add(tar, "manifest.json", json.dumps(wrong).encode())
    with pytest.raises(ManifestError, match="not a fleet.checkpoint archive"):
        read_manifest(str(bad_format))


def test_read_manifest_of_something_that_is_not_a_tar(tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"definitely not a tar archive" * 30)
    with pytest.raises(ArchiveError, match="not a readable tar archive"):
        read_manifest(str(junk))


def test_verify_stream_finds_corrupted_truncated_missing_and_extra_files(tmp_path, checkpoint, manifest):
    path = tmp_path / "tampered.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "manifest.json", json.dumps(manifest).encode())
        add(tar, "pages-1.img", b"X" * manifest["files"]["pages-1.img"]["size"])  # same size, other bytes
        add(tar, "core-1.img", b"cor")  # truncated
        add(tar, "extra.img", b"e")
        add(tar, "empty.img", b"")
        # sub/descriptors.json left out
    problems = verify_stream(str(path), manifest)
    assert problems == [
        "pages-1.img does not match its sha256 (corrupted)",
        "core-1.img has 3 bytes, the manifest says 4 (truncated?)",
        "extra.img is not in the manifest",
        "sub/descriptors.json is missing",
    ]


def test_verify_stream_refuses_unsafe_entries(tmp_path, manifest):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        add(tar, "manifest.json", json.dumps(manifest).encode())
        add(tar, "../../etc/cron.d/x", b"x")
    with pytest.raises(ArchiveError, match="climbs out"):
        verify_stream(str(path), manifest)


def test_tarball_of_a_missing_archive(tmp_path):
    with pytest.raises(ArchiveError, match="does not exist"):
        with Tarball(str(tmp_path / "nope.tar.zst"), no_run, ZSTD):
            pass
    with pytest.raises(ArchiveError, match="does not exist"):
        with Tarball(str(tmp_path), no_run, ZSTD):
            pass


def test_zstd_archive_without_zstd_is_refused(tmp_path, checkpoint, manifest):
    out = tmp_path / "out"
    with pytest.raises(ArchiveError, match="zstd"):
        write_archive(str(checkpoint), manifest, str(out / "web.tar.zst"), "zstd", no_run, None)
    assert not out.exists()
    fake = tmp_path / "web.tar.zst"
    fake.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    assert is_zstd(str(fake))
    with pytest.raises(ArchiveError, match="zstd is not installed"):
        with Tarball(str(fake), no_run, None):
            pass


def test_tarball_reports_a_failed_decompression_and_cleans_up(tmp_path):
    fake = tmp_path / "web.tar.zst"
    fake.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # zstd runs through a pipe (tar_limits), not run_command: its own message is carried.
    with pytest.raises(ArchiveError, match=r"web.tar.zst: could not be decompressed: .*web.tar.zst"):
        with Tarball(str(fake), no_run, ZSTD, scratch=str(scratch)):
            pass
    assert not scratch.exists()


def test_tarball_removes_its_temporary_directory_when_decompression_fails(tmp_path):
    fake = tmp_path / "web.tar.zst"
    fake.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 20)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with pytest.raises(ArchiveError):
        with Tarball(str(fake), lambda argv: (1, "", "bad"), "/usr/bin/zstd", scratch=str(scratch)):
            pass
    assert not scratch.exists()  # our directory gone, and the scratch base with it once empty


@pytest.mark.skipif(ZSTD is None, reason="zstd is not installed")
def test_zstd_round_trip(tmp_path, checkpoint, manifest):
    destination = tmp_path / "out" / archive_name("web", "pre-reboot", "zstd")
    digest = write_archive(str(checkpoint), manifest, str(destination), "zstd", real_run, ZSTD)
    assert digest == sha256(destination)
    assert mode(destination) == 0o600
    assert is_zstd(str(destination))
    assert os.listdir(destination.parent) == [destination.name]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    with Tarball(str(destination), real_run, ZSTD, scratch=str(scratch)) as tar_path:
        assert tar_path != str(destination)
        assert os.path.dirname(os.path.dirname(tar_path)) == str(scratch)
        assert mode(os.path.dirname(tar_path)) == 0o700
        assert read_manifest(tar_path) == manifest
        assert verify_stream(tar_path, manifest) == []
    assert not scratch.exists()  # our directory gone, and the scratch base with it once empty


def test_zstd_failure_is_reported_and_leaves_nothing(tmp_path, checkpoint, manifest):
    out = tmp_path / "out"

    def failing_run(argv):
        return 1, "", "zstd: out of space\n"

    with pytest.raises(ArchiveError, match="zstd failed: zstd: out of space"):
        write_archive(str(checkpoint), manifest, str(out / "web.tar.zst"), "zstd", failing_run, "/usr/bin/zstd")
    assert os.listdir(out) == []


@pytest.mark.parametrize("compression, name", [("zstd", "web-pre-reboot.tar.zst"), ("gzip", "web-pre-reboot.tar.gz"),
                                               ("none", "web-pre-reboot.tar")])
def test_archive_name(compression, name):
    assert archive_name("web", "pre-reboot", compression) == name


def test_archive_name_refuses_an_unknown_compression():
    with pytest.raises(KeyError):
        archive_name("web", "pre-reboot", "bzip2")


def test_an_encrypted_archive_round_trips_and_refuses_the_wrong_key_or_no_key(tmp_path, monkeypatch):
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import crypto
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import archive as tr
    monkeypatch.setattr(crypto, "SCRYPT_LOG2N", 10)
    source = tmp_path / "cp"
    source.mkdir()
    (source / "pages-1.img").write_bytes(b"secret-memory" * 1000)
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.files import file_inventory
    files = file_inventory(str(source))
    manifest = {"format": "fleet.checkpoint/archive", "files": files}
    destination = tmp_path / "out" / tr.archive_name("web", "cp", "gzip", encrypted=True)
    assert destination.name == "web-cp.tar.gz.enc"
    key = b"correct horse battery staple"
    tr.write_archive(str(source), manifest, str(destination), "gzip", None, None, secret=key)
    assert crypto.is_encrypted(str(destination)) and (destination.stat().st_mode & 0o777) == 0o600
    assert b"secret-memory" not in destination.read_bytes()
    with tr.Tarball(str(destination), None, None, str(tmp_path), secret=key) as tar_path:
        import tarfile
        with tarfile.open(tar_path) as tar:
            assert "pages-1.img" in tar.getnames()
    for secret, fragment in ((b"wrong horse battery staple", "could not be decrypted"), (None, "is encrypted")):
        with pytest.raises(tr.ArchiveError, match=fragment):
            with tr.Tarball(str(destination), None, None, str(tmp_path), secret=secret):
                pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cp", "out"]  # no decrypted leftovers
    plain = tmp_path / "out" / "web-cp.tar.gz"
    tr.write_archive(str(source), manifest, str(plain), "gzip", None, None)
    with pytest.raises(tr.ArchiveError, match="is not encrypted"):
        with tr.Tarball(str(plain), None, None, str(tmp_path), secret=key):
            pass


def test_an_encrypted_archive_has_no_plaintext_beside_it_at_any_time(tmp_path, checkpoint, manifest, monkeypatch):
    """Issue 20, finding 3: the plain tar (and the .tar.zst) used to be made in a temporary directory beside the
    destination, then encrypted: on shared or backed-up storage the memory landed there in clear. It is made in the
    local scratch now; beside the destination only ciphertext ever appears."""
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import archive

    shared, scratch = tmp_path / "shared", tmp_path / "scratch"
    seen = []
    real = archive.encrypt_file

    def watching(source, destination, secret, **kwargs):
        seen.append((source, sorted(str(path.relative_to(shared)) for path in shared.rglob("*") if path.is_file())))
        return real(source, destination, secret, **kwargs)
    monkeypatch.setattr(archive, "encrypt_file", watching)
    write_archive(str(checkpoint), manifest, str(shared / "web-cp.tar.zst.enc"), "none", no_run, None,
                  secret=b"k" * 32, context=archive_context("web", "cp"), scratch=str(scratch))
    (source, beside), = seen
    assert source.startswith(str(scratch)) and beside == []
    assert sorted(path.name for path in shared.iterdir()) == ["web-cp.tar.zst.enc"]
    assert not scratch.exists()  # removed once done, base included


def test_an_encrypted_archive_is_bound_to_its_container_and_checkpoint(tmp_path, checkpoint, manifest):
    """Issue 20, finding 4: container A's archive renamed to B's used to import without error."""
    secret = b"k" * 32
    archive_path = tmp_path / "web-cp.tar.enc"
    write_archive(str(checkpoint), manifest, str(archive_path), "none", no_run, None, secret=secret,
                  context=archive_context("web", "cp"))
    with Tarball(str(archive_path), no_run, None, secret=secret, bound_to=("web", "cp")) as tar_path:
        assert read_manifest(tar_path)["checkpoint"] == manifest["checkpoint"]
    for other in (("db", "cp"), ("web", "older")):
        with pytest.raises(ArchiveError, match=r"was exported for container 'web', checkpoint 'cp', not for"):
            with Tarball(str(archive_path), no_run, None, secret=secret, bound_to=other):
                pass
        with Tarball(str(archive_path), no_run, None, secret=secret, bound_to=other, force=True) as tar_path:
            assert read_manifest(tar_path)


def test_a_zstd_archive_decompresses_only_as_far_as_its_manifest_accounts_for(tmp_path, manifest):
    """Issue 20, finding 2: zstd -d used to write the whole output to disk before the manifest was read (33 KB became
    1 GiB). A tar whose manifest lists one small file but that carries 64 MiB more is stopped at the manifest's size
    plus tar overhead, and nothing is left."""
    small = {"pages-1.img": {"size": 5, "sha256": hashlib.sha256(b"pages").hexdigest()}}
    bomb = dict(manifest, files=small, size=5)
    tar_path = tmp_path / "bomb.tar"
    with tarfile.open(tar_path, "w") as tar:
        add(tar, "manifest.json", json.dumps(bomb).encode())
        add(tar, "pages-1.img", b"pages")
        add(tar, "zeros.img", bytes(64 * 1024 * 1024))
    subprocess.run([ZSTD, "-q", "-19", str(tar_path), "-o", str(tmp_path / "bomb.tar.zst")], check=True)
    assert (tmp_path / "bomb.tar.zst").stat().st_size < 1024 * 1024
    scratch = tmp_path / "scratch"
    with pytest.raises(ArchiveError, match="decompresses to more than the .* bytes its manifest accounts for"):
        with Tarball(str(tmp_path / "bomb.tar.zst"), no_run, ZSTD, scratch=str(scratch)):
            pass
    assert not scratch.exists()


def test_an_oversized_extended_header_is_refused_before_tarfile_reads_it(tmp_path):
    """Issue 20, finding 2: a pax header is read whole into memory by tarfile (400 KB of gzip took 430 MiB)."""
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 2 * 1024 * 1024
    raw = io.BytesIO()
    raw.write(header.tobuf(format=tarfile.USTAR_FORMAT))
    raw.write(b"0" * header.size)
    raw.write(bytes(1024))
    path = tmp_path / "pax.tar.gz"
    path.write_bytes(gzip.compress(raw.getvalue()))
    with pytest.raises(ArchiveError, match="extended tar header of 2097152 bytes"):
        with Tarball(str(path), no_run, None):
            pass


def test_a_sparse_entry_is_refused(tmp_path):
    member = tarfile.TarInfo("pages-1.img")
    member.type = tarfile.GNUTYPE_SPARSE
    with pytest.raises(ArchiveError, match="is a sparse entry"):
        check_member(member)


def test_what_export_force_may_overwrite(tmp_path, checkpoint, manifest):
    """Issue 20, finding 9: force overwrote any existing file with the export. Only archives qualify now."""
    from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint.archive import looks_like_an_archive

    write_archive(str(checkpoint), manifest, str(tmp_path / "a.tar"), "none", no_run, None)
    write_archive(str(checkpoint), manifest, str(tmp_path / "a.tar.gz"), "gzip", no_run, None)
    write_archive(str(checkpoint), manifest, str(tmp_path / "a.tar.enc"), "none", no_run, None, secret=b"k" * 32)
    assert all(looks_like_an_archive(str(tmp_path / name)) for name in ("a.tar", "a.tar.gz", "a.tar.enc"))
    (tmp_path / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    assert not looks_like_an_archive(str(tmp_path / "passwd"))
    assert not looks_like_an_archive(str(tmp_path / "missing"))
