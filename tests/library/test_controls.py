"""Per-request controls (x-llm-cache, options(), @cached(...)), x-llm-cache-status, and stale
answers on purpose (stale_while_revalidate, stale_if_error), through the openai SDK
against the local server."""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from fakeapi import FakeLLMServer

from llm_cache import LLMCache, LLMCacheWarning, carry
from llm_cache.engine.controls import parse_controls
from llm_cache.verify import check_file


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


def client_of(server: FakeLLMServer, cache: LLMCache, base: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=base or server.openai_base_url, api_key="sk-ctl-test-0000000", max_retries=0,
                         http_client=httpx2.Client(transport=cache.transport()))


def ask(client: openai.OpenAI, text: str = "hello", directives: str | None = None) -> tuple[str, str]:
    """The answer's text and its x-llm-cache-status."""
    extra = {"x-llm-cache": directives} if directives else None
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": text}], extra_headers=extra,
    )
    return raw.parse().choices[0].message.content or "", raw.headers["x-llm-cache-status"]


def test_status_says_miss_then_hit(fake_api: FakeLLMServer) -> None:
    client = client_of(fake_api, LLMCache())
    assert ask(client)[1] == "miss"
    assert ask(client)[1] == "hit"
    assert fake_api.count() == 1


def test_the_header_never_goes_upstream_nor_into_a_cassette(fake_api: FakeLLMServer, tmp_path: Path) -> None:
    cache = LLMCache("file://cassettes", root=tmp_path)
    client = client_of(fake_api, cache)
    ask(client, directives="no-cache, ttl=1h")
    assert fake_api.calls and all("x-llm-cache" not in call.headers for call in fake_api.calls)
    [cassette] = (tmp_path / "cassettes").rglob("*.yaml")
    assert "x-llm-cache" not in cassette.read_text().lower()


def test_no_cache_calls_the_api_and_stores_the_answer(fake_api: FakeLLMServer) -> None:
    cache = LLMCache()
    client = client_of(fake_api, cache)
    assert ask(client) == ("echo: hello", "miss")
    fake_api.generation = 2
    assert ask(client, directives="no-cache") == ("echo: hello (gen 2)", "refresh")
    assert fake_api.count() == 2
    assert ask(client) == ("echo: hello (gen 2)", "hit")  # what no-cache fetched was stored
    # counted as its status says: one recorded (the miss), one refreshed (the no-cache call)
    stats = cache.stats()
    assert (stats["recorded"], stats["refreshed"], stats["hits"]) == (1, 1, 1)


def test_no_store_looks_up_but_keeps_nothing(fake_api: FakeLLMServer) -> None:
    cache = LLMCache()
    client = client_of(fake_api, cache)
    assert ask(client, "a", directives="no-store")[1] == "miss"
    assert ask(client, "a", directives="no-store")[1] == "miss"
    assert fake_api.count() == 2 and cache.stats()["entries"] == 0
    assert cache.stats()["not_stored_reasons"] == {"no-store": 2}
    ask(client, "b")
    assert ask(client, "b", directives="no-store")[1] == "hit"  # looked up all the same


def test_ttl_is_this_calls_freshness_limit(fake_api: FakeLLMServer) -> None:
    clock = Clock()
    cache = LLMCache(ttl="30d", clock=clock)
    client = client_of(fake_api, cache)
    ask(client)
    clock.advance(hours=2)
    assert ask(client)[1] == "hit"
    fake_api.generation = 3
    assert ask(client, directives="ttl=1h") == ("echo: hello (gen 3)", "refresh")
    assert fake_api.count() == 2


def test_namespaces_are_separate_caches_and_paths(fake_api: FakeLLMServer, tmp_path: Path) -> None:
    cache = LLMCache("file://cassettes", root=tmp_path)
    client = client_of(fake_api, cache)
    assert ask(client, directives="namespace=tenant-a")[1] == "miss"
    assert ask(client, directives="namespace=tenant-b")[1] == "miss"
    assert ask(client)[1] == "miss"
    assert ask(client, directives="namespace=tenant-a")[1] == "hit"
    assert fake_api.count() == 3
    dirs = sorted(p.name for p in (tmp_path / "cassettes").iterdir() if not p.name.startswith("."))
    assert dirs == ["gpt-4o", "tenant-a+gpt-4o", "tenant-b+gpt-4o"]
    # each holds the key of its request, its namespace included: verify finds them sound
    files = sorted((tmp_path / "cassettes").rglob("*.yaml"))
    assert len(files) == 3
    assert [problem for path in files for problem in check_file(path)] == []


