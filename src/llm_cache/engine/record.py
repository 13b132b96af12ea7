"""Where an answer that went upstream becomes a stored entry, or is refused with a reason.

Not stored: an error status (unless ``record_errors``), a body whose
Content-Encoding does not decode, an empty or truncated answer (unless allowed),
anything that looks like a secret after redaction. A refresh that replaced an
entry reports what changed (drift).
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..body import STREAM_KINDS, Body, encode_body, encode_request_body
from ..cassette import Entry, dump_entry
from ..encoding import UndecodableBody, decode_content
from ..errors import CassetteError, NotStoredWarning, StoreUnavailable, warn
from ..key import SECRET_QUERY_PARAMS, is_urlencoded, plain_body
from ..leaks import find_entry_secrets
from ..llm import completion_text, read_response, refusal_reason, truncation
from ..modes import Action
from ..providers import stream_complete
from ..redact import (
    MIN_SECRET_LENGTH,
    REDACTED,
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    base64_forms,
    echo_forms,
    environment_secrets,
    keep_headers,
    redact,
    redact_form,
    request_credentials,
)
from ..stats import MAX_DRIFT_TEXT, Drift

if TYPE_CHECKING:
    from .flight import Flight

__all__ = ["akeep", "keep"]

log = logging.getLogger("llm_cache")


def keep(
    flight: Flight, status: int, headers: Sequence[tuple[str, str]], raw: bytes,
    arrivals: Sequence[tuple[int, float]],
) -> None:
    """Store the answer of a flight that went upstream, or count why not."""
    made = _storable(flight, status, headers, raw, arrivals)
    if made is None:
        return
    entry, text = made
    store = flight.scope.session.store
    if flight.action is Action.REFRESH and flight.entry is not None:
        old = flight.entry
        if old._slim:  # the memory tier keeps no parsed body: read the one being replaced
            with contextlib.suppress(CassetteError, StoreUnavailable):  # a store gone: no drift said
                old = store.get(old.key, old.model_version) or old
        _drift(flight, old, entry)
    try:
        where = store.put(entry, text)
    except StoreUnavailable as exc:
        _unkept(flight, entry, exc)
        return
    _stored(flight, entry, where)


def _unkept(flight: Flight, entry: Entry, exc: StoreUnavailable) -> None:
    """A write the store could not take (it went away while the API answered): under
    ``fallback="passthrough"`` the answer, paid for, still reaches the caller, counted not
    stored; otherwise the error is raised, as for a lookup."""
    session = flight.scope.session
    if not session.passthrough:
        raise exc
    log.warning("llm_cache: %s; the answer is passed on, not stored", str(exc).splitlines()[0])
    if session.stats.listeners:
        session.stats.emit("store_error", entry.model_version, "unavailable")
    session.stats.not_stored(flight.scope.stats, "store unavailable", entry.model_version)


async def akeep(
    flight: Flight, status: int, headers: Sequence[tuple[str, str]], raw: bytes,
    arrivals: Sequence[tuple[int, float]],
) -> None:
    """``keep`` for an event loop's task, through the store's ``aio`` side (its round trips awaited)."""
    aio = flight.scope.session.aio
    assert aio is not None
    made = _storable(flight, status, headers, raw, arrivals)
    if made is None:
        return
    entry, text = made
    if flight.action is Action.REFRESH and flight.entry is not None:
        old = flight.entry
        if old._slim:
            with contextlib.suppress(CassetteError, StoreUnavailable):
                old = await aio.get(old.key, old.model_version) or old
        _drift(flight, old, entry)
    try:
        where = await aio.put(entry, text)
    except StoreUnavailable as exc:
        _unkept(flight, entry, exc)
        return
    _stored(flight, entry, where)


_REFUSED = {
    "empty": "the answer is empty (no choices, or no text and no tool call)",
    "truncated": "the answer was cut off by the token limit ({})",
}


CLOSED_EARLY = "the stream was closed before its provider's last event: it would replay cut short"


def closed_early(flight: Flight) -> None:
    """A stream its caller closed, or let go of, before its provider's last event: counted
    ``closed early``, said, and remembered for replay's miss (see ``Recording.closed``)."""
    assert flight.rk is not None
    scope = flight.scope
    scope.session.stats.not_stored(scope.stats, "closed early", flight.rk.model_version)
    _refused(flight, CLOSED_EARLY, "read the stream to its end while recording (replay hands it over event "
                                   "by event: the code under test can still stop early)")


