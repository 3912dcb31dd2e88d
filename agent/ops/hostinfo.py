"""Facts about this host: its name and primary IPv4 address."""

from __future__ import annotations

import fcntl
import socket
import struct
from pathlib import Path

_SIOCGIFADDR = 0x8915


def hostname() -> str:
    return socket.gethostname()


def primary_ipv4(route_table: Path = Path("/proc/net/route")) -> str:
    """The source address of the default route (what ``hostname -I`` lists first).

    Not what the host name resolves to: on cloud images that is often a
    loopback address. Read from the routing table without sending anything.
    """
    interface = default_route_interface(route_table)
    if interface:
        address = interface_ipv4(interface)
        if address:
            return address
    return _route_source_address() or "127.0.0.1"


def _route_source_address() -> str | None:
    """Fallback where /proc/net is hidden (systemd's ProcSubset=pid): ask the kernel
    which source address it would use. connect() on a UDP socket sends nothing."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("100.100.100.200", 80))  # the ECS metadata service's address
            address = sock.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def default_route_interface(route_table: Path) -> str | None:
    try:
        lines = route_table.read_text().splitlines()[1:]
    except OSError:
        return None
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or fields[1] != "00000000" or fields[7] != "00000000":
            continue  # not a default route
        metric = int(fields[6])
        if best is None or metric < best[0]:
            best = (metric, fields[0])
    return best[1] if best else None


def interface_ipv4(interface: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            packed = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, struct.pack("256s", interface.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])
