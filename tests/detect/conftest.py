"""Fixtures for the detect tests."""

from __future__ import annotations

import pytest
from detect_helpers import BlobDetector


@pytest.fixture
def blob_detector() -> BlobDetector:
    return BlobDetector()