@pytest.mark.parametrize("directive", ["no-cashe", "ttl=soon", "namespace=a/b", "namespace=", "no-cache=1",
                                       "ttl=1h, ttl=2h", "namespace=a,namespace=b"])
def test_a_bad_directive_is_a_value_error_naming_the_forms_before_any_call(
    fake_api: FakeLLMServer, directive: str
) -> None:
    cache = LLMCache()
    with httpx2.Client(transport=cache.transport()) as http:
        with pytest.raises(ValueError, match="no-cache, no-store, ttl=DURATION .* or namespace=NAME"):
            http.post(f"{fake_api.openai_base_url}/chat/completions", headers={"x-llm-cache": directive},
                      json={"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert fake_api.count() == 0


SECRET = "tok_9f8e7d6c5b4a39281706ZQ"


@pytest.mark.parametrize("directive", [f"no-store, {SECRET}", f"ttl={SECRET}", f"namespace={SECRET}+x",
                                       f"ttl=1h, ttl={SECRET}"])
def test_a_bad_directive_that_could_be_a_secret_is_shown_by_its_length(directive: str) -> None:
    """A credential put in the header by mistake (or meant for another header) is not
    echoed in the error, which a log or a CI page would keep."""
    from llm_cache import ControlError, LLMCacheError

    with pytest.raises(ControlError) as info:
        parse_controls(directive)
    assert SECRET not in str(info.value) and SECRET[:12] not in str(info.value)
    assert "characters>" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, LLMCacheError)
    with pytest.raises(ControlError, match="'no-cashe' is not a directive"):  # an ordinary typo is shown
        parse_controls("no-cashe")
    with pytest.raises(ControlError) as options:
        LLMCache().options(ttl=SECRET)
    assert SECRET not in str(options.value)


@pytest.mark.parametrize("how", ["header", "options", "cached"])
def test_a_namespace_that_is_a_credential_is_refused_before_any_call(
    fake_api: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A namespace is written into cassette paths, the summary and the reports: a tenant's
    API key given as its name (a key's shape, or a secret environment value) is refused,
    and the error shows it by its length only."""
    shaped = "sk-" + "T3nantKey" * 5  # an OpenAI key's shape, 48 characters: a valid name otherwise
    monkeypatch.setenv("TENANT_API_KEY", "tnt-4f9a2c7e1b8d6053")
    cache = LLMCache("file://cassettes", root=tmp_path)
    for namespace in (shaped, "tnt-4f9a2c7e1b8d6053"):
        with pytest.raises(ValueError) as info:
            if how == "header":
                ask(client_of(fake_api, cache), directives=f"namespace={namespace}")
            elif how == "options":
                cache.options(namespace=namespace)
            else:
                cache.cached(namespace=namespace)
        message = str(info.value)
        assert namespace not in message and namespace[:10] not in message
        assert f"<a value of {len(namespace)} characters>" in message and "tenant's name or id" in message
    assert fake_api.count() == 0 and not (tmp_path / "cassettes").exists()
    with cache.options(namespace="tenant-a"):  # an ordinary name is taken
        pass


def test_a_namespace_holding_the_requests_own_key_or_an_environment_secret_is_refused(
    fake_api: FakeLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant's key of no known shape, sent as the request's API key and given as its
    namespace (or inside one), is known by the request it came with."""
    tenant_key = "tnt-9f8e7d6c5b4a39281706"
    monkeypatch.setenv("SVC_TOKEN", "zq9f8e7d6c5b4a39281706xx")
    cache = LLMCache("file://cassettes", root=tmp_path)
    client = openai.OpenAI(base_url=fake_api.openai_base_url, api_key=tenant_key, max_retries=0,
                           http_client=httpx2.Client(transport=cache.transport()))
    for namespace in (tenant_key, f"acme_{tenant_key}"):
        with pytest.raises(ValueError, match="holds the API key the request carries") as info:
            ask(client, directives=f"namespace={namespace}")
        assert tenant_key not in str(info.value)
    with pytest.raises(ValueError, match="holds a secret environment value") as env:
        cache.options(namespace="acme_zq9f8e7d6c5b4a39281706xx")
    assert "zq9f8e7d6c5b" not in str(env.value)
    assert fake_api.count() == 0 and not list(tmp_path.rglob("*.yaml"))
    assert ask(client, directives="namespace=acme")[1] == "miss"  # a tenant's name is taken
    # and so is a tenant's id that the request carries in a header of its own
    tenant_id = "3f2a9c1e-7b4d-4e8a-9c21-5d6f7a8b9c0d"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hello"}],
        extra_headers={"x-llm-cache": f"namespace={tenant_id}", "x-tenant-id": tenant_id},
    )
    assert raw.headers["x-llm-cache-status"] == "miss"


def test_bad_options_raise_at_once() -> None:
    cache = LLMCache()
    with pytest.raises(ValueError, match="namespace"):
        cache.options(namespace="no spaces")
    with pytest.raises(ValueError, match="ttl"):
        cache.options(ttl="soon")
    with pytest.raises(ValueError, match="namespace"):
        cache.cached(namespace="../up")


def test_options_apply_inside_the_block_to_threads_given_them_and_tasks(fake_api: FakeLLMServer) -> None:
    cache = LLMCache()
    client = client_of(fake_api, cache)
    ask(client)
    seen: dict[str, str] = {}
    with cache.options(namespace="exp-1"):
        seen["block"] = ask(client)[1]
        worker = threading.Thread(target=carry(lambda: seen.__setitem__("thread", ask(client)[1])))
        worker.start()
        worker.join()
        bare = threading.Thread(target=lambda: seen.__setitem__("bare thread", ask(client)[1]))
        bare.start()
        bare.join()

        async def in_a_task() -> str:
            aclient = openai.AsyncOpenAI(base_url=fake_api.openai_base_url, api_key="sk-ctl-test-0000000",
                                         max_retries=0, http_client=httpx2.AsyncClient(transport=cache.async_transport()))
            raw = await aclient.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
            return raw.headers["x-llm-cache-status"]

        async def main() -> str:
            return await asyncio.create_task(in_a_task())

        seen["task"] = asyncio.run(main())
    seen["after"] = ask(client)[1]
    # the namespace's first call missed; the thread given it and the task hit its entry; a
    # thread not given it, and calls after the block, use the default cache
    assert seen == {"block": "miss", "thread": "hit", "bare thread": "hit", "task": "hit", "after": "hit"}
    assert fake_api.count() == 2


def test_options_are_reusable_and_async_with_takes_them(fake_api: FakeLLMServer) -> None:
    cache = LLMCache()
    client = client_of(fake_api, cache)
    tenant = cache.options(namespace="tenant-r")
    with tenant:
        assert ask(client)[1] == "miss"
    with tenant:  # the same object again
        assert ask(client)[1] == "hit"
        with tenant:
            assert ask(client)[1] == "hit"
        assert ask(client)[1] == "hit"
    assert ask(client)[1] == "miss"  # outside: the default cache, not the tenant's

    async def main() -> list[str]:
        aclient = openai.AsyncOpenAI(base_url=fake_api.openai_base_url, api_key="sk-ctl-test-0000000",
                                     max_retries=0, http_client=httpx2.AsyncClient(transport=cache.async_transport()))

        async def one(options: Any) -> str:
            async with options:  # from concurrent tasks, the same object
                await asyncio.sleep(0.01)
                raw = await aclient.chat.completions.with_raw_response.create(
                    model="gpt-4o", messages=[{"role": "user", "content": "hello"}])
                return raw.headers["x-llm-cache-status"]

        return list(await asyncio.gather(one(tenant), one(tenant), one(cache.options(no_store=True))))

    assert asyncio.run(main()) == ["hit", "hit", "hit"]
    assert fake_api.count() == 2


def test_options_leave_nothing_behind_in_a_long_lived_context() -> None:
    import contextvars

    cache = LLMCache()
    before = len(contextvars.copy_context())
    for n in range(500):  # a server's thread: a block per request
        with cache.options(namespace=f"t{n % 7}"):
            pass
    assert len(contextvars.copy_context()) <= before + 2  # the controls' own variables, not one per block


def test_a_transport_given_to_the_wrong_kind_of_client_says_which_to_use(fake_api: FakeLLMServer) -> None:
    cache = LLMCache()
    sync_one = openai.OpenAI(base_url=fake_api.openai_base_url, api_key="sk-ctl-test-0000000", max_retries=0,
                             http_client=httpx2.Client(transport=cache.async_transport()))
    with pytest.raises(TypeError, match=r"a sync one \(OpenAI, httpx2.Client\) takes cache.transport\(\)"):
        sync_one.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    async_one = openai.AsyncOpenAI(base_url=fake_api.openai_base_url, api_key="sk-ctl-test-0000000", max_retries=0,
                                   http_client=httpx2.AsyncClient(transport=cache.transport()))
    with pytest.raises(TypeError, match=r"an async one \(AsyncOpenAI, httpx2.AsyncClient\) takes cache.async_transport"):
        asyncio.run(async_one.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}]))
    with pytest.raises(TypeError, match="wrap an httpx or httpx2 transport .*got 'nope'"):
        cache.transport("nope")
    assert fake_api.count() == 0


