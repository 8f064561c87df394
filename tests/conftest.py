"""Shared fixtures: the rule data, loaded once from the installed package."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from consumer.rules import Rules, load_rules

sys.path.insert(0, str(Path(__file__).parent))

RECEIVED_AT = "2025-01-01T00:00:00.000Z"


@pytest.fixture(scope="session")
def rules() -> Rules:
    """The shipped classification data (consumer/data), validated."""
    return load_rules()
