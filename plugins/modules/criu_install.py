#!/usr/bin/python
# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: criu_install
short_description: Install a CRIU that really works on the host's kernel, and prove it
version_added: 0.1.0
description:
  - Installs CRIU with the host's package manager (apt on Debian/Ubuntu, dnf or yum on RHEL/Fedora, zypper on SUSE)
    at O(min_version) or newer.
  - Knows which CRIU releases cannot work on the running kernel (for example Linux 6.13 and later need CRIU 4.1 or
    newer for the vDSO change); the effective minimum is the higher of O(min_version) and that kernel floor. When the
    package sources only offer an older CRIU, the module fails before installing anything and says which source to
    configure.
  - Verifies on every run, in check mode too, that C(criu --version) answers and C(criu check) passes (and, when asked,
    C(criu check --feature NAME)). A failing check fails the module with the kernel, the CRIU version, CRIU's failing
    line and the fix; a CRIU installed by this run is removed again, so no half-installed state is left.
  - Proves CRIU works with a self-test, because C(criu check) passing is not enough (CRIU 4.1.1 passes it on kernel 6.18
    yet cannot dump a process holding a TCP socket). Small throw-away processes, each holding one kind of resource
    (none, a pipe, an open file, a child process, unix sockets, a listening TCP socket), are dumped and restored in a
    private temporary directory and checked to have resumed; RV(capabilities) tells which kinds work. The result is
    cached on the host (C(/var/lib/fleet-checkpoint/criu-selftest.json), root-only) and the test runs again only when
    CRIU or the kernel changed, or when O(self_test=always).
  - O(apt_source) adds one apt source pinned so that only the named packages can come from it (for example CRIU from
    Debian testing on a Debian stable host); every other package keeps coming from the host's release.
author:
  - fleet.checkpoint maintainers (@fleet-checkpoint)
attributes:
  check_mode:
    description:
      - Reports what would be installed (a new O(apt_source) is read by apt in a private directory, the host's apt
        state untouched); runs C(criu check) on an installed CRIU and uses a cached self-test.
    support: full
  diff_mode:
    description: Nothing to compare.
    support: none
  platform:
    description: Linux hosts with apt, dnf/yum or zypper.
    support: full
    platforms: posix
