# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""CRIU's image files read with CRIU's own reader, crit (Debian's python3-pycriu, installed beside criu by
criu_install; in the criu package itself on older releases): `crit decode -i FILE` prints the image as JSON,
{"magic": "PSTREE", "entries": [...]}, its fields named as in CRIU's images/*.proto (enums by name, numbers as they
are: not --pretty)."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.fleet.checkpoint.plugins.module_utils._host.commands import which

Run = Callable[[List[str]], Tuple[int, str, str]]
Image = Dict[str, Any]

PACKAGE_HINT = "crit, CRIU's image reader (Debian package python3-pycriu; fleet.checkpoint.criu_install installs it)"


class CritError(Exception):
    """crit is missing, or could not read an image (the message says which)."""


def find() -> Optional[str]:
    """crit's path, or None."""
    return which("crit")


# Many images in one run of crit's own library (pycriu.images.load, what `crit decode` calls), with crit's
# interpreter: a checkpoint has about six images per process, and each crit run starts Python and protobuf again.
BATCH = """
import json, sys
from pycriu import images
out = {}
for path in sys.argv[1:]:
    try:
        with open(path, "rb") as handle:
            out[path] = images.load(handle)
    except Exception:
        pass
json.dump(out, sys.stdout, default=str)
"""


def interpreter(crit_path: str) -> Optional[str]:
    """The Python that crit runs with (its #! line), or None."""
    try:
        with open(crit_path, "rb") as handle:
            first = handle.readline(256).decode("utf-8", "replace").strip()
    except OSError:
        return None
    parts = first[2:].split() if first.startswith("#!") else []
    if parts and parts[0].endswith("/env") and len(parts) > 1:
        return shutil.which(parts[1])
    return parts[0] if parts and "python" in os.path.basename(parts[0]) else None


class Reader:
    """Decodes CRIU images with crit, each file once."""

    def __init__(self, run: Run, crit: Optional[str] = None) -> None:
        self._run = run
        self._crit = crit or find()
        self._cache: dict[str, Image] = {}
        if not self._crit:
            raise CritError(f"{PACKAGE_HINT} is not installed on this host")

    def preload(self, paths: list[str]) -> None:
        """Decode `paths` in one run of crit's library; those it could not read are left to entries() (which runs
        crit itself, for its own error message)."""
        python = interpreter(str(self._crit))
        if not python or not paths:
            return
        rc, out, _err = self._run([python, "-c", BATCH, *paths])
        if rc != 0:
            return
        try:
            found = json.loads(out)
        except ValueError:
            return
        for path, image in found.items() if isinstance(found, dict) else []:
            if path in paths and isinstance(image, dict) and isinstance(image.get("entries"), list):
                self._cache[path] = image

    def entries(self, path: str) -> list[dict[str, Any]]:
        """The entries of the image at `path`; CritError when crit cannot read it."""
        if path not in self._cache:
            rc, out, err = self._run([str(self._crit), "decode", "-i", path])
            if rc != 0:
                raise CritError(f"crit cannot read {path}: {' '.join((err or out).split())[-300:]}")
            try:
                image = json.loads(out)
            except ValueError as exc:
                raise CritError(f"crit printed something other than JSON for {path}: {exc}") from exc
            if not isinstance(image, dict) or not isinstance(image.get("entries"), list):
                raise CritError(f"crit's answer for {path} has no entries")
            self._cache[path] = image
        return list(self._cache[path]["entries"])
