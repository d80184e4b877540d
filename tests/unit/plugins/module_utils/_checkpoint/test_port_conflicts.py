# Copyright (c) fleet.checkpoint contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Which published ports a host cannot give: its sockets (as /proc/net shows them) and Docker's published ports."""

from __future__ import annotations

import pytest

from ansible_collections.fleet.checkpoint.plugins.module_utils._checkpoint import port_conflicts as pc

# Captured on a lab host: sshd on 0.0.0.0:22 and [::]:22, a listener on 127.0.0.1:2252, an established connection
# (not a listener), a UDP socket on 127.0.0.53:53 and one on [::1]:5353.
PROC = {
    "/proc/net/tcp": "  sl  local_address rem_address   st\n"
                     "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 0 1\n"
                     "   1: 0100007F:08CC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 0 2\n"
                     "   2: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0 0 3\n",
    "/proc/net/tcp6": "  sl  local_address                         remote_address                        st\n"
                      "   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 0\n",
    "/proc/net/udp": "  sl  local_address rem_address   st\n   0: 3500007F:0035 00000000:0000 07 00000000:00000000\n",
    "/proc/net/udp6": "  sl  local_address                         remote_address                        st\n"
                      "   0: 00000000000000000000000001000000:14E9 00000000000000000000000000000000:0000 07 0\n",
}


def read(path):
    if path not in PROC:
        raise FileNotFoundError(path)
    return PROC[path]


def test_sockets_read_listeners_and_bound_udp_with_their_addresses():
    assert pc.sockets(read) == {("0.0.0.0", 22, "tcp"), ("127.0.0.1", 2252, "tcp"), ("::", 22, "tcp"),
                                ("127.0.0.53", 53, "udp"), ("::1", 5353, "udp")}

    def unreadable(path):
        raise OSError(path)
    assert pc.sockets(unreadable) == set()  # no /proc/net: nothing known


@pytest.mark.parametrize("wanted, holder, collides", [
    (("", 22, "tcp"), ("127.0.0.1", 22, "tcp"), True),  # all addresses: any listener of the port
    (("10.0.0.5", 22, "tcp"), ("0.0.0.0", 22, "tcp"), True),  # a wildcard listener: every address
    (("10.0.0.5", 22, "tcp"), ("::", 22, "tcp"), True),
    (("127.0.0.1", 22, "tcp"), ("127.0.0.1", 22, "tcp"), True),
    (("127.0.0.1", 22, "tcp"), ("10.0.0.5", 22, "tcp"), False),  # another address
    (("", 22, "udp"), ("0.0.0.0", 22, "tcp"), False),  # another protocol
    (("", 23, "tcp"), ("0.0.0.0", 22, "tcp"), False),
])
def test_collisions(wanted, holder, collides):
    assert pc.collides(wanted, holder) is collides


def test_bindings_and_what_docker_publishes():
    config = {"port_bindings": {"8080/tcp": [{"HostIp": "", "HostPort": "18080"}], "53/udp": [{"HostPort": "5353"}],
                                "9000/tcp": [{"HostIp": "", "HostPort": ""}], "9001/tcp": None}}
    assert pc.bindings(config) == [("", 18080, "tcp"), ("", 5353, "udp")]  # a random host port collides with none

    class Api:
        @staticmethod
        def get(path):
            assert path == "/containers/json"
            return [{"Ports": [{"IP": "0.0.0.0", "PrivatePort": 80, "PublicPort": 18080, "Type": "tcp"},
                               {"PrivatePort": 443, "Type": "tcp"}]}, {"Ports": None}]
    assert pc.published(Api()) == {("0.0.0.0", 18080, "tcp")}
    assert pc.taken(pc.bindings(config), pc.published(Api())) == [("", 18080, "tcp")]


def test_mapped_addresses_and_a_big_endian_host():
    # ::ffff:10.0.0.5 (a dual-stack socket) as tcp6 shows it on a little-endian host
    assert pc.proc_net_address("0000000000000000FFFF00000500000A", byteorder="little") == "10.0.0.5"
    assert pc.proc_net_address("0A000005", byteorder="big") == "10.0.0.5"
    assert pc.proc_net_address("00000000000000000000000000000001", byteorder="big") == "::1"
