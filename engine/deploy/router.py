"""The Serve request router of the `CamfxNode` deployment: every handle call the ingress makes
carries a `route` (see `routes`) in its keyword arguments, and this router ranks the replicas for
it by their routing stats (`placement.rank`).

Serve refreshes a replica's routing stats once per `request_routing_stats_period_s` (1 s here),
so offers that arrive together would all see the same numbers: the router also counts the new
sessions it has sent each replica since it first saw that replica's latest report, and adds them.

Routing is exact, not first-come-first-served: each request gets the replica chosen for it
(`RequestRouter`'s own matching, no FIFOMixin).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Optional

from ray.serve.request_router import PendingRequest, ReplicaID, RequestRouter, RunningReplica

from .placement import rank
from .routes import PLACE, Route

# Sessions sent within this long before a report was first seen may not be in it yet.
REPORT_MARGIN_S = 1.5
_KEEP = 256  # sent sessions remembered per replica


def route_of(pending_request: Optional[PendingRequest]) -> Route:
    if pending_request is None:
        return Route("any")
    return Route.from_dict(pending_request.kwargs.get("route"))


class HeadroomRouter(RequestRouter):
    def initialize_state(self, **kwargs: Any) -> None:
        self._sent: dict[str, deque[float]] = {}  # replica -> when this router sent it a new session
        self._reports: dict[str, tuple[Any, float]] = {}  # replica -> (report seq, when first seen)

    def _pending(self, replica: RunningReplica, now: float) -> int:
        rid = replica.replica_id.unique_id
        seq = replica.routing_stats.get("seq")
        seen = self._reports.get(rid)
        if seen is None or seen[0] != seq:
            seen = self._reports[rid] = (seq, now)
        since = seen[1] - REPORT_MARGIN_S
        sent = self._sent.get(rid)
        if not sent:
            return 0
        while sent and sent[0] < since:
            sent.popleft()
        return len(sent)

    async def choose_replicas(self, candidate_replicas: list[RunningReplica],
                              pending_request: Optional[PendingRequest] = None) -> list[list[RunningReplica]]:
        route = route_of(pending_request)
        if pending_request is not None:
            # If no replica in a rank can take it now, wait a little before asking again (Serve
            # otherwise retries at once).
            pending_request.routing_context.should_backoff = True
        now = time.monotonic()
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        pending = {rid: self._pending(r, now) for rid, r in by_id.items()}
        for gone in set(self._reports) - set(by_id):
            self._reports.pop(gone, None)
            self._sent.pop(gone, None)
        ranks = rank([(rid, r.routing_stats or {}) for rid, r in by_id.items()], route, pending)
        return [[by_id[rid] for rid in ids] for ids in ranks]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        if route_of(pending_request).kind == PLACE:
            self._sent.setdefault(replica_id.unique_id, deque(maxlen=_KEEP)).append(time.monotonic())