def remember_no_store(flight: Flight) -> None:
    """An answer its request asked not to keep: no warning (it was asked for), but replay's
    miss of it says so instead of "record it"."""
    _note(flight, "the request asked not to store its answer (x-llm-cache: no-store)",
          "leave no-store out of this request where it must replay")


def _refused(flight: Flight, why: str, keep: str) -> None:
    """Say why an answer is not kept, and the setting that keeps such answers: replay would
    otherwise miss it with no word of why recording did not help."""
    rk = flight.rk
    assert rk is not None
    session = flight.scope.session
    if not session.settings.warn_refusals:
        log.debug("not stored %s: %s", rk.prefix, why)
        return
    location = session.store.location(rk.key, rk.model_version)
    then = ("the cassette recorded before stays" if flight.entry is not None
            else "a replay will miss it, and a recording asks again")
    _note(flight, why, keep)
    warn(NotStoredWarning(f"not storing {location}: {why}; {then}. To keep such answers: {keep}"))


def _note(flight: Flight, why: str, keep: str) -> None:
    """Remember the refusal for replay's miss of it (a test's file store; nothing recorded before)."""
    refusals = getattr(flight.scope.session.store, "refusals", None)
    if refusals is not None and flight.entry is None and flight.scope.session.settings.warn_refusals:
        assert flight.rk is not None
        refusals.note(flight.rk.key, why, keep)


def _storable(
    flight: Flight, status: int, headers: Sequence[tuple[str, str]], raw: bytes,
    arrivals: Sequence[tuple[int, float]],
) -> tuple[Entry, str] | None:
    """The entry to store and its text, or None, counted and said why not."""
    scope = flight.scope
    session = scope.session
    stats = session.stats
    settings = session.settings
    rk = flight.rk
    assert rk is not None
    if not 200 <= status < 300 and not settings.record_errors:
        stats.not_stored(scope.stats, "error status", rk.model_version)
        _refused(flight, f"the API answered HTTP {status}", "set llm_cache_record_errors = true")
        return None
    joined = _joined(headers)
    try:
        entry, known = _entry(flight, status, joined, raw, arrivals)
    except UndecodableBody as exc:  # the live client could not read it either, or read it cut short
        stats.not_stored(scope.stats, "undecodable", rk.model_version)
        warn(NotStoredWarning(f"not storing {rk.prefix}: {exc}"))
        return None
    body = entry.response_body  # a stream: events, lines or frames; text or bytes when cut mid-event
    if 200 <= status < 300 and body.kind != "json" and not stream_complete(
        body.to_bytes(), joined.get("content-type")
    ):
        stats.not_stored(scope.stats, "incomplete", rk.model_version)
        warn(
            NotStoredWarning(
                f"not storing {rk.prefix}: the stream ended without its provider's last event "
                "([DONE], message_stop, response.completed): it was cut short"
            )
        )
        return None
    reason = refusal_reason(entry.response_body) if 200 <= status < 300 else None
    if (reason == "empty" and not settings.record_empty) or (reason == "truncated" and not settings.record_truncated):
        stats.not_stored(scope.stats, reason, rk.model_version)
        why = _REFUSED[reason].format(truncation(entry.response_body)) if reason == "truncated" else _REFUSED[reason]
        _refused(flight, why, f"set llm_cache_record_{reason} = true")
        return None
    text = dump_entry(entry)
    location = session.store.location(rk.key, rk.model_version)
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > settings.max_cassette_bytes:  # the loader would refuse it: it could never replay
        stats.not_stored(scope.stats, "too large", rk.model_version)
        warn(
            NotStoredWarning(
                f"not storing {location}: it would be {size} bytes, more than the limit of "
                f"{settings.max_cassette_bytes} bytes a cassette may hold; raise it with the ini "
                "setting llm_cache_max_cassette_size (default 64MiB)"
            )
        )
        return None
    findings = find_entry_secrets(entry, text, settings.secret_allow, known)
    if findings:
        stats.not_stored(scope.stats, "secret-looking", rk.model_version)
        _note(flight, "it would contain what looks like a secret (the warning of the recording said where)",
              "add a regex to llm_cache_secret_allowlist if it is not one")
        kinds = ", ".join(sorted({f"{f.kind} ({f.where}: {f.excerpt})" for f in findings}))
        warn(
            NotStoredWarning(
                f"not storing {location}: it would contain what looks like a secret: {kinds}. "
                "If it is not one, allow it with a regex in llm_cache_secret_allowlist."
            )
        )
        return None
    return entry, text


