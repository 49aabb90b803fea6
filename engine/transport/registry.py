"""The live sessions of one server: peers (from /offer and WHIP) by id and by published name,
and WHEP viewers, each within its cap. When the last session ends, the allocator is trimmed (its
frames' memory goes back to the system)."""

from __future__ import annotations

import asyncio
import re
import secrets

from aiohttp import web

from ..diffusion.scheduler import AdmissionError
from ..hub import Hub
from ..memory import Trimmer
from ..params import Params
from ..tasks import TaskSet
from .errors import HTTPError
from .ice import peer_connection
from .session import PeerSession
from .viewer import ViewerSession

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
RETRY_AFTER_S = "5"


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise HTTPError(400, f"a stream name is 1 to 64 letters, digits, '-' or '_'; {name[:80]!r} is not")
    return name


class Sessions:
    """Peers by id and by name, and viewers by id (see the module doc)."""

    def __init__(self, hub: Hub):
        self._hub = hub
        self._live: dict[str, PeerSession] = {}
        self._named: dict[str, PeerSession] = {}
        self._viewers: dict[str, ViewerSession] = {}
        self._trimmer = Trimmer()
        self._tasks = TaskSet("sessions")

    # ---- peers -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._live

    def __getitem__(self, session_id: str) -> PeerSession:
        return self._live[session_id]

    def get(self, session_id: str) -> PeerSession | None:
        return self._live.get(session_id)

    def named(self, name: str) -> PeerSession | None:
        return self._named.get(name)

    def names(self) -> list[str]:
        return sorted(self._named)

    def all(self) -> list[PeerSession]:
        return list(self._live.values())

    async def open(self, params: Params, name: str | None = None, sends_back: bool = True,
                   auto_name: str | None = None) -> PeerSession:
        """A new session in a free slot, published as `name` (or, without one, under a default
        name from `auto_name`: see `_default_name`). HTTPError 409 (the name is taken, unless the server replaces
        publishers) or 503 (no slot)."""
        config, metrics = self._hub.config, self._hub.metrics
        if name is not None and name in self._named:
            if not config.replace_publisher:
                raise HTTPError(409, f"a stream named {name!r} is already publishing; stop it first, pick "
                                     "another name, or start the server with --replace-publisher")
            await self._named[name].close()
        if len(self._live) >= config.max_sessions:
            raise HTTPError(503, f"the session limit ({config.max_sessions}) is reached; try again in a few seconds",
                            headers={"Retry-After": RETRY_AFTER_S})
        try:
            self._hub.admit(params)
        except AdmissionError as exc:  # the device cannot hold one more without slowing the others
            raise HTTPError(503, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
        token = secrets.token_hex(16)
        session_id = config.session_id_prefix + token
        if name is None and auto_name:
            name = self._default_name(auto_name, token)
        session = PeerSession(session_id, peer_connection(config.ice_servers), self._hub, params,
                              self._forget, config.connect_timeout, config.media_timeout,
                              name=name, sends_back=sends_back)
        self._live[session.id] = session
        if name is not None:
            self._named[name] = session
        metrics.sessions.set(len(self._live))
        metrics.sessions_total.inc()
        return session

    def _default_name(self, base: str, token: str) -> str:
        """`base` if no stream has that name, else `base-2`, `base-3`, ...: the first unnamed
        stream is always `base`, so a viewer's URL (an OBS Browser Source on /view/main) outlives a
        reload of the page and a restart of the server. On a cluster replica, part of the id
        instead: replicas do not share names."""
        if self._hub.config.session_id_prefix:
            return f"{base}-{token[:6]}"
        name, n = base, 1
        while name in self._named:
            n += 1
            name = f"{base}-{n}"
        return name

    def _forget(self, session: PeerSession) -> None:
        if self._live.pop(session.id, None) is not None:
            self._hub.metrics.sessions.set(len(self._live))
        if session.name is not None and self._named.get(session.name) is session:
            del self._named[session.name]
        for viewer in [v for v in self._viewers.values() if v.publisher is session]:
            self._tasks.spawn(viewer.close())  # the stream they watch has ended
        self._trim_if_idle()

    # ---- viewers ------------------------------------------------------------------------------
    def viewer_ids(self) -> list[str]:
        return list(self._viewers)

    def viewer(self, viewer_id: str) -> ViewerSession | None:
        return self._viewers.get(viewer_id)

    def viewers_of(self, session: PeerSession) -> list[ViewerSession]:
        return [v for v in self._viewers.values() if v.publisher is session]

    def open_viewer(self, name: str) -> ViewerSession:
        """A new viewer of the stream published as `name`. HTTPError 404 (nothing publishing
        under that name) or 503 (the viewer cap is reached)."""
        config = self._hub.config
        publisher = self._named.get(name)
        if publisher is None:
            raise HTTPError(404, f"no stream named {name!r} is publishing (the viewer page waits and retries)")
        if len(self._viewers) >= config.max_viewers:
            raise HTTPError(503, f"the viewer limit ({config.max_viewers}) is reached; try again in a few seconds",
                            headers={"Retry-After": RETRY_AFTER_S})
        viewer_id = config.session_id_prefix + secrets.token_hex(16)
        viewer = ViewerSession(viewer_id, peer_connection(config.ice_servers), publisher,
                               self._forget_viewer, config.connect_timeout, config.media_timeout)
        self._viewers[viewer.id] = viewer
        return viewer

    def _forget_viewer(self, viewer: ViewerSession) -> None:
        self._viewers.pop(viewer.id, None)
        self._trim_if_idle()

    def _trim_if_idle(self) -> None:
        if not self._live and not self._viewers:
            self._trimmer.soon()  # give the ended sessions' frame buffers back to the system

    async def close_all(self) -> None:
        everything = [*self._viewers.values(), *self._live.values()]
        await asyncio.gather(*(s.close() for s in everything), return_exceptions=True)
        await self._tasks.close()
        self._trimmer.cancel()


HUB_KEY = web.AppKey("hub", Hub)
SESSIONS_KEY = web.AppKey("sessions", Sessions)