def test_cached_takes_the_directives_and_tells_its_last_status() -> None:
    cache = LLMCache()
    calls: list[str] = []

    @cache.cached(no_store=True)
    def never_kept(text: str) -> str:
        calls.append(text)
        return text.upper()

    @cache.cached(namespace="fn")
    def kept(text: str) -> str:
        calls.append(text)
        return text[::-1]

    assert never_kept("a") == "A" and never_kept("a") == "A"
    assert never_kept.cache_status == "miss"
    assert kept("ab") == "ba" and kept.cache_status == "miss"
    assert kept("ab") == "ba" and kept.cache_status == "hit"
    assert calls == ["a", "a", "ab"]
    with cache.options(no_cache=True):
        kept("ab")
    assert kept.cache_status == "refresh" and calls[-1] == "ab"


def test_the_library_refreshes_what_has_expired(fake_api: FakeLLMServer) -> None:
    clock = Clock()
    cache = LLMCache(ttl="1h", clock=clock)
    client = client_of(fake_api, cache)
    ask(client)
    clock.advance(hours=2)
    fake_api.generation = 4
    assert ask(client) == ("echo: hello (gen 4)", "refresh")
    assert cache.stats()["refreshed"] == 1 and cache.stats()["stale"] == 0


def _settled(cache: LLMCache, revalidated: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while cache.stats()["revalidated"] < revalidated and time.monotonic() < deadline:
        time.sleep(0.01)


def test_stale_while_revalidate_serves_at_once_and_refreshes_once_behind(fake_api: FakeLLMServer) -> None:
    clock = Clock()
    cache = LLMCache(ttl="1h", stale_while_revalidate="10m", clock=clock)
    client = client_of(fake_api, cache)
    ask(client)
    clock.advance(minutes=65)
    fake_api.generation = 5
    assert ask(client) == ("echo: hello", "stale")  # the old answer, at once
    statuses: list[tuple[str, str]] = []
    start = threading.Barrier(8)

    def caller() -> None:
        start.wait()
        statuses.append(ask(client))

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # each caller got the old answer at once, or the new one once the refresh had landed
    assert set(statuses) <= {("echo: hello", "stale"), ("echo: hello (gen 5)", "hit")}
    _settled(cache, 1)
    assert fake_api.count() == 2  # one refresh behind, for nine callers
    assert ask(client) == ("echo: hello (gen 5)", "hit")
    stats = cache.stats()
    assert stats["revalidated"] == 1 and stats["stale_served"] == 1 + statuses.count(("echo: hello", "stale"))


def test_past_stale_while_revalidate_an_entry_is_fetched_again(fake_api: FakeLLMServer) -> None:
    clock = Clock()
    cache = LLMCache(ttl="1h", stale_while_revalidate="10m", clock=clock)
    client = client_of(fake_api, cache)
    ask(client)
    clock.advance(minutes=75)
    fake_api.generation = 6
    assert ask(client) == ("echo: hello (gen 6)", "refresh")


def test_stale_if_error_serves_the_expired_answer_when_the_api_fails(fake_api: FakeLLMServer) -> None:
    clock = Clock()
    cache = LLMCache("memory://?stale_if_error=1d", ttl="1h", clock=clock)
    client = client_of(fake_api, cache)
    ask(client)
    clock.advance(hours=3)
    fake_api.fail_status = 503
    with pytest.warns(LLMCacheWarning, match="stale_if_error.*HTTP 503"):
        assert ask(client) == ("echo: hello", "stale")
    fake_api.fail_status = None
    dead = client_of(fake_api, cache, base="http://127.0.0.1:9/v1")  # nothing listens there
    with pytest.warns(LLMCacheWarning, match="stale_if_error.*ConnectError"):
        assert ask(dead) == ("echo: hello", "stale")
    assert cache.stats()["stale_served"] == 2
    clock.advance(days=2)  # past stale_if_error: the failure is the caller's
    fake_api.fail_status = 500
    with warnings.catch_warnings():
        # only the cache's own warning is the error here: a socket some earlier test left to the garbage
        # collector warns too, and made this test fail when the collector ran inside this block
        warnings.simplefilter("error", LLMCacheWarning)
        with pytest.raises(openai.InternalServerError):
            ask(client)


def test_stale_if_error_serves_it_on_a_429_too(fake_api: FakeLLMServer) -> None:
    clock = Clock()
    cache = LLMCache("memory://", ttl="1h", stale_if_error="1d", clock=clock)
    client = client_of(fake_api, cache)
    ask(client)
    clock.advance(hours=2)
    fake_api.fail_status = 429  # rate limited: the expired answer beats none
    try:
        with pytest.warns(LLMCacheWarning, match="stale_if_error.*HTTP 429"):
            assert ask(client) == ("echo: hello", "stale")
        fake_api.fail_status = 400  # the caller's own error is not the API failing: raised
        with pytest.raises(openai.BadRequestError):
            ask(client)
    finally:
        fake_api.fail_status = None


def test_stale_while_revalidate_from_the_store_url(fake_api: FakeLLMServer) -> None:
    clock = Clock()
    cache = LLMCache("memory://?stale_while_revalidate=10m", ttl="1h", clock=clock)
    client = client_of(fake_api, cache)
    ask(client)
    clock.advance(minutes=65)
    fake_api.generation = 7
    assert ask(client) == ("echo: hello", "stale")
    _settled(cache, 1)
    assert ask(client) == ("echo: hello (gen 7)", "hit")


def test_directives_through_aiohttp_are_read_and_never_sent(fake_api: FakeLLMServer, tmp_path: Path) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    cache = LLMCache("file://cassettes", root=tmp_path)
    url = fake_api.openai_base_url + "/chat/completions"
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "via aiohttp"}]}

    async def post(directives: str | None) -> tuple[str, str | None]:
        headers = {"x-llm-cache": directives} if directives else {}
        async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers) as r:
            answer = await r.json()
            # vcrpy's aiohttp stub hands back the live response itself: the status is on answers served
            return answer["choices"][0]["message"]["content"], r.headers.get("x-llm-cache-status")

    with cache.intercept():
        assert asyncio.run(post("no-store")) == ("echo: via aiohttp", None)
        assert not list((tmp_path / "cassettes").rglob("*.yaml"))  # no-store: nothing kept
        assert asyncio.run(post(None)) == ("echo: via aiohttp", None)
        [kept] = (tmp_path / "cassettes").rglob("*.yaml")
        assert "json:" in kept.read_text() and "via aiohttp" in kept.read_text()  # the JSON aiohttp sent
        assert asyncio.run(post("ttl=1h")) == ("echo: via aiohttp", "hit")
    assert fake_api.count() == 2
    assert all("x-llm-cache" not in call.headers for call in fake_api.calls)


