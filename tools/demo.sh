#!/usr/bin/env bash
# `make demo`: the main job on the built-in lab fleet. Run by make (PATH and ANSIBLE_COLLECTIONS_PATH set there).
set -euo pipefail
cd "$(dirname "$0")/.."
cat <<'TEXT'

== fleet.checkpoint demo ==
The lab fleet is up: real Debian 13 hosts (containers running systemd, sshd and Docker) reached over SSH.
The checkpoint/restore modules and the host_reboot playbook are not built yet, so this demo does not
checkpoint anything. It shows the lab and runs fleet.checkpoint.readiness, which tells, per host, what
is missing before containers can be checkpointed (Docker experimental mode, a working CRIU).

TEXT
tests/lab/status.sh
echo
ANSIBLE_STDOUT_CALLBACK=ansible.builtin.default ANSIBLE_CALLBACK_RESULT_FORMAT=yaml \
  ansible-playbook -i tests/lab/inventory.yml fleet.checkpoint.readiness
