"""Clients for the examples. In replay mode no key is needed and nothing leaves the machine."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest
from openai import AsyncOpenAI, OpenAI

sys.path.insert(0, os.path.dirname(__file__))


def _key() -> str:
    return os.environ.get("OPENAI_API_KEY", "not-needed-for-replay")


@pytest.fixture
def client() -> OpenAI:
    return OpenAI(api_key=_key(), max_retries=0)


@pytest.fixture
def aclient() -> AsyncOpenAI:
    return AsyncOpenAI(api_key=_key(), max_retries=0)


@pytest.fixture
def anthropic_client() -> Any:
    # imported here: the demo's examples of the openai SDK need only the openai extra
    anthropic = pytest.importorskip("anthropic")
    return anthropic.Anthropic(
        api_key=os.environ.get("ANTHROPIC_API_KEY", "not-needed-for-replay"), max_retries=0
    )