def test_an_aiohttp_form_is_keyed_and_stored_as_the_form_it_sends(fake_api: FakeLLMServer, tmp_path: Path) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    cache = LLMCache("file://cassettes", root=tmp_path)
    form = {"grant_type": "client_credentials", "client_secret": "cs-aiohttp-0f9e8d7c6b5a"}

    async def post(secret: str) -> str:
        data = {**form, "client_secret": secret}
        async with aiohttp.ClientSession() as session, session.post(fake_api.url + "/v1/echo", data=data) as r:
            return str((await r.json())["body"])

    with cache.intercept():
        assert asyncio.run(post(form["client_secret"])) == "grant_type=client_credentials&client_secret=cs-aiohttp-0f9e8d7c6b5a"
        # another secret, the same request: the form's credential field is not in the key
        assert asyncio.run(post("another-secret-1a2b3c4d")) == "grant_type=client_credentials&client_secret=<redacted>"
    [kept] = (tmp_path / "cassettes").rglob("*.yaml")
    assert "cs-aiohttp" not in kept.read_text() and "client_secret=<redacted>" in kept.read_text()
    assert fake_api.count() == 1


@pytest.mark.parametrize("multipart", [False, True])
def test_an_aiohttp_form_data_body_is_recorded_and_replayed(
    fake_api: FakeLLMServer, tmp_path: Path, multipart: bool
) -> None:
    aiohttp = pytest.importorskip("aiohttp")
    cache = LLMCache("file://cassettes", root=tmp_path)

    async def post(secret: str) -> int:
        form = aiohttp.FormData({"purpose": "batch", "password": secret})
        if multipart:
            form.add_field("file", b'{"b": 1}\n', filename="b.jsonl", content_type="application/jsonl")
        async with aiohttp.ClientSession() as session, session.post(fake_api.url + "/v1/echo", data=form) as r:
            return r.status

    with cache.intercept():
        assert asyncio.run(post("pa55-w0rd-7f3e9d1c5b")) == 200  # it raised TypeError in the cache
        assert asyncio.run(post("pa55-w0rd-7f3e9d1c5b")) == 200  # the same form, whatever its boundary: a hit
    assert fake_api.count() == 1
    [kept] = (tmp_path / "cassettes").rglob("*.yaml")
    assert "pa55-w0rd" not in kept.read_text() and "purpose" in kept.read_text()


