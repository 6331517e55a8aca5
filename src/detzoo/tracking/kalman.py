"""A constant-velocity Kalman filter over boxes, for many tracks at once (arrays of states, no Python loop over
tracks): the motion model of ByteTrack / BoT-SORT.

The state of a track is (cx, cy, w, h, vx, vy, vw, vh): the box centre and size, and their velocities in pixels
per frame of the source. The noise is proportional to the box size (a large, near object moves more pixels per
frame than a far, small one): position noise ``POSITION_STD`` x (w, h, w, h), velocity noise ``VELOCITY_STD`` x
(w, h, w, h) - BoT-SORT's (cx, cy, w, h) form of ByteTrack's filter, which tracks the width directly instead of
the aspect ratio. ``predict`` steps ``dt`` frames at once, so frames skipped by a stride or dropped from a live
source are bridged by the motion model.

Written here because it is 60 lines of numpy: the maintained filter libraries (filterpy, pykalman) filter one
state at a time, and a per-track Python loop is what would make the tracker miss 1 ms per frame at 50 objects.
"""

from __future__ import annotations

import numpy as np

POSITION_STD = 1.0 / 20  # of the box side: measurement and process noise of the position
VELOCITY_STD = 1.0 / 160  # of the box side: process noise of the velocity


def xyxy_to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                     boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    half_w, half_h = boxes[:, 2] / 2, boxes[:, 3] / 2
    return np.stack([boxes[:, 0] - half_w, boxes[:, 1] - half_h, boxes[:, 0] + half_w, boxes[:, 1] + half_h], axis=1)


def _sides(state: np.ndarray) -> np.ndarray:
    """[T, 4] = (w, h, w, h) of each state, at least 1 px (the noise must not vanish on a degenerate box)."""
    size = np.maximum(state[:, 2:4], 1.0)
    return np.concatenate([size, size], axis=1)


def initiate(measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """New tracks from (cx, cy, w, h) measurements [N, 4]: zero velocity, with ByteTrack's wide first
    uncertainty (2 x the position noise; 10 x the velocity noise, the velocity being unknown)."""
    count = len(measurements)
    mean = np.zeros((count, 8))
    mean[:, :4] = measurements
    sides = _sides(mean)
    std = np.concatenate([2 * POSITION_STD * sides, 10 * VELOCITY_STD * sides], axis=1)
    covariance = np.zeros((count, 8, 8))
    covariance[:, np.arange(8), np.arange(8)] = std ** 2
    return mean, covariance


def predict(mean: np.ndarray, covariance: np.ndarray, dt: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Every state ``dt`` frames ahead (``dt`` per track [T] or one number). The transition is
    F = [[I, dt I], [0, I]], so F P F^T is computed on P's 4 x 4 blocks; the process noise grows with dt (a
    random walk of the velocity)."""
    dt = np.broadcast_to(np.asarray(dt, dtype=float), (len(mean),))
    mean = mean.copy()
    mean[:, :4] += dt[:, None] * mean[:, 4:]
    a, b, c = covariance[:, :4, :4], covariance[:, :4, 4:], covariance[:, 4:, 4:]
    step = dt[:, None, None]
    covariance = covariance.copy()
    covariance[:, :4, :4] = a + step * (b + b.transpose(0, 2, 1)) + step ** 2 * c
    covariance[:, :4, 4:] = b + step * c
    covariance[:, 4:, :4] = covariance[:, :4, 4:].transpose(0, 2, 1)
    sides = _sides(mean)
    noise = np.concatenate([POSITION_STD * sides, VELOCITY_STD * sides], axis=1) ** 2 * dt[:, None]
    covariance[:, np.arange(8), np.arange(8)] += noise
    return mean, covariance


def update(mean: np.ndarray, covariance: np.ndarray, measurements: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The states corrected by (cx, cy, w, h) measurements [T, 4] (the measurement is the first half of the
    state: H = [I 0]). With S = P_zz + R, the gain's transpose is S^-1 P_z. (one solve for all tracks), the
    mean moves by innovation x gain and P loses P_z.^T S^-1 P_z. ."""
    noise = (POSITION_STD * _sides(mean)) ** 2
    projected = covariance[:, :4, :4].copy()
    projected[:, np.arange(4), np.arange(4)] += noise
    gain_t = np.linalg.solve(projected, covariance[:, :4, :])  # [T, 4, 8] = S^-1 H P
    innovation = measurements - mean[:, :4]
    mean = mean + np.einsum("ti,tij->tj", innovation, gain_t)
    covariance = covariance - covariance[:, :4, :].transpose(0, 2, 1) @ gain_t
    return mean, covariance