def _stored(flight: Flight, entry: Entry, location: str) -> None:
    """What follows a write: the memory tier, the counts, the scope's list of cassettes used."""
    scope = flight.scope
    session = scope.session
    stats = session.stats
    flight.stored = True
    session.remember(entry)
    # no-cache is a refresh asked for: counted as x-llm-cache-status says it (flight.status)
    event = "refreshed" if flight.action is Action.REFRESH or flight.controls.no_cache else "recorded"
    stats.bump(scope.stats, event)
    if stats.listeners:
        stats.emit(event, entry.model_version)
    stats.use(entry.key, session.clock(), hit=False)
    scope.used(entry.key, entry.model_version, location)
    refusals = getattr(session.store, "refusals", None)
    if refusals is not None:  # kept now: a note of an earlier refusal is gone
        refusals.forget(entry.key)


def _joined(headers: Sequence[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        name = name.lower()
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


def _request_headers(raw: Mapping[str, Any]) -> dict[str, str]:
    """A client's request headers as plain lower-case ``name -> value`` strings."""
    out = {}
    items = raw.multi_items() if hasattr(raw, "multi_items") else raw.items()
    for name, value in items:
        if isinstance(value, (list, tuple)):
            value = ", ".join(v.decode("latin-1") if isinstance(v, bytes) else str(v) for v in value)
        elif isinstance(value, bytes):
            value = value.decode("latin-1")
        if isinstance(name, bytes):
            name = name.decode("latin-1")
        out[str(name).lower()] = str(value)
    return out


def offsets_for(body: Body, arrivals: Sequence[tuple[int, float]]) -> list[float] | None:
    """When each event of a streamed body had fully arrived, from the chunks' arrival times."""
    if body.kind not in STREAM_KINDS or not arrivals:
        return None
    sizes = [size for size, _ in arrivals]
    out = []
    end = 0
    for chunk in body.chunks():
        end += len(chunk)
        index = min(bisect.bisect_left(sizes, end), len(arrivals) - 1)
        out.append(round(arrivals[index][1], 1))
    return out


def _entry(
    flight: Flight, status: int, headers: dict[str, str], raw: bytes, arrivals: Sequence[tuple[int, float]]
) -> tuple[Entry, dict[str, str]]:
    """The entry to store, redacted, and the secret values it was redacted of (value -> what
    it is), which the search then looks for in binary bodies too."""
    scope = flight.scope
    rk = flight.rk
    assert rk is not None
    encoded = raw
    raw = decode_content(raw, headers.get("content-encoding"))
    body = encode_body(raw, headers.get("content-type"))
    request = flight.request
    request_headers = _request_headers(request.headers)
    # stored as the API read it: the Content-Encoding undone (and not kept among the headers)
    plain = plain_body(request.body or b"", request_headers)
    form = ""
    if is_urlencoded(request_headers.get("content-type")):
        form = plain.decode("utf-8", "replace")
        plain = redact_form(form).encode("utf-8")  # its credential fields, however short
    request_body = encode_request_body(plain, request_headers.get("content-type"))
    fields: list[tuple[str, str]] = []
    if request_body.kind == "multipart":  # its random boundary would change on every recording
        request_headers["content-type"] = "multipart/form-data"
        fields = [(str(p.get("name") or ""), p["text"]) for p in request_body.value if isinstance(p.get("text"), str)]
        request_body = Body("multipart", [_redact_part(p) for p in request_body.value])
    info = read_response(body)
    json_body = request_body.value if request_body.kind == "json" else None  # {"api_key": ...}
    credentials = request_credentials(request_headers, request.url, form, fields, json_body)
    # the environment's secrets as an answer or a URL could carry them too: percent-encoded, JSON-escaped
    environ = {form for value in environment_secrets() for form in echo_forms(value)}
    # and as base64 would show them (pasted encoded into a prompt)
    in_base64 = {v for v in base64_forms(credentials | environ) if len(v) >= MIN_SECRET_LENGTH}
    secrets = sorted(credentials | environ | in_base64, key=lambda v: (-len(v), v))  # longest first
    known = dict.fromkeys(environ, "secret environment value")
    known.update(dict.fromkeys(credentials, "credential the request carried"))
    known.update(dict.fromkeys(in_base64 - known.keys(), "secret value in base64"))
    entry = Entry(
        key=rk.key,
        recorded_at=scope.session.clock(),
        model=rk.model,
        model_version=rk.model_version,
        method=rk.method,
        path=redact(rk.path, secrets),
        query=redact([list(p) for p in rk.query], secrets),
        request_headers=redact(keep_headers(request_headers, REQUEST_HEADERS), secrets),
        request_body=_redact_body(request_body, secrets),
        status=status,
        response_headers=redact(keep_headers(headers, RESPONSE_HEADERS), secrets),
        response_body=_redact_body(body, secrets),
        response_model=info.model,
        system_fingerprint=info.system_fingerprint,
        duration_ms=round((time.perf_counter() - flight.started) * 1000, 1),
        usage=info.usage,
        key_rules=_key_rules(scope.rules, rk),
        offsets_ms=offsets_for(body, arrivals) if raw is encoded else None,
    )
    return entry, known


def _key_rules(rules: Any, rk: Any) -> dict[str, Any] | None:
    out: dict[str, Any] = {}
    if rk.occurrence:
        out["sequence"] = rk.occurrence
    if rules.ignore_fields:
        out["ignore_fields"] = list(rules.ignore_fields)
    if rules.match_host:
        out["host"] = rk.host
    return out or None


def _drift(flight: Flight, old: Entry, new: Entry) -> None:
    """Say what changed when a refresh replaced an entry: snapshot, fingerprint, text."""
    pairs = [
        ("response_model", old.response_model, new.response_model),
        ("system_fingerprint", old.system_fingerprint, new.system_fingerprint),
        ("text", completion_text(old.response_body), completion_text(new.response_body)),
    ]
    for name, before, after in pairs:
        if (before or after) and before != after:
            flight.scope.session.stats.add_drift(
                Drift(flight.scope.test_id, new.key, name, _clip(before or ""), _clip(after or ""))
            )


def _clip(text: str) -> str:
    """A drift's side as it is, up to MAX_DRIFT_TEXT characters, any secret in it redacted
    (the old side is a stored cassette's, which a hand edit may have given one)."""
    from ..redact import masked

    text = masked(text)
    return text if len(text) <= MAX_DRIFT_TEXT else text[: MAX_DRIFT_TEXT - 3] + "..."


def _redact_part(part: dict[str, Any]) -> dict[str, Any]:
    """A described multipart part with the text of a credential field (``SECRET_QUERY_PARAMS``,
    as in a form) replaced, however short it is."""
    text = part.get("text")
    if isinstance(text, str) and text and str(part.get("name") or "").lower() in SECRET_QUERY_PARAMS:
        return {**part, "text": REDACTED}
    return part


def _redact_body(body: Body, secrets: list[str]) -> Body:
    """The body with every secret value replaced, in text and JSON. A binary (base64) body is
    left as it is: rewriting its bytes would corrupt it, so ``find_entry_secrets`` refuses one
    that holds a secret instead."""
    if not secrets or body.kind == "base64":
        return body
    return Body(body.kind, redact(body.value, secrets), body.newline)
