"""A recording process for the reliability tests, run as a subprocess (never collected by pytest).

    python _recorder.py crash  --root DIR --base-url URL [--first F] --count M
                               [--mode record|refresh] [--pad BYTES] [--slow-writes PIECE]
    python _recorder.py stress --root DIR --base-url URL --store URL --proc P --shared N --own N
    python _recorder.py async  --root DIR --base-url URL --store URL --count N
    python _recorder.py streams --root DIR --base-url URL --store URL --count N

``crash`` records M distinct chat completions ("crash question {i}", i from F) in a loop through
``LLMCache("file://cassettes", root=DIR)``, printing ``ready`` once set up and ``done i``
after each answer; ``--pad`` makes each prompt (and so each cassette) that many bytes
bigger. ``--slow-writes PIECE`` makes the file store write each cassette's temporary file
in pieces of PIECE bytes, flushed, 2 ms apart (``os.fdopen`` is wrapped in this process;
nothing else changes), so that a random kill often lands between the temporary file's creation and the
``os.replace``, with part of the cassette on disk. ``--mode refresh`` uses a TTL of one
microsecond: every existing cassette is expired and replaced, so a kill can also land in
the middle of overwriting a good cassette.

``async`` records N distinct prompts ("async question {i}") at once, with
``asyncio.gather`` on one ``AsyncOpenAI`` client over ``cache.async_transport()`` (at most 8
connections: the test server's listen backlog is small), and prints its stats.

``streams`` opens N distinct requests ("open question {i}") one after the other in one
thread through ``cache.transport()``, keeping every response open (unread), then reads
them all: as an application that interleaves several answers does.

``stress`` prints ``ready``, waits for a line on stdin (all processes start together),
then asks N shared prompts and N prompts of its own, interleaved in the same order in
every process, one client and sequential calls, and prints ``json.dumps(cache.stats())``
as its last line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import timedelta
from typing import Any


def _filler(size: int) -> str:
    # plain words: nothing shaped like a credential for the secret scan to refuse
    words, total, k = [], 0, 0
    while total < size:
        word = f"filler{k % 97}"
        words.append(word)
        total += len(word) + 1
        k += 1
    return " ".join(words)


class _SlowFile:
    """A text file whose writes go out in flushed pieces with a pause between them."""

    def __init__(self, handle: Any, piece: int, pause: float, counter: list[int]) -> None:
        self._handle, self._piece, self._pause, self._counter = handle, piece, pause, counter

    def write(self, text: str) -> int:
        self._counter[0] += 1
        for start in range(0, len(text), self._piece):
            self._handle.write(text[start : start + self._piece])
            self._handle.flush()
            time.sleep(self._pause)
        return len(text)

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._handle.__exit__(*exc)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


def slow_down_writes(piece: int, pause: float = 0.002) -> list[int]:
    """Wrap ``os.fdopen`` in this process (the file store's ``mkstemp`` + ``fdopen`` writes go
    through it, wherever that code lives); returns a counter of the writes slowed."""
    import os

    counter = [0]
    real_fdopen = os.fdopen

    def fdopen(*args: Any, **kwargs: Any) -> Any:
        return _SlowFile(real_fdopen(*args, **kwargs), piece, pause, counter)

    os.fdopen = fdopen
    return counter


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["crash", "stress", "async", "streams"])
    parser.add_argument("--root", required=True)
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--store", default="file://cassettes")
    parser.add_argument("--mode", default="record", choices=["record", "refresh"])
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--pad", type=int, default=0)
    parser.add_argument("--slow-writes", type=int, default=0)
    parser.add_argument("--proc", type=int, default=0)
    parser.add_argument("--shared", type=int, default=100)
    parser.add_argument("--own", type=int, default=100)
    args = parser.parse_args(argv)

    import httpx2
    import openai

    from llm_cache import LLMCache
    from llm_cache.settings import DEFAULT_TTL

    slowed = slow_down_writes(args.slow_writes) if args.slow_writes else [0]
    ttl = timedelta(microseconds=1) if args.mode == "refresh" else DEFAULT_TTL
    cache = LLMCache(args.store, root=args.root, mode=args.mode, ttl=ttl, log_every=None)
    client = openai.OpenAI(base_url=args.base_url, api_key="sk-reliability-0000", max_retries=0,
                           http_client=httpx2.Client(transport=cache.transport(), timeout=60))

    def ask(text: str) -> str:
        reply = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": text}])
        content = reply.choices[0].message.content or ""
        if not content.startswith("echo: " + text[:40]):
            raise SystemExit(f"wrong answer for {text[:40]!r}: {content[:80]!r}")
        return content

    if args.what == "async":
        import asyncio

        transport = httpx2.AsyncHTTPTransport(limits=httpx2.Limits(max_connections=8))
        aclient = openai.AsyncOpenAI(base_url=args.base_url, api_key="sk-reliability-0000", max_retries=0,
                                     http_client=httpx2.AsyncClient(transport=cache.async_transport(transport),
                                                                    timeout=60))

        async def ask_all() -> None:
            texts = [f"async question {i}" for i in range(args.count)]
            replies = await asyncio.gather(*[
                aclient.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": t}])
                for t in texts
            ])
            for text, reply in zip(texts, replies):
                if reply.choices[0].message.content != "echo: " + text:
                    raise SystemExit(f"wrong answer for {text!r}")

        print("ready", flush=True)
        asyncio.run(ask_all())
    elif args.what == "streams":
        from contextlib import ExitStack

        raw = httpx2.Client(transport=cache.transport(), timeout=60)
        url = args.base_url + "/chat/completions"
        print("ready", flush=True)
        with ExitStack() as stack:
            opened = [
                (text, stack.enter_context(raw.stream("POST", url, json={
                    "model": "gpt-4o", "messages": [{"role": "user", "content": text}]})))
                for text in (f"open question {i}" for i in range(args.count))
            ]
            for text, response in opened:
                response.read()
                if response.json()["choices"][0]["message"]["content"] != "echo: " + text:
                    raise SystemExit(f"wrong answer for {text!r}")
    elif args.what == "crash":
        pad = " " + _filler(args.pad) if args.pad else ""
        print("ready", flush=True)
        for i in range(args.first, args.first + args.count):
            ask(f"crash question {i}{pad}")
            print(f"done {i}", flush=True)
    else:
        prompts: list[str] = []
        for j in range(max(args.shared, args.own)):
            if j < args.shared:
                prompts.append(f"shared question {j}")
            if j < args.own:
                prompts.append(f"process {args.proc} question {j}")
        print("ready", flush=True)
        sys.stdin.readline()  # start together
        for text in prompts:
            ask(text)
    stats = cache.stats()
    cache.close()
    stats["slowed_writes"] = slowed[0]
    print(json.dumps(stats), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