def test_status_says_bypass_when_the_cache_stays_out(fake_api: FakeLLMServer) -> None:
    # an application cache that is off: every call goes to the API, and says so
    off = client_of(fake_api, LLMCache(mode="off"))
    assert ask(off) == ("echo: hello", "bypass")
    assert ask(off) == ("echo: hello", "bypass")
    assert fake_api.count() == 2


def test_stale_if_error_for_a_cached_function() -> None:
    clock = Clock()
    cache = LLMCache(ttl="1h", stale_if_error="1d", clock=clock)
    state: dict[str, Any] = {"fail": False}

    @cache.cached
    def lookup(x: int) -> int:
        if state["fail"]:
            raise TimeoutError("upstream timed out")
        return x * 2

    assert lookup(21) == 42
    clock.advance(hours=2)
    state["fail"] = True
    with pytest.warns(LLMCacheWarning, match="TimeoutError"):
        assert lookup(21) == 42
    assert lookup.cache_status == "stale"


def test_stale_while_revalidate_in_an_event_loop_refreshes_in_a_task(fake_api: FakeLLMServer) -> None:
    clock = Clock()
    cache = LLMCache(ttl="1h", stale_while_revalidate="10m", clock=clock)

    async def main() -> list[str]:
        client = openai.AsyncOpenAI(base_url=fake_api.openai_base_url, api_key="sk-ctl-test-0000000", max_retries=0,
                                    http_client=httpx2.AsyncClient(transport=cache.async_transport()))

        async def one() -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "async"}])
            return f"{raw.parse().choices[0].message.content} {raw.headers['x-llm-cache-status']}"

        first = await one()
        clock.advance(minutes=61)
        fake_api.generation = 7
        served = await asyncio.gather(*(one() for _ in range(5)))
        for _ in range(500):  # the refresh task runs on this loop
            if cache.stats()["revalidated"]:
                break
            await asyncio.sleep(0.01)
        return [first, *served, await one()]

    answers = asyncio.run(main())
    assert answers[0] == "echo: async miss"
    assert answers[1:6] == ["echo: async stale"] * 5
    assert answers[6] == "echo: async (gen 7) hit"
    assert fake_api.count() == 2


