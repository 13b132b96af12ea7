"""Cassette corpora for the benchmarks, made fast from one real cassette used as a text template.

One non-streamed and one streamed chat completion are recorded through the cache (record
mode, against the local FakeLLMServer), with a marker number in the prompt. Every other
cassette is that text with the key, the prompt number and the recording time substituted:
no API call and no YAML dump per file. The key of cassette ``i`` is computed by
``llm_cache.key.make_key`` from exactly the body the OpenAI SDK sends for prompt ``i``, and
each corpus is checked by replaying a few of its cassettes through the cache.

Corpus layout: ``<dir>/gpt-4o/<key[:16]>.yaml``; cassette ``i`` asks
``"bench question {i}"``, streamed when ``i`` is odd, answered ``"echo: bench question {i}"``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # fakeapi.FakeLLMServer, redis_server.RedisServer

import openai

from llm_cache.cassette import load_entry
from llm_cache.adapters.patches import intercept
from llm_cache.key import KeyRules, make_key
from llm_cache.modes import Mode
from llm_cache.engine.session import CacheSession
from llm_cache.settings import Settings

BASE_URL = "http://bench.test/v1"
URL = BASE_URL + "/chat/completions"
MODEL = "gpt-4o"
MARKER = "918273645"  # the prompt number of the template cassettes, replaced per cassette
_RULES = KeyRules()


def prompt(i: int) -> str:
    return f"bench question {i}"


def answer(i: int) -> str:
    return f"echo: {prompt(i)}"


def is_stream(i: int) -> bool:
    return i % 2 == 1


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt(i)}]


def sdk_body(i: int, stream: bool) -> bytes:
    """The request body the OpenAI SDK sends for prompt ``i`` (same fields, same order)."""
    doc: dict[str, Any] = {"model": MODEL}
    if stream:
        doc["stream"] = True
    doc["messages"] = messages(i)
    return json.dumps(doc, separators=(",", ":")).encode("utf-8")


def key_of(i: int, stream: bool) -> str:
    return make_key("POST", URL, sdk_body(i, stream), {}, _RULES).key


def call(client: openai.OpenAI, i: int, stream: bool) -> Any:
    """One SDK chat completion for prompt ``i``; a stream is read to its end."""
    if not stream:
        return client.chat.completions.create(model=MODEL, messages=messages(i))  # type: ignore[arg-type]
    last = None
    for chunk in client.chat.completions.create(model=MODEL, messages=messages(i), stream=True):  # type: ignore[arg-type]
        last = chunk
    return last


def streamed_text(client: openai.OpenAI, i: int) -> str:
    parts = []
    for chunk in client.chat.completions.create(model=MODEL, messages=messages(i), stream=True):  # type: ignore[arg-type]
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    return "".join(parts)


@dataclass
class Template:
    """A cassette's text cut at the places that change from one cassette to the next."""

    parts: list[str]  # text, key, text, recorded_at, text, number, text, number, text
    response_bytes: bytes  # the body replay gives for the template's own prompt
    content_type: str


def _cut(text: str, key: str, recorded: str) -> list[str]:
    if text.count(key) != 1 or text.count(recorded) != 1 or text.count(MARKER) != 2:
        raise RuntimeError("template cassette does not have the expected layout:\n" + text)
    head, rest = text.split(key)
    middle, rest = rest.split(recorded)
    a, b, c = rest.split(MARKER)
    return [head, middle, a, b, c]


@dataclass
class Templates:
    non_stream: Template
    stream: Template

    def of(self, stream: bool) -> Template:
        return self.stream if stream else self.non_stream


def record_templates(workdir: Path) -> Templates:
    """Record the two template cassettes through the cache against the local fake API."""
    from fakeapi import FakeLLMServer

    target = workdir / "template"
    shutil.rmtree(target, ignore_errors=True)
    with FakeLLMServer(gzip_json=False) as server:
        session = CacheSession(Settings(mode=Mode.RECORD, cassette_dir=target))
        scope = session.scope("bench-template")
        client = openai.OpenAI(base_url=server.openai_base_url, api_key="x", max_retries=0)
        try:
            with intercept(scope):
                client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"bench question {MARKER}"}])
                for _ in client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": f"bench question {MARKER}"}], stream=True
                ):
                    pass
        finally:
            client.close()
    if scope.stats.recorded != 2:
        raise RuntimeError(f"recording the template cassettes failed: {scope.stats}")
    made: dict[bool, Template] = {}
    for path in sorted((target / MODEL).glob("*.yaml")):
        text = path.read_text(encoding="utf-8")
        entry = load_entry(text, str(path))
        stream = entry.response_body.kind == "events"
        recorded = text.split("recorded_at: '", 1)[1].split("'", 1)[0]
        made[stream] = Template(
            parts=_cut(text, entry.key, recorded),
            response_bytes=entry.response_bytes(),
            content_type=entry.response_headers.get("content-type", "application/json"),
        )
    if set(made) != {False, True}:
        raise RuntimeError("expected one streamed and one non-streamed template cassette")
    return Templates(non_stream=made[False], stream=made[True])


def cassette_text(t: Template, key: str, recorded: str, number: str) -> str:
    p = t.parts
    return p[0] + key + p[1] + recorded + p[2] + number + p[3] + number + p[4]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def write_corpus(templates: Templates, target: Path, count: int) -> float:
    """``count`` cassettes under ``target/gpt-4o``; returns the seconds it took."""
    started = time.perf_counter()
    directory = target / MODEL
    directory.mkdir(parents=True, exist_ok=True)
    # recorded over the last hours, one a tenth of a second apart: fresh, and distinct for eviction
    base = datetime.now(timezone.utc) - timedelta(seconds=count / 10 + 60)
    step = timedelta(milliseconds=100)
    for i in range(count):
        stream = is_stream(i)
        key = key_of(i, stream)
        text = cassette_text(templates.of(stream), key, _stamp(base + i * step), str(i))
        with open(directory / (key[:16] + ".yaml"), "w", encoding="utf-8") as handle:
            handle.write(text)
    return time.perf_counter() - started


