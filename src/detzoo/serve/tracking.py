"""Tracker state for ``POST /v1/track``: one ByteTrack tracker per browser session (the web page's webcam mode
with ``?track=1`` sends its frames one at a time with a session id it made), so track ids persist across the
frames of one client and never mix between clients.

Bounded in memory and time: at most ``MAX_SESSIONS`` sessions; one idle for ``IDLE_S`` seconds is dropped (an
active webcam sends its next frame as soon as it has the answer); when all places are taken, the least recently
used idle session makes room. A session holds at most (``max_lost`` + 1) x the model's detections cap tracks
(ByteTrack drops lost tracks after ``max_lost`` frames), about 600 bytes each. A session takes one frame at a
time: a second frame while one is in flight is refused (409), which also keeps its frames in order.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ..common.config import TrackConfig
from ..tracking.bytetrack import ByteTracker
from .errors import RequestError

MAX_SESSIONS = 64
IDLE_S = 60.0
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass
class TrackSession:
    tracker: ByteTracker
    frame: int = -1  # the last frame's number (0, 1, 2 ... per request)
    used: float = field(default_factory=time.monotonic)
    busy: bool = False


class TrackSessions:
    def __init__(self, settings: TrackConfig | None = None, max_sessions: int = MAX_SESSIONS,
                 idle_s: float = IDLE_S, clock=time.monotonic):
        self.settings = settings or TrackConfig()
        self.max_sessions, self.idle_s, self.clock = max_sessions, idle_s, clock
        self.sessions: OrderedDict[str, TrackSession] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self.sessions)

    def begin(self, session_id: str | None) -> TrackSession:
        """The session's tracker, marked busy until ``end``; a new one for an unknown id."""
        if not session_id or not SESSION_ID.fullmatch(session_id):
            raise RequestError(422, "/v1/track needs session=ID (1 to 64 letters, digits, '-' or '_'): one id per "
                                    "client, the same for all its frames")
        now = self.clock()
        self.expire(now)
        session = self.sessions.get(session_id)
        if session is None:
            if len(self.sessions) >= self.max_sessions and not self._evict():
                raise RequestError(503, f"all {self.max_sessions} tracking sessions are busy; try again",
                                   {"Retry-After": "1"})
            session = self.sessions[session_id] = TrackSession(ByteTracker(self.settings), used=now)
        elif session.busy:
            raise RequestError(409, f"session {session_id} has a frame in flight; send its frames one at a time")
        self.sessions.move_to_end(session_id)
        session.busy, session.used = True, now
        return session

    def end(self, session: TrackSession) -> None:
        session.busy, session.used = False, self.clock()

    def drop(self, session_id: str) -> bool:
        """Forget a session (the page stopped its webcam); whether it existed."""
        return self.sessions.pop(session_id, None) is not None

    def expire(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        for key in [k for k, s in self.sessions.items() if not s.busy and now - s.used > self.idle_s]:
            del self.sessions[key]

    def _evict(self) -> bool:
        for key, session in self.sessions.items():  # least recently used first
            if not session.busy:
                del self.sessions[key]
                return True
        return False