CHILD = r"""
import sys, time, httpx2, openai
from llm_cache import LLMCache
cache = LLMCache("file://cassettes", root=sys.argv[1], ttl="1s", stale_while_revalidate="10m")
client = openai.OpenAI(base_url=sys.argv[2], api_key="sk-ctl-test-0000000", max_retries=0,
                       http_client=httpx2.Client(transport=cache.transport()))
with open(sys.argv[3], "a") as ready:
    ready.write("x")
while len(open(sys.argv[3]).read()) < 2:  # both processes ready: go together
    time.sleep(0.005)
raw = client.chat.completions.with_raw_response.create(
    model="gpt-4o", messages=[{"role": "user", "content": "slow"}], stream=True)
text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
deadline = time.monotonic() + 4
while not cache.stats()["revalidated"] and time.monotonic() < deadline:
    time.sleep(0.02)
print(raw.headers["x-llm-cache-status"], cache.stats()["revalidated"])
"""


def test_stale_while_revalidate_refreshes_once_across_processes(fake_api: FakeLLMServer, tmp_path: Path) -> None:
    import subprocess
    import sys

    cache = LLMCache("file://cassettes", root=tmp_path, ttl="1s")
    client = client_of(fake_api, cache)
    list(client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "slow"}], stream=True))
    cache.close()
    time.sleep(1.1)  # expired, well within stale_while_revalidate
    fake_api.event_delay = 0.15  # a refresh takes about a second: both processes meet it
    ready = tmp_path / "ready"
    children = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), fake_api.openai_base_url, str(ready)],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [c.communicate(timeout=30)[0].split() for c in children]
    assert sorted(o[0] for o in outputs) == ["stale", "stale"]
    assert sorted(o[1] for o in outputs) == ["0", "1"]  # one of them refreshed, the other did not
    assert fake_api.count() == 2  # the recording and one refresh


