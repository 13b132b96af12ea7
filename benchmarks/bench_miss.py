"""How long a replay miss takes to name the closest stored request, before and after digests.

    python benchmarks/bench_miss.py              # 2,000 cassettes, 50 misses: about 25 s
    python benchmarks/bench_miss.py --entries 500 --misses 20

Builds one model version's cassettes in a temporary directory (real keys from
``llm_cache.key.make_key``, written with ``FileStore.put``), then times, for different
missing requests, ``llm_cache.diagnose.closest`` against the scan that named the closest
request before it (copied below as ``old_closest``, the baseline), and checks that both
name the same fields (and a cassette as close: of equals, the old scan named the first one,
the digests the one whose differing values are most alike). Rows:

- old, YAML only: the scan with no parsed JSON copies yet (a fresh checkout);
- old, parsed copies: the scan once the store's parsed copies exist (a later run);
- new, cold: the first miss with no digest index yet (it is built, then written);
- new, index on disk: the first miss of a process, the index written by an earlier one;
- new, warm: later misses of the same process (the index kept in memory).

Every miss stats each cassette of the model version, so a cassette changed on disk is
read again; that listing is part of every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from pathlib import Path
from typing import Any

from llm_cache.cassette import Entry, encode_body
from llm_cache.diagnose import CLOSEST_LIMIT, closest
from llm_cache.key import KeyRules, RequestKey, canonical_body, flatten, make_key
from llm_cache.stores.files import FileStore
from llm_cache.usage import META_DIR

URL = "https://api.openai.com/v1/chat/completions"
TARGET_MS = 20.0
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
     "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}},
]

_ABSENT = object()


def old_closest(store: Any, rk: RequestKey, rules: KeyRules) -> tuple[str | None, list[str]]:
    """The closest-request scan as it was before digests (CacheSession.closest), the baseline."""
    best: tuple[str | None, list[str]] = (None, [])
    wanted = flatten(rk.body) if rk.body is not None else {}
    for entry in store.entries(rk.model_version, limit=CLOSEST_LIMIT):
        if entry.path != rk.path or entry.method != rk.method:
            continue
        stored_raw = entry.request_body.to_bytes() if entry.request_body.kind == "json" else b""
        stored = flatten(canonical_body(stored_raw, rules.ignore_fields)) if stored_raw else {}
        diffs = sorted(
            name
            for name in wanted.keys() | stored.keys()
            if wanted.get(name, _ABSENT) != stored.get(name, _ABSENT)
        )
        if not diffs:
            diffs = ["query or API-version headers"]
        if best[0] is None or len(diffs) < len(best[1]):
            best = (store.location(entry.key, entry.model_version), diffs)
    return best


def body_of(i: int) -> dict[str, Any]:
    """The request of cassette ``i``: a system prompt, a question, sampling settings; tools on some."""
    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": f"You are assistant number {i % 7}. Answer briefly."},
            {"role": "user", "content": f"bench question {i}: what is {i} times {i % 13}?"},
        ],
        "temperature": (i % 5) / 4,
        "max_tokens": 256,
    }
    if i % 4 == 0:
        body["tools"] = TOOLS
    if i % 3 == 0:
        body["messages"].append({"role": "assistant", "content": f"Let me think about {i}."})
        body["messages"].append({"role": "user", "content": "Go on."})
    return body


def missing_body(j: int, entries: int) -> dict[str, Any]:
    """A request near one stored, never equal to any: each varies one or two things."""
    body = body_of((j * 37) % entries)
    change = j % 5
    if change == 0:
        body["messages"][1]["content"] += " (reworded)"
    elif change == 1:
        body["temperature"] = 0.33
    elif change == 2:
        body["seed"] = j
    elif change == 3:
        body["messages"][0]["content"] = "A new system prompt."
        body["max_tokens"] = 512
    else:
        body["messages"].append({"role": "user", "content": f"follow-up {j}"})
    return body


def key_of(body: dict[str, Any], rules: KeyRules) -> RequestKey:
    return make_key("POST", URL, json.dumps(body).encode(), {}, rules)


def build(root: Path, entries: int) -> None:
    store = FileStore(root)
    response = {"id": "chatcmpl-x", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "an answer " * 40},
                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 30, "completion_tokens": 80, "total_tokens": 110}}
    raw_response = json.dumps(response).encode()
    recorded = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    for i in range(entries):
        raw = json.dumps(body_of(i)).encode()
        rk = make_key("POST", URL, raw, {}, KeyRules())
        store.put(Entry(
            key=rk.key, recorded_at=recorded, model="gpt-4o", model_version=rk.model_version,
            method="POST", path=rk.path, query=[], request_headers={"content-type": "application/json"},
            request_body=encode_body(raw, "application/json"), status=200,
            response_headers={"content-type": "application/json"},
            response_body=encode_body(raw_response, "application/json"),
            response_model="gpt-4o-2024-08-06", usage={"input_tokens": 30, "output_tokens": 80},
        ))
    store.close()  # writes the parsed copies, as a session's end does


def timed(fn: Callable[[], tuple[str | None, list[str]]]) -> tuple[float, tuple[str | None, list[str]]]:
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


def same(result: tuple[str | None, list[str]], expected: tuple[str | None, list[str]]) -> bool:
    """The same fields named as the old scan's; the cassette may be another of those equally
    close (the old scan named the first, the digests the one whose values are most alike)."""
    return result[1] == expected[1] and (result[0] is None) == (expected[0] is None)


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=2000, help="cassettes of the model version")
    parser.add_argument("--misses", type=int, default=50, help="different missing requests")
    parser.add_argument("--cold", type=int, default=10, help="cold misses timed (each reads every cassette)")
    args = parser.parse_args(argv)
    rules = KeyRules()
    misses = [key_of(missing_body(j, args.entries), rules) for j in range(args.misses)]
    cold = misses[: args.cold]
    work = Path(tempfile.mkdtemp(prefix="bench-miss-"))
    try:
        root = work / "cassettes"
        started = time.perf_counter()
        build(root, args.entries)
        print(f"built {args.entries} cassettes in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        parsed, digests = root / META_DIR / "parsed", root / META_DIR / "digests"
        saved_parsed = work / "parsed"
        shutil.copytree(parsed, saved_parsed)
        times: dict[str, list[float]] = {}
        expected: dict[str, tuple[str | None, list[str]]] = {}

        # the baseline, with no parsed copies, then with them
        shutil.rmtree(parsed)
        for rk in cold:
            ms, result = timed(partial(old_closest, FileStore(root), rk, rules))
            times.setdefault("old, YAML only", []).append(ms)
            expected[rk.key] = result
        shutil.copytree(saved_parsed, parsed)
        store = FileStore(root)
        for rk in misses:
            ms, result = timed(partial(old_closest, store, rk, rules))
            times.setdefault("old, parsed copies", []).append(ms)
            assert expected.setdefault(rk.key, result) == result

        # digests: no index yet (parsed copies present, as after any earlier run)
        for rk in cold:
            shutil.rmtree(digests, ignore_errors=True)
            ms, result = timed(partial(closest, FileStore(root), rk, rules))
            times.setdefault("new, cold (index built)", []).append(ms)
            assert same(result, expected[rk.key]), (result, expected[rk.key])
        for rk in misses:
            ms, result = timed(partial(closest, FileStore(root), rk, rules))
            times.setdefault("new, index on disk", []).append(ms)
            assert same(result, expected[rk.key]), (result, expected[rk.key])
        store = FileStore(root)
        closest(store, misses[0], rules)
        for rk in misses:
            ms, result = timed(partial(closest, store, rk, rules))
            times.setdefault("new, warm (in memory)", []).append(ms)
            assert same(result, expected[rk.key]), (result, expected[rk.key])
        index_bytes = sum(p.stat().st_size for p in digests.iterdir())
    finally:
        shutil.rmtree(work, ignore_errors=True)

    baseline = statistics.median(times["old, parsed copies"])
    print(f"closest stored request on a miss: {args.entries} cassettes of one model version, "
          f"file store, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    print(f"{'':28} {'misses':>6} {'median ms':>10} {'p95 ms':>8} {'vs old (copies)':>16}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:28} {len(values):>6} {median:>10.2f} {p95(values):>8.2f} {baseline / median:>15.1f}x")
    print(f"digest index: {index_bytes / 1024:.0f} KiB; the same fields named as "
          f"the old scan for all {args.misses} misses")
    for name in ("new, index on disk", "new, warm (in memory)"):
        worst = p95(times[name])
        verdict = "met" if worst <= TARGET_MS else "NOT met"
        print(f"target <= {TARGET_MS:g} ms per miss, {name}: {verdict} (p95 {worst:.2f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
