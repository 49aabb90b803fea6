"""Which replica an HTTP request is for, and what travels between the ingress and a replica.

    POST /offer, POST /whip/{name}                       place: a new session, on the replica
                                                         with the most headroom (a WHIP name
                                                         already publishing: its replica)
    /sessions/{id}..., /whip/{name}/{id}, /whep/{name}/{id}
                                                         replica: the one named in the id
    POST|HEAD /whep/{name}, /streams/{name}...           name: the replica publishing it
    GET /healthz, /metrics, /streams                     each: every replica, merged
    anything else (the page, its files, the schema...)   any replica

Session and viewer ids made on a cluster replica start with the replica's id and a dash
(`ServerConfig.session_id_prefix`), so the id itself says where it lives: no table to keep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

PLACE, REPLICA, NAME, EACH, ANY = "place", "replica", "name", "each", "any"

_SESSION = re.compile(r"^/sessions/([^/]+)(?:/params)?$")
_WHIP_WHEP_ID = re.compile(r"^/(?:whip|whep)/[^/]+/([^/]+)$")
_WHIP = re.compile(r"^/whip/([^/]+)$")
_WHEP = re.compile(r"^/whep/([^/]+)$")
_STREAM = re.compile(r"^/streams/([^/]+)(?:/params)?$")
_REPLICA_ID = re.compile(r"^([A-Za-z0-9]{1,32})-[0-9a-f]{32}$")
AGGREGATED = ("/healthz", "/metrics", "/streams")


@dataclass(frozen=True)
class Route:
    """Where a request goes: `kind` (see the module doc), `key` (a replica id or a stream name)
    and the replicas already asked (`avoid`), which the router ranks last."""

    kind: str
    key: str | None = None
    avoid: tuple[str, ...] = ()

    def avoiding(self, replica: str) -> "Route":
        return Route(self.kind, self.key, (*self.avoid, replica))

    def as_dict(self) -> dict:  # what the router reads from the handle call's kwargs
        return {"kind": self.kind, "key": self.key, "avoid": list(self.avoid)}

    @classmethod
    def from_dict(cls, data: dict | None) -> "Route":
        data = data or {}
        return cls(data.get("kind", ANY), data.get("key"), tuple(data.get("avoid") or ()))


def replica_of(session_id: str) -> str | None:
    """The replica id at the start of a cluster session id; None for an id of another shape."""
    match = _REPLICA_ID.match(session_id)
    return match.group(1) if match else None


def classify(method: str, path: str) -> Route:
    method = method.upper()
    if method == "POST" and path == "/offer":
        return Route(PLACE)
    if method == "GET" and path in AGGREGATED:
        return Route(EACH)
    for pattern in (_SESSION, _WHIP_WHEP_ID):
        match = pattern.match(path)
        if match:
            replica = replica_of(match.group(1))
            return Route(REPLICA, replica) if replica else Route(ANY)
    match = _WHIP.match(path)
    if match and method == "POST":
        return Route(PLACE, match.group(1))
    match = _WHEP.match(path)
    if match and method in ("POST", "HEAD"):
        return Route(NAME, match.group(1))
    match = _STREAM.match(path)
    if match:
        return Route(NAME, match.group(1))
    return Route(ANY)


@dataclass
class Forwarded:
    """An HTTP request as the ingress received it, for a replica to replay."""

    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes = b""


@dataclass
class Answer:
    """A replica's HTTP answer, with who gave it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    replica: str
    node_id: str = ""
    node_ip: str = ""
    extra: dict = field(default_factory=dict)  # what the replica adds for merged answers

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)