def test_repeated_headers_are_all_read(fake_api: FakeLLMServer) -> None:
    cache = LLMCache()
    with httpx2.Client(transport=cache.transport()) as http:
        sent = http.post(f"{fake_api.openai_base_url}/chat/completions",
                         headers=[("x-llm-cache", "namespace=ns1"), ("X-LLM-Cache", "no-store")],
                         json={"model": "gpt-4o", "messages": [{"role": "user", "content": "twice"}]})
    assert sent.headers["x-llm-cache-status"] == "miss"
    assert cache.stats()["entries"] == 0  # no-store, the second header, was read too
    assert all("x-llm-cache" not in call.headers for call in fake_api.calls)


def test_a_cached_functions_directives_are_not_its_inner_calls(fake_api: FakeLLMServer) -> None:
    cache = LLMCache()
    client = client_of(fake_api, cache)

    @cache.cached(no_store=True)
    def summary(text: str) -> str:
        return ask(client, text)[0]

    assert summary("inner") == "echo: inner"
    assert cache.stats()["entries"] == 1  # the inner API call was kept; the function's result not
    assert ask(client, "inner")[1] == "hit"


def test_a_task_cancelled_while_its_answer_is_written_keeps_the_lock_until_written(
    fake_api: FakeLLMServer, tmp_path: Path
) -> None:
    cache = LLMCache("file://cassettes", root=tmp_path, lock_timeout=5)
    store = cache.session.store
    put = store.put

    def slow_put(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.4)  # a slow disk
        return put(*args, **kwargs)

    store.put = slow_put  # type: ignore[method-assign]

    async def main() -> tuple[str, float]:
        client = openai.AsyncOpenAI(base_url=fake_api.openai_base_url, api_key="sk-ctl-test-0000000", max_retries=0,
                                    http_client=httpx2.AsyncClient(transport=cache.async_transport()))

        async def one() -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=[{"role": "user", "content": "cancelled"}])
            return raw.headers["x-llm-cache-status"]

        first = asyncio.create_task(one())
        while not fake_api.count():  # the request is upstream; its answer is being written next
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.15)
        first.cancel()
        started = time.perf_counter()
        second = await one()
        return second, time.perf_counter() - started

    status, waited = asyncio.run(main())
    assert status == "hit"  # it waited for the write, then found the answer
    assert fake_api.count() == 1 and waited < 3
    assert not cache.session._inflight
