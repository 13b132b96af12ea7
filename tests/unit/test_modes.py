"""decide(): the whole table of modes and cassette states."""

from __future__ import annotations

import pytest

from llm_cache.modes import Action, Found, Mode, decide

TABLE = {
    (Mode.REPLAY, Found.MISSING): Action.FAIL,
    (Mode.REPLAY, Found.FRESH): Action.SERVE,
    (Mode.REPLAY, Found.EXPIRED): Action.SERVE_STALE,
    (Mode.RECORD, Found.MISSING): Action.RECORD,
    (Mode.RECORD, Found.FRESH): Action.SERVE,
    (Mode.RECORD, Found.EXPIRED): Action.SERVE_STALE,
    (Mode.REFRESH, Found.MISSING): Action.RECORD,
    (Mode.REFRESH, Found.FRESH): Action.SERVE,
    (Mode.REFRESH, Found.EXPIRED): Action.REFRESH,
    (Mode.OFF, Found.MISSING): Action.PASS,
    (Mode.OFF, Found.FRESH): Action.PASS,
    (Mode.OFF, Found.EXPIRED): Action.PASS,
}


def test_table_covers_every_mode_and_state():
    assert set(TABLE) == {(m, f) for m in Mode for f in Found}


@pytest.mark.parametrize("mode, found", list(TABLE), ids=lambda v: v.value)
def test_decide(mode, found):
    assert decide(mode, found) is TABLE[mode, found]


def test_mode_str_is_its_value():
    assert [str(m) for m in Mode] == ["replay", "record", "refresh", "off"]
