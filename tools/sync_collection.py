# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Mirror the checkout into the collection copy the tools run against (ansible-test needs a path ending in
ansible_collections/fleet/checkpoint).

Usage: python tools/sync_collection.py SOURCE DEST   (run by `make collection`)

The files copied are the ones git sees in SOURCE: tracked and untracked, less what .gitignore ignores. Files in DEST
that SOURCE no longer has are removed, except ignored ones (ansible-test's tests/output, caches), DEST's own .git and
what `make collection` generates there (docs/docsite/rst: tools/docsite_rst.py writes only what changed), so that a
refresh while a gate reads the copy takes nothing from under it.
DEST gets a git repository of its own, so that ansible-test lists its files and not the ignored ones of the checkout.
Only the standard library and git: the fast gates run without rsync, root or apt.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys


def git(cwd: str, *args: str, stdin: bytes | None = None, ok: tuple[int, ...] = (0,)) -> bytes:
    proc = subprocess.run(["git", "-C", cwd, *args], input=stdin, capture_output=True, check=False)
    if proc.returncode not in ok:
        sys.exit(f"sync_collection: git {' '.join(args)} failed in {cwd}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def source_files(src: str) -> set[str]:
    """Relative paths of the files git would take from src (tracked or untracked, not ignored, present on disk)."""
    listed = git(src, "ls-files", "-z", "--cached", "--others", "--exclude-standard").decode().split("\0")
    return {path for path in listed if path and os.path.lexists(os.path.join(src, path))}


def same(src_path: str, dest_path: str) -> bool:
    try:
        a, b = os.lstat(src_path), os.lstat(dest_path)
    except FileNotFoundError:
        return False
    if stat.S_ISLNK(a.st_mode) or stat.S_ISLNK(b.st_mode):
        return stat.S_ISLNK(a.st_mode) and stat.S_ISLNK(b.st_mode) and os.readlink(src_path) == os.readlink(dest_path)
    return (stat.S_ISREG(b.st_mode) and a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime)
            and stat.S_IMODE(a.st_mode) == stat.S_IMODE(b.st_mode))


def remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def copy(src_path: str, dest_path: str) -> None:
    parent = os.path.dirname(dest_path)
    if os.path.lexists(parent) and not os.path.isdir(parent):
        remove(parent)
    os.makedirs(parent, exist_ok=True)
    if os.path.isdir(dest_path) and not os.path.islink(dest_path):
        shutil.rmtree(dest_path)
    if os.path.islink(src_path):
        if os.path.lexists(dest_path):
            os.unlink(dest_path)
        os.symlink(os.readlink(src_path), dest_path)
    else:
        shutil.copy2(src_path, dest_path)


GENERATED = ("docs/docsite/rst/",)  # written into the copy by tools/docsite_rst.py


def stale_paths(dest: str, files: set[str]) -> list[str]:
    """Paths in dest (directories end in /) that the source does not have; a directory is listed, not its contents."""
    dirs = {os.path.dirname(path) for path in files}
    dirs |= {parent for d in list(dirs) for parent in _parents(d)}
    dirs |= {parent for g in GENERATED for parent in _parents(g.rstrip("/"))}  # walked into, not taken away
    stale = []
    for root, subdirs, names in os.walk(dest):
        rel_root = os.path.relpath(root, dest)
        rel_root = "" if rel_root == "." else rel_root + "/"
        for name in list(subdirs):
            rel = rel_root + name
            if rel == ".git" or rel + "/" in GENERATED or rel not in dirs:
                subdirs.remove(name)
                if rel != ".git" and rel + "/" not in GENERATED:
                    stale.append(rel + "/")
        stale.extend(rel_root + name for name in names if rel_root + name not in files)
    return stale


def _parents(path: str) -> list[str]:
    out = []
    while path:
        out.append(path)
        path = os.path.dirname(path)
    return out


def sync(src: str, dest: str) -> tuple[int, int]:
    files = source_files(src)
    os.makedirs(dest, exist_ok=True)
    stale = stale_paths(dest, files)
    removed = 0
    if stale:
        # Kept like rsync's `--filter=':- .gitignore'` keeps them: what the checkout's .gitignore ignores.
        ignored = set(git(src, "check-ignore", "--no-index", "-z", "--stdin",
                          stdin="\0".join(stale).encode() + b"\0", ok=(0, 1)).decode().split("\0"))
        for rel in stale:
            if rel not in ignored:
                remove(os.path.join(dest, rel.rstrip("/")))
                removed += 1
    copied = 0
    for rel in sorted(files):
        src_path, dest_path = os.path.join(src, rel), os.path.join(dest, rel)
        if not same(src_path, dest_path):
            copy(src_path, dest_path)
            copied += 1
    if not os.path.isdir(os.path.join(dest, ".git")):
        git(dest, "init", "-q")
    return copied, removed


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("Usage: python tools/sync_collection.py SOURCE DEST", file=sys.stderr)
        return 2
    src, dest = os.path.abspath(argv[1]), os.path.abspath(argv[2])
    if dest == src:
        print("sync_collection: SOURCE and DEST are the same directory", file=sys.stderr)
        return 2
    copied, removed = sync(src, dest)
    if copied or removed:
        print(f"[collection] {dest}: {copied} files copied, {removed} removed", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
