"""Which addresses discovery may hand to the request path (no SSRF through discovery).

A discovered address comes from a cloud API whose contents anyone with write
access to an instance's labels, metadata or network settings can influence.
Before such an address becomes a backend it must be an IP literal (no names:
a name can resolve anywhere later) inside one of the configured
``allowed_networks``. Some addresses are refused even when a network admits
them, because reaching them from the gateway is never intended and is the
classic SSRF target: link-local (the cloud metadata services at
``169.254.169.254`` and ``fd00:ec2::254`` among them), unspecified,
multicast and broadcast addresses. Loopback is refused unless a configured
network explicitly contains it (tests with local emulators do).

An IPv6 address that is really an IPv4 one is judged as that IPv4 address:
``::ffff:169.254.169.254`` is the metadata service, not an IPv6 host that
``::/0`` admits. A 6to4, Teredo or NAT64 (``64:ff9b::/96``) address must pass
both as itself and as the IPv4 address it carries. An address with a zone
(``fd00::1%eth0``) is refused: a zone names an interface of the gateway's host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """The allowed networks. An empty policy refuses every discovered address."""

    allowed: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, cidrs: Iterable[str]) -> NetworkPolicy:
        """Raises ValueError on a malformed CIDR (``10.0.0.0/8``, ``fd00::/8``)."""
        return cls(tuple(ipaddress.ip_network(c, strict=False) for c in cidrs))

    def refusal(self, address: str, port: int | None = None) -> str | None:
        """Why ``address`` (and ``port``) may not be a backend, or None when it may."""
        try:
            ip: Address = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return f"{address!r} is not an IP address"
        if port is not None and not 0 < port < 65536:
            return f"port {port} is out of range"
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.scope_id is not None:
                return f"{address!r} carries a zone id"
            if ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # the connection goes to this IPv4 address
        why = self._refusal(ip)
        for inner in _embedded(ip) if why is None else ():
            inner_why = self._refusal(inner)
            if inner_why is not None:
                return f"{ip} carries IPv4 {inner}: {inner_why}"
        return why

    def _refusal(self, ip: Address) -> str | None:
        if ip in _METADATA or ip.is_link_local:
            return f"{ip} is link-local (cloud metadata service range)"
        if ip.is_unspecified or ip.is_multicast or ip == ipaddress.ip_address("255.255.255.255"):
            return f"{ip} is not a unicast host address"
        if not any(ip.version == net.version and ip in net for net in self.allowed):
            networks = ", ".join(str(n) for n in self.allowed) or "none configured"
            return f"{ip} is outside the allowed networks ({networks})"
        return None


def _embedded(ip: Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a 6to4, Teredo (server, client) or NAT64 address leads to."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ()
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return ip.teredo
    if ip in _NAT64:
        return (ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF),)
    return ()