def verify_corpus(target: Path, count: int) -> None:
    """Replay the first and last cassettes of both kinds through the cache; raise if one misses."""
    session = CacheSession(Settings(mode=Mode.REPLAY, cassette_dir=target))
    scope = session.scope("bench-verify")
    client = openai.OpenAI(base_url=BASE_URL, api_key="x", max_retries=0)
    picks = sorted({i for i in (0, 1, count - 2, count - 1) if 0 <= i < count})
    try:
        with intercept(scope):
            for i in picks:
                if is_stream(i):
                    got = streamed_text(client, i)
                else:
                    got = client.chat.completions.create(model=MODEL, messages=messages(i)).choices[0].message.content  # type: ignore[arg-type]
                if got != answer(i):
                    raise RuntimeError(f"corpus {target}: cassette {i} replayed {got!r}, expected {answer(i)!r}")
    finally:
        client.close()
    if scope.stats.hits != len(picks):
        raise RuntimeError(f"corpus {target}: expected {len(picks)} hits, got {scope.stats}")


META_DIR = ".llm-cache"  # what the cache keeps beside the cassettes: usage index, locks, parsed copies


def clean_derived(directory: Path) -> None:
    """Remove what sessions left beside the cassettes, so the next read is a first read ever."""
    if (directory / META_DIR).exists():
        shutil.rmtree(directory / META_DIR, ignore_errors=True)


def derived_files(directory: Path) -> int:
    """How many files sessions left under ``.llm-cache/`` (parsed copies, mostly), bounded walk."""
    count = 0
    for _root, _dirs, files in os.walk(directory / META_DIR):
        count += sum(1 for f in files if not f.startswith(".") and f != "usage.json" and not f.endswith(".lock"))
    return count


class Corpora:
    """Corpora by size, made once per run under ``workdir`` and reused."""

    def __init__(self, workdir: Path, templates: Templates) -> None:
        self.workdir = workdir
        self.templates = templates
        self.made: dict[int, Path] = {}
        self.seconds: dict[int, float] = {}

    def get(self, count: int) -> Path:
        if count not in self.made:
            target = self.workdir / f"corpus-{count}"
            shutil.rmtree(target, ignore_errors=True)
            self.seconds[count] = write_corpus(self.templates, target, count)
            verify_corpus(target, count)
            clean_derived(target)
            self.made[count] = target
        return self.made[count]

    def clean(self, count: int) -> None:
        """Remove what sessions left beside the cassettes (usage index, locks, parsed copies)."""
        if count in self.made:
            clean_derived(self.made[count])


def link_copy(source: Path, target: Path) -> None:
    """A copy of a corpus made of hard links (fast; deleting in it leaves the source alone)."""
    shutil.rmtree(target, ignore_errors=True)
    for directory in source.iterdir():
        if not directory.is_dir() or directory.name.startswith("."):
            continue
        (target / directory.name).mkdir(parents=True)
        with os.scandir(directory) as it:
            for item in it:
                os.link(item.path, target / directory.name / item.name)


def corpus_bytes(target: Path) -> tuple[int, int, int]:
    """(files, apparent bytes, allocated bytes) of the cassettes under ``target``."""
    files = size = allocated = 0
    for directory in target.iterdir():
        if not directory.is_dir() or directory.name.startswith("."):
            continue
        with os.scandir(directory) as it:
            for item in it:
                if item.name.endswith(".yaml"):
                    st = item.stat()
                    files += 1
                    size += st.st_size
                    allocated += st.st_blocks * 512
    return files, size, allocated


def write_vcr_cassette(templates: Templates, path: Path, count: int) -> None:
    """A vcrpy cassette with ``count`` interactions, the same requests and responses as the corpus."""
    import yaml

    interactions = []
    for i in range(count):
        stream = is_stream(i)
        t = templates.of(stream)
        body = t.response_bytes.decode("utf-8").replace(MARKER, str(i))
        interactions.append({
            "request": {
                "method": "POST",
                "uri": URL,
                "body": sdk_body(i, stream).decode("utf-8"),
                "headers": {"Content-Type": ["application/json"]},
            },
            "response": {
                "status": {"code": 200, "message": "OK"},
                "headers": {
                    "content-type": [t.content_type],
                    "content-length": [str(len(body.encode("utf-8")))],
                },
                "body": {"string": body},
            },
        })
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.dump({"interactions": interactions, "version": 1}, Dumper=dumper), encoding="utf-8")


def vcr_context(path: Path) -> Any:
    import vcr

    return vcr.VCR().use_cassette(
        str(path), record_mode="none", match_on=["method", "path", "body"], allow_playback_repeats=True
    )


def verify_vcr_cassette(path: Path, count: int) -> None:
    client = openai.OpenAI(base_url=BASE_URL, api_key="x", max_retries=0)
    try:
        with vcr_context(path):
            for i in sorted({0, 1, count - 1}):
                got = (
                    streamed_text(client, i)
                    if is_stream(i)
                    else client.chat.completions.create(model=MODEL, messages=messages(i)).choices[0].message.content  # type: ignore[arg-type]
                )
                if got != answer(i):
                    raise RuntimeError(f"vcrpy cassette {path}: interaction {i} replayed {got!r}")
    finally:
        client.close()
