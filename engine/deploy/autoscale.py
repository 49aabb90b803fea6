"""Autoscaling on sessions per replica: Serve's custom autoscaling policy, fed by each replica's
`record_autoscaling_stats` (`{"sessions": n}`).

The replica count wanted is the sessions of the whole deployment over the target per replica,
rounded up, and one more when every replica is at its cap (new sessions are being refused);
Serve then applies min / max replicas and the up / down delays. Serve ships this module to its
controller by value, so it imports nothing of camfx.
"""

from __future__ import annotations

import math


class SessionsPolicy:
    def __init__(self, target_sessions: float = 3.0, max_sessions: int = 4):
        self.target = max(0.1, float(target_sessions))
        self.cap = max(1, int(max_sessions))

    def __call__(self, ctx):
        per_replica = (ctx.aggregated_metrics or {}).get("sessions") or {}
        current = ctx.current_num_replicas
        if not per_replica or current == 0:
            return ctx.target_num_replicas, {}
        total = sum(per_replica.values())
        wanted = math.ceil(total / self.target) if total else 0
        if len(per_replica) >= current and all(v >= self.cap for v in per_replica.values()):
            wanted = max(wanted, current + 1)
        return wanted, {}
