#!/usr/bin/env bash
# ansible-test bootstraps pip in its virtualenvs with a get-pip script downloaded from a site this machine
# cannot reach. Give it what it would download: the wheels it asks for (from PyPI: pip, and for older
# ansible-test versions also setuptools and wheel) and a small get_pip_<version>.py in its cache (the
# user's own ~/.ansible/test/cache) that installs them from those wheels. Run it with the python of each venv
# whose ansible-test is used: the versions are read from that ansible-test's source.
set -euo pipefail
venv_python="$1"
mapfile -t packages < <("$venv_python" - <<'PY'
import re, pathlib, ansible_test
src = (pathlib.Path(ansible_test.__file__).parent / "_internal" / "python_requirements.py").read_text()
for name in ("pip", "setuptools", "wheel"):
    found = re.search(name + r"='([0-9.]+)'", src)
    if found:
        print(f"{name}=={found.group(1)}")
PY
)
[[ "${packages[0]:-}" == pip==* ]] || { echo "[setup] ERROR: no pip version found in $venv_python's ansible-test" >&2; exit 1; }
version="${packages[0]#pip==}"
cache="$HOME/.ansible/test/cache"
script="$cache/get_pip_${version//./_}.py"
have_all=1
for package in "${packages[@]}"; do
  compgen -G "$cache/${package%%==*}-${package#*==}-*.whl" >/dev/null || have_all=0
done
[ -f "$script" ] && [ $have_all = 1 ] && exit 0
mkdir -p "$cache"
"$venv_python" -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: -d "$cache" \
  "${packages[@]}" 2>&1 | { grep -v '^WARNING: Location' || true; }
cat >"$script" <<PY
# Written by tools/ansible-test-pip-shim.sh: installs pip $version (and what else is asked: ${packages[*]})
# from the wheels beside this file.
import glob, os, sys
cache = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, glob.glob(os.path.join(cache, "pip-$version-*.whl"))[0])
from pip._internal.cli.main import main
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--no-index", "--find-links", cache] + args))
PY
echo "[setup] ansible-test pip bootstrap: $script (${packages[*]})" >&2
