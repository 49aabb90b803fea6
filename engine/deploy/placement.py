"""Ranking replicas for a request, from what each reports (`node_stats`): the policy of
`router.HeadroomRouter`, kept free of Ray so it can be tested alone.

- A new session (`place`) goes to a replica with a free slot, the least loaded first; load is
  the largest of occupancy (sessions, counting those this router sent since the replica's last
  report, over the cap), frame-worker busy time, diffusion busy time, and 1 for a replica whose
  budget controller has stepped a stream down. Replicas without a free slot come after (they
  answer 503 themselves, so a session never lands on a full replica). A WHIP publish to a name
  that some replica already publishes goes to that replica (it answers 409, or replaces it).
- A session id's requests (`replica`) go to the replica named in the id, alone; if it is gone,
  to any other, which answers 404.
- A stream name (`name`) goes first to the replicas that report publishing it.
- Replicas already asked for this request (`avoid`) come last, so the ingress can walk every
  replica once: it stops when the one that answers is one it has asked before.
"""

from __future__ import annotations

import random
from typing import Mapping, Sequence

from .routes import ANY, EACH, NAME, PLACE, REPLICA, Route


def has_room(stats: Mapping, pending: int = 0) -> bool:
    cap = stats.get("max_sessions")
    if not cap:  # no report yet: a replica that has just started is empty
        return True
    return stats.get("sessions", 0) + pending < cap


def load(stats: Mapping, pending: int = 0) -> float:
    cap = stats.get("max_sessions") or 0
    occupancy = (stats.get("sessions", 0) + pending) / cap if cap else 0.0
    degraded = 1.0 if stats.get("degraded") else 0.0
    return max(occupancy, float(stats.get("busy", 0.0)), float(stats.get("diffusion_busy", 0.0)), degraded)


def rank(replicas: Sequence[tuple[str, Mapping]], route: Route,
         pending: Mapping[str, int] | None = None) -> list[list[str]]:
    """Replica ids in order of preference, one per rank: `replicas` is (id, routing stats)."""
    pending = pending or {}
    avoid = set(route.avoid)
    fresh = [(rid, stats) for rid, stats in replicas if rid not in avoid]
    tail = [[rid] for rid, _ in replicas if rid in avoid]
    order = list(fresh)
    random.shuffle(order)  # ties go either way, not always to the first listed

    def by_load(item: tuple[str, Mapping]) -> tuple:
        rid, stats = item
        return (not has_room(stats, pending.get(rid, 0)), load(stats, pending.get(rid, 0)),
                stats.get("sessions", 0) + pending.get(rid, 0))

    def publishing(item: tuple[str, Mapping]) -> bool:
        return route.key is not None and route.key in (item[1].get("names") or ())

    if route.kind == REPLICA:
        target = [rid for rid, _ in fresh if rid == route.key]
        if target:
            return [target]
        order.sort(key=by_load)
    elif route.kind == PLACE:
        order.sort(key=lambda item: (not publishing(item), *by_load(item)))
    elif route.kind == NAME:
        order.sort(key=lambda item: (not publishing(item), *by_load(item)))
    elif route.kind in (EACH, ANY):
        order.sort(key=by_load)
    return [[rid] for rid, _ in order] + tail
