"""What a peer connection may reach: ICE servers only from configuration, host candidates only
on the addresses the server serves on.

aiortc's `RTCPeerConnection()` without a configuration adds a public STUN server (a packet to
the internet for every session), so every peer connection camfx makes, in the product, the
benchmarks and the tests, comes from `peer_connection`.

aiortc has no setting for the interfaces media binds on: its ICE agent (aioice) gathers a host
candidate on every address of every interface. `serve_media_on` replaces aioice's address list
for this process, so `camfx serve --host 127.0.0.1` offers and binds 127.0.0.1 only, and a
specific `--host` only that address. With `--host 0.0.0.0` (or `::`) aioice's own list stands.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from typing import Iterable

import aioice.ice
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection

log = logging.getLogger("camfx.ice")

_AIOICE_ADDRESSES = aioice.ice.get_host_addresses  # aioice's own: every interface


def peer_connection(ice_servers: Iterable[RTCIceServer] = ()) -> RTCPeerConnection:
    """A peer connection that uses exactly `ice_servers` (none: host candidates only)."""
    return RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))


def media_addresses(host: str) -> list[str] | None:
    """The addresses media should use when HTTP is served on `host`; None for every interface."""
    if host in ("", "0.0.0.0", "::"):
        return None
    if host == "localhost":
        return ["127.0.0.1"]
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:  # a host name: the addresses it resolves to here
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        return sorted({info[4][0] for info in infos})


def serve_media_on(addresses: list[str] | None) -> None:
    """Gather host candidates (and bind media sockets) on `addresses` only; None restores
    aioice's every-interface list. Process-wide: aioice reads it for every connection."""
    if addresses is None:
        aioice.ice.get_host_addresses = _AIOICE_ADDRESSES
        return
    chosen = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (use_ipv4 if ipaddress.ip_address(a).version == 4 else use_ipv6)]

    aioice.ice.get_host_addresses = get_host_addresses
    log.debug("media binds on %s", ", ".join(chosen))


ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def ice_server(url: str, username: str | None = None, credential: str | None = None) -> RTCIceServer:
    """One STUN or TURN server from a URL (stun:host:3478, turn:host:3478?transport=udp, turns:...);
    TURN needs `username` and `credential`. Raises ValueError with a message for the user."""
    if not url.startswith(ICE_SCHEMES):
        raise ValueError(f"{url!r} is not a STUN or TURN URL (stun:, stuns:, turn: or turns:)")
    turn = url.startswith(("turn:", "turns:"))
    if turn and not (username and credential):
        raise ValueError(f"the TURN server {url} needs --ice-username and --ice-credential")
    return RTCIceServer(urls=url, username=username if turn else None, credential=credential if turn else None)


def add_ice_flags(group, what: str) -> None:
    """--ice-server (repeatable), --ice-username, --ice-credential on an argparse group; `what`
    says what the servers are for, in --ice-server's help."""
    group.add_argument("--ice-server", action="append", default=[], metavar="URL",
                       help=f"a STUN or TURN server {what} (stun:host:3478, turn:host:3478?transport=udp); repeatable")
    group.add_argument("--ice-username", help="the TURN servers' username")
    group.add_argument("--ice-credential", help="the TURN servers' password")


def ice_servers_from(args) -> tuple[RTCIceServer, ...]:
    """The servers those flags name. Raises ValueError with a message for the user."""
    return tuple(ice_server(url, args.ice_username, args.ice_credential) for url in args.ice_server)


def link_headers(servers) -> list[str]:
    """The servers as RFC 9725 `Link: <url>; rel="ice-server"` values (with TURN credentials)."""
    links = []
    for server in servers:
        urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)
        for url in urls:
            link = f'<{url}>; rel="ice-server"'
            if server.username and server.credential:
                link += f'; username="{server.username}"; credential="{server.credential}"; credential-type="password"'
            links.append(link)
    return links


def as_json(servers) -> list[dict]:
    """The servers as a browser's RTCPeerConnection takes them (`iceServers`)."""
    out = []
    for server in servers:
        entry = {"urls": server.urls}
        if server.username and server.credential:
            entry.update(username=server.username, credential=server.credential)
        out.append(entry)
    return out
