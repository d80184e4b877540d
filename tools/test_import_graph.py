# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Self-tests of tools/import_graph.py on tiny collection trees (run by `make import-graph`)."""

from __future__ import annotations

import pytest

import import_graph  # pytest puts this file's directory (tools/) on sys.path

MU = "ansible_collections.ns.coll.plugins.module_utils"


def tree(tmp_path, files):
    (tmp_path / "galaxy.yml").write_text("namespace: ns\nname: coll\nversion: 1.0.0\n")
    for rel, text in {"plugins/module_utils/_pkg/__init__.py": "", **files}.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(tmp_path)


def run(root, capsys):
    status = import_graph.main([root])
    out, err = capsys.readouterr()
    return status, out, err


def test_clean_tree_passes_and_prints_the_graph(tmp_path, capsys):
    root = tree(tmp_path, {
        "plugins/module_utils/_pkg/a.py": f"from {MU}._pkg import b\nfrom {MU}._pkg.c import public\nb.thing()\n",
        "plugins/module_utils/_pkg/b.py": f"import {MU}._pkg.c as c\nfrom . import d\nc.__name__\n",
        "plugins/module_utils/_pkg/c.py": "public = 1\n_private = 2\n",
        "plugins/module_utils/_pkg/d.py": "",
        "plugins/module_utils/_other.py": f"from {MU} import _pkg\n_pkg.a.b\n",
        "plugins/modules/mod.py": f"from {MU}._pkg.a import b\n",
    })
    status, out, err = run(root, capsys)
    assert status == 0, err
    assert "  _pkg.a        -> _pkg.b, _pkg.c\n" in out
    assert "  _pkg.b        -> _pkg.c, _pkg.d\n" in out
    assert "  _other        -> _pkg\n" in out
    assert "  modules.mod -> _pkg.a\n" in out
    assert "import-graph: OK" in out


def test_cycle_is_caught_with_its_path(tmp_path, capsys):
    root = tree(tmp_path, {
        "plugins/module_utils/_pkg/a.py": f"from {MU}._pkg import b\n",
        "plugins/module_utils/_pkg/b.py": f"from {MU}._pkg.c import x\n",
        "plugins/module_utils/_pkg/c.py": f"import {MU}._pkg.a\nx = 1\n",
    })
    status, _out, err = run(root, capsys)
    assert status == 1
    assert "cycle: _pkg.a -> _pkg.b -> _pkg.c -> _pkg.a" in err


def test_type_checking_imports_make_no_cycle(tmp_path, capsys):
    root = tree(tmp_path, {
        "plugins/module_utils/_pkg/a.py": f"from {MU}._pkg.b import B\n",
        "plugins/module_utils/_pkg/b.py": (f"from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                           f"    from {MU}._pkg.a import A\nB = 1\n"),
    })
    status, out, err = run(root, capsys)
    assert status == 0, err
    assert "(types only: _pkg.a)" in out


@pytest.mark.parametrize("importer", [
    f"from {MU}._pkg.c import _private\n",
    f"from {MU}._pkg import c\nc._private\n",
    f"import {MU}._pkg.c as mod\nmod._private()\n",
    f"import {MU}._pkg.c\n{MU}._pkg.c._private\n",
    f"from {MU} import _pkg\n_pkg.c._private\n",
    "from .c import _private\n",
])
def test_private_name_of_another_module_is_caught(tmp_path, capsys, importer):
    root = tree(tmp_path, {
        "plugins/module_utils/_pkg/a.py": importer,
        "plugins/module_utils/_pkg/c.py": "_private = 1\n",
    })
    status, _out, err = run(root, capsys)
    assert status == 1
    assert "_pkg/a.py:" in err and "private name '_private' of _pkg.c" in err


def test_module_importing_a_private_name_is_caught(tmp_path, capsys):
    root = tree(tmp_path, {
        "plugins/module_utils/_pkg/c.py": "_private = 1\n",
        "plugins/modules/mod.py": f"from {MU}._pkg.c import _private\n",
    })
    status, _out, err = run(root, capsys)
    assert status == 1
    assert "plugins/modules/mod.py:1: imports private name '_private' of _pkg.c" in err


def test_self_import_and_own_private_names_are_fine(tmp_path, capsys):
    root = tree(tmp_path, {
        "plugins/module_utils/_pkg/c.py": "_private = 1\n\n\ndef f():\n    return _private\n",
    })
    status, _out, err = run(root, capsys)
    assert status == 0, err


def test_a_lower_layer_importing_the_checkpoint_layer_is_caught(tmp_path, capsys):
    root = tree(tmp_path, {
        "plugins/module_utils/_checkpoint/__init__.py": "",
        "plugins/module_utils/_checkpoint/store.py": f"from {MU}._host import files\n",
        "plugins/module_utils/_host/__init__.py": "",
        "plugins/module_utils/_host/files.py": "",
        "plugins/module_utils/_host/manifest.py": f"from {MU}._checkpoint.store import x\n",
    })
    status, _out, err = run(root, capsys)
    assert status == 1
    assert "_host.manifest imports _checkpoint.store" in err
    assert "_checkpoint.store imports" not in err  # the top layer may import the ones below
