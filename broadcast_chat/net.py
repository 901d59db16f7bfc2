"""Addresses as the server counts and shows them. Pure functions."""

import ipaddress
from typing import Tuple


def address_group(host: str) -> str:
    """What per-address limits count by: the IPv4 address, or the IPv6
    /64 network (one host usually has a whole /64 to pick addresses from)."""
    if ":" not in host:
        return host     # IPv4, as the socket gives it: already one form
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network("%s/64" % address, strict=False))
    return str(address)


def is_loopback(host: str) -> bool:
    """Whether host is this machine only (127.0.0.0/8, ::1, localhost)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def format_address(address: Tuple) -> str:
    host, port = address[0], address[1]
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)