options:
  state:
    description:
      - V(present) installs CRIU when it is missing or older than the effective minimum; V(latest) also upgrades it to the
        newest version the sources offer; V(absent) removes CRIU's own packages (criu and its libcompel, pycriu and libcriu
        packages; shared libraries stay) and the source, pin and key files this module wrote.
    type: str
    choices: [present, latest, absent]
    default: present
  min_version:
    description: The oldest CRIU acceptable. The kernel floor may raise it (see RV(min_version_reason)).
    type: str
    default: "2.0"
  apt_source:
    description:
      - An apt source for CRIU on Debian/Ubuntu, pinned to the listed packages only.
      - Pinning matches the suite by codename or archive name; a flat repository, or a suite that is the host's own
        codename (the PPA), is pinned by the repository's host name instead.
    type: dict
    suboptions:
      uri:
        description: The repository URL.
        type: str
        default: http://deb.debian.org/debian
      preset:
        description:
          - A ready-made source that CRIU users use; fills O(apt_source.uri), O(apt_source.suite) and
            O(apt_source.key_url) for this host's release.
          - V(ubuntu_ppa) is the CRIU PPA (C(ppa:criu/ppa)) on Ubuntu hosts; V(obs) is the openSUSE Build Service
            C(devel:tools:criu) repository for this Debian or Ubuntu release.
        type: str
        choices: [ubuntu_ppa, obs]
      suite:
        description:
          - The suite (a codename like V(forky) or an archive name like V(testing)), or V(/) for a flat repository.
          - Required unless O(apt_source.preset) is given.
        type: str
      key_url:
        description:
          - URL of the source's signing key (armored or binary), C(https://) or a C(file://) on the host (not plain
            C(http://)). It is downloaded to
            C(/etc/apt/keyrings/fleet-checkpoint-criu.asc) (or C(.gpg)) and named in the source's C(Signed-By).
        type: str
      key_fingerprint:
        description:
          - The fingerprint the downloaded key must have (40 hex digits, spaces and C(0x) allowed); a key with another
            one is refused and nothing is changed. V(ubuntu_ppa) sets the PPA's own.
        type: str
      components:
        description: Components of the suite.
        type: list
        elements: str
        default: [main]
      packages:
        description: The only packages that may come from this source (CRIU and the libraries it needs).
        type: list
        elements: str
        default: [criu]
      signed_by:
        description: Path of the keyring that signs the source, when it is not one of the host's usual keys.
        type: path
      priority:
        description: apt pin priority of those packages from this source.
        type: int
        default: 990
  update_cache:
    description: Refresh the package lists before looking for a CRIU to install.
    type: bool
    default: true
  features:
    description: CRIU features that must be supported (C(criu check --feature NAME)), for example V(get_rseq_conf).
    type: list
    elements: str
    default: []
  crit:
    description:
      - Also install C(crit), CRIU's image reader (C(python3-pycriu) on Debian and Ubuntu, of CRIU's own version
        where the sources have it; C(crit) on Red Hat; C(python3-criu) on SUSE), which
        M(fleet.checkpoint.docker_checkpoint_info) needs for O(fleet.checkpoint.docker_checkpoint_info#module:details=true).
      - A failure to install it is a warning, not an error (CRIU itself works without it).
    type: bool
    default: true
  self_test:
    description:
      - V(auto) runs the self-test when CRIU or the kernel changed since the cached result; V(always) runs it every
        time; V(never) skips it.
    type: str
    choices: [auto, always, never]
    default: auto
  required_capabilities:
    description:
      - Resource kinds that must pass the self-test, else the module fails. A plain process (V(process)) is always
        required; other failing kinds are reported as warnings.
    type: list
    elements: str
    choices: [process, pipe, open_file, child_process, unix_socket, tcp_listen]
    default: []
notes:
  - Needs root (use C(become)).
seealso:
  - name: CRIU issue 2532
    description: The vDSO layout change of Linux 6.13 that older CRIU cannot handle.
    link: https://github.com/checkpoint-restore/criu/issues/2532
"""

EXAMPLES = r"""
- name: Install CRIU from the distribution, proven to work on this kernel
  fleet.checkpoint.criu_install:
  become: true

- name: On Debian 13, take CRIU (and only CRIU) from Debian testing
  fleet.checkpoint.criu_install:
    apt_source:
      suite: forky
      packages: [criu, libcompel1, python3-pycriu, libnet9, libnl-3-200]
    required_capabilities: [tcp_listen]
  become: true

- name: On Ubuntu, take CRIU from the CRIU PPA
  fleet.checkpoint.criu_install:
    apt_source:
      preset: ubuntu_ppa
  become: true

- name: Fail unless CRIU can restore rseq users (glibc 2.35 and later)
  fleet.checkpoint.criu_install:
    features: [get_rseq_conf]
  become: true
"""

RETURN = r"""
criu_version:
  description: The installed CRIU version (predicted in check mode).
  returned: always
  type: str
  sample: 4.2.1
criu_path:
  description: Path of the criu binary.
  returned: always
  type: str
  sample: /usr/sbin/criu
crit_path:
  description: Path of C(crit), CRIU's image reader (null when it is not installed).
  returned: always
  type: str
  sample: /usr/bin/crit
crit_installed_now:
  description: Whether this run installed C(crit) (in check mode, whether it would).
  returned: always
  type: bool
  sample: false
criu_check_ok:
  description: C(criu check) passed.
  returned: always
  type: bool
  sample: true
kernel:
  description: The running kernel release.
  returned: always
  type: str
  sample: 6.18.44-fc-v669
os_family:
  description: The package-manager family used.
  returned: always
  type: str
  sample: debian
min_version:
  description: The effective minimum CRIU version.
  returned: always
  type: str
  sample: "4.1"
min_version_reason:
  description: Why that minimum (the user's O(min_version), or the kernel floor with its source).
  returned: always
  type: str
  sample: kernel 6.18.44 needs CRIU 4.1 or newer ...
candidate_version:
  description: The version the package sources offered, when the module looked.
  returned: always
  type: str
  sample: 4.2.1-1
installed_now:
  description: CRIU was installed or upgraded by this run.
  returned: always
  type: bool
  sample: false
features:
  description: The O(features) asked for, each with whether C(criu check --feature) passes.
  returned: always
  type: dict
  sample: {"get_rseq_conf": true}
capabilities:
  description: Resource kinds that the self-test dumped and restored successfully (true) or not (false).
  returned: when the self-test ran or a cached result exists
  type: dict
  sample: {"process": true, "pipe": true, "open_file": true, "child_process": true, "unix_socket": true, "tcp_listen": false}
self_test:
  description: The self-test per resource kind, with the failing stage and CRIU's error line.
  returned: when the self-test ran or a cached result exists
  type: dict
  sample: {"tcp_listen": {"ok": false, "stage": "dump", "error": "Error (criu/sockets.c:...): sockets: Can't get 1:16 opt"}}
self_test_ran:
  description: The self-test ran in this run (otherwise the cached result is returned).
  returned: always
  type: bool
  sample: true
"""

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.install import CriuInstall, CriuInstallError
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.selftest import KINDS
from ansible_collections.fleet.checkpoint.plugins.module_utils._criu.version import version_tuple


def argument_spec():
    return {
        "state": {"type": "str", "choices": ["present", "latest", "absent"], "default": "present"},
        "min_version": {"type": "str", "default": "2.0"},
        "apt_source": {
            "type": "dict",
            "options": {
                "uri": {"type": "str", "default": "http://deb.debian.org/debian"},
                "preset": {"type": "str", "choices": ["ubuntu_ppa", "obs"]},
                "suite": {"type": "str"},
                "key_url": {"type": "str", "no_log": False},
                "key_fingerprint": {"type": "str", "no_log": False},
                "components": {"type": "list", "elements": "str", "default": ["main"]},
                "packages": {"type": "list", "elements": "str", "default": ["criu"]},
                "signed_by": {"type": "path"},
                "priority": {"type": "int", "default": 990},
            },
        },
        "update_cache": {"type": "bool", "default": True},
        "features": {"type": "list", "elements": "str", "default": []},
        "self_test": {"type": "str", "choices": ["auto", "always", "never"], "default": "auto"},
        "required_capabilities": {"type": "list", "elements": "str", "choices": list(KINDS), "default": []},
        "crit": {"type": "bool", "default": True},
    }


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    try:
        version_tuple(module.params["min_version"])
    except ValueError:
        module.fail_json(msg=f"min_version must be a version like 4.1, not {module.params['min_version']!r}. "
                             "Nothing was changed.")
    worker = CriuInstall(dict(module.params), run=module.run_command, check_mode=module.check_mode, warn=module.warn)
    try:
        result = worker.run()
    except CriuInstallError as exc:
        module.fail_json(msg=str(exc), exception=traceback.format_exc(), **exc.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
