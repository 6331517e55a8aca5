"""Fixtures of the in-process service tests: the briefly trained model's Predictor, images it detects
things on, a ready client, and a Predictor whose model calls a test can hold."""

from __future__ import annotations

import pytest
from serve_helpers import Gate, client_for, trained_images, wait_ready

from detzoo.predict import Predictor


@pytest.fixture(scope="module")
def predictor(trained_checkpoint):
    return Predictor.from_file(trained_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def images(coco128):
    return trained_images(coco128, 3)


@pytest.fixture
def client(predictor):
    with client_for(predictor) as client:
        wait_ready(client)
        yield client


@pytest.fixture
def gated(trained_checkpoint):
    """A Predictor whose model calls a test can hold (Gate)."""
    predictor = Predictor.from_file(trained_checkpoint, device="cpu")
    return predictor, Gate(predictor)
