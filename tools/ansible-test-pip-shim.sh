#!/usr/bin/env bash
# ansible-test bootstraps pip in its virtualenvs with a get-pip script downloaded from a site this machine
# cannot reach. Give it what it would download: the pip wheel it asks for (from PyPI) and a small
# get_pip_<version>.py in its cache that installs pip from that wheel.
set -euo pipefail
venv_python="$1"
version="$("$venv_python" - <<'PY'
import re, pathlib, ansible_test
src = pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py"
print(re.search(r"pip='([0-9.]+)'", src.read_text()).group(1))
PY
)"
cache="$HOME/.ansible/test/cache"
script="$cache/get_pip_${version//./_}.py"
wheel="$cache/pip-$version-py3-none-any.whl"
[ -f "$script" ] && [ -f "$wheel" ] && exit 0
mkdir -p "$cache"
"$venv_python" -m pip download -q --no-deps --only-binary :all: -d "$cache" "pip==$version"
cat >"$script" <<PY
# Written by tools/ansible-test-pip-shim.sh: installs pip $version from the wheel beside this file.
import os, sys
wheel = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pip-$version-py3-none-any.whl")
sys.path.insert(0, wheel)
from pip._internal.cli.main import main
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--no-index", "--find-links", os.path.dirname(wheel)] + args))
PY
echo "[setup] ansible-test pip bootstrap: $script" >&2
