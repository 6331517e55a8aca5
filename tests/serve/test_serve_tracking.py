"""``POST /v1/track`` (issue 17): a client's frames, one at a time under its session id, get detections with
persistent track ids from that client's own tracker; ``/v1/detect`` stays per image; sessions are bounded in
number and idle time, and refused requests are 4xx with a reason."""

from __future__ import annotations

import pytest
from serve_helpers import assert_same_detections, reference

from detzoo.common.config import TrackConfig
from detzoo.models.selection import SelectOptions
from detzoo.serve.errors import RequestError
from detzoo.serve.tracking import TrackSessions


def _frame(client, image, session="cam-1", **params):
    return client.post("/v1/track", params={"session": session, **params},
                       files={"image": (image.name, image.read_bytes(), "image/jpeg")})


def test_track_ids_persist_per_session_and_detect_stays_per_image(client, predictor, images):
    answers = [_frame(client, images[0]) for _ in range(3)]
    assert all(a.status_code == 200 for a in answers)
    documents = [a.json() for a in answers]
    assert [d["frame"] for d in documents] == [0, 1, 2] and documents[0]["session"] == "cam-1"
    tracked = [d["images"][0]["detections"] for d in documents]
    assert tracked[0], "the trained model detects something on its training image"
    ids = [[d["track_id"] for d in frame] for frame in tracked]
    assert ids[0] == ids[1] == ids[2] == list(range(1, len(ids[0]) + 1))  # the same objects keep their ids
    # the model's detections, selected down to the tracker's low score; in the first frame, those scoring at
    # least high_score start (confirmed) tracks
    settings = TrackConfig()
    low = reference(predictor, images[0], SelectOptions(score_threshold=settings.low_score))
    assert_same_detections(tracked[0], [d for d in low if d["score"] >= settings.high_score])

    other = _frame(client, images[0], session="cam-2").json()["images"][0]["detections"]
    assert [d["track_id"] for d in other] == ids[0]  # another client: its own tracker, its own ids
    detected = client.post("/v1/detect", files={"image": (images[0].name, images[0].read_bytes(), "image/jpeg")})
    assert all("track_id" not in d for d in detected.json()["images"][0]["detections"])

    assert client.delete("/v1/track", params={"session": "cam-1"}).status_code == 204
    assert client.delete("/v1/track", params={"session": "cam-1"}).status_code == 404
    assert _frame(client, images[0]).json()["frame"] == 0  # a new session after the end


@pytest.mark.parametrize("params, files, status, reason", [
    ({}, 1, 422, "needs session=ID"),
    ({"session": "a b"}, 1, 422, "needs session=ID"),
    ({"session": "x"}, 2, 400, "one frame per request"),
    ({"session": "x", "format": "mxpi"}, 1, 422, "detzoo's format only"),
    ({"session": "x", "score": "0.5"}, 1, 422, "unknown option(s) score"),
])
def test_bad_track_requests_are_4xx_with_a_reason(client, images, params, files, status, reason):
    upload = [("image", (images[0].name, images[0].read_bytes(), "image/jpeg"))] * files
    answer = client.post("/v1/track", params=params, files=upload)
    assert answer.status_code == status and reason in answer.json()["error"]
    assert client.get("/readyz").status_code == 200  # and the service goes on


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_sessions_are_bounded_in_number_and_time():
    clock = Clock()
    sessions = TrackSessions(max_sessions=2, idle_s=60, clock=clock)
    a = sessions.begin("a")
    with pytest.raises(RequestError, match="frame in flight") as busy:
        sessions.begin("a")
    assert busy.value.status == 409
    b = sessions.begin("b")
    with pytest.raises(RequestError, match="all 2 tracking sessions are busy") as full:
        sessions.begin("c")  # both in flight: nothing to evict
    assert full.value.status == 503
    sessions.end(a)
    clock.now = 1.0
    sessions.end(b)
    sessions.end(sessions.begin("c"))  # full: the least recently used idle session (a) makes room
    assert sorted(sessions.sessions) == ["b", "c"]
    clock.now = 62.0  # b idle since 1 s, c since 1 s: both expire
    sessions.expire()
    assert len(sessions) == 0
