"""Per-request controls: the ``x-llm-cache`` header, ``@cached(...)`` and ``cache.options()``.

Directives, comma-separated: ``no-cache`` (do not look up: call the API and store the
answer), ``no-store`` (look up; on a miss call the API and keep nothing), ``ttl=DURATION``
(this call's freshness limit) and ``namespace=NAME`` (a separate cache: it goes into the
key and into the model version label, so into the file store's path).

The header is read by every path of the engine and removed from the request before
anything else sees it: it never goes upstream, into a key or into a cassette.
``options()`` sets controls for the calls made inside a ``with`` block, in its thread
and in the tasks it starts (a context variable); a thread is given them with ``carry``.
"""

from __future__ import annotations

import contextvars
import functools
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from ..errors import ConfigError, ControlError
from ..values import parse_duration

__all__ = ["HEADER", "STATUS_HEADER", "Controls", "carry", "current", "make", "parse_controls", "strip", "take", "using"]

HEADER = "x-llm-cache"
STATUS_HEADER = "x-llm-cache-status"
FORMS = "no-cache, no-store, ttl=DURATION (like 90s, 12h, 30d) or namespace=NAME (letters, digits, . _ -)"
_NAMESPACE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
_UNSET: Any = ...

T = TypeVar("T")


@dataclass(frozen=True)
class Controls:
    """What one call asks of the cache. ``ttl`` is ``...`` when not given (None: never expires)."""

    no_cache: bool = False
    no_store: bool = False
    ttl: timedelta | None | Any = _UNSET
    namespace: str | None = None

    @property
    def empty(self) -> bool:
        return self == NONE

    def over(self, base: Controls) -> Controls:
        """These controls on top of ``base``: flags add up, a value given here wins."""
        return Controls(
            no_cache=self.no_cache or base.no_cache,
            no_store=self.no_store or base.no_store,
            ttl=base.ttl if self.ttl is _UNSET else self.ttl,
            namespace=self.namespace if self.namespace is not None else base.namespace,
        )


NONE = Controls()
_current: contextvars.ContextVar[Controls] = contextvars.ContextVar("llm_cache_controls", default=NONE)


def make(
    *, no_cache: bool = False, no_store: bool = False, ttl: object = _UNSET, namespace: str | None = None,
    where: str = "options",
) -> Controls:
    """Controls from keyword arguments; ``ValueError`` naming the accepted forms."""
    if not isinstance(no_cache, bool) or not isinstance(no_store, bool):
        raise _bad(where, no_cache if not isinstance(no_cache, bool) else no_store, "no_cache/no_store: True or False")
    parsed_ttl: timedelta | None | Any = _UNSET
    if ttl is not _UNSET:
        try:
            parsed_ttl = parse_duration(ttl, f"{where} ttl")
        except ConfigError as exc:
            raise ControlError(f"{where} ttl must be {exc.expected}, got {_shown(ttl)}; "
                               f"{HEADER} directives are {FORMS}") from None
    if namespace is not None and (not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace)):
        raise _bad(where, namespace, "namespace: 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'")
    if namespace is not None:
        _not_a_credential(where, namespace)
    return Controls(no_cache, no_store, parsed_ttl, namespace)


def _not_a_credential(where: str, namespace: str) -> None:
    """A namespace goes into cassette paths, the summary and the reports: one that is or holds
    a credential (a tenant's API key taken as its name: a key's shape, or a secret environment
    value) is refused, shown by its length. Every namespace passes here (``make``), once."""
    from ..leaks import find_secrets
    from ..redact import environment_secrets

    found = find_secrets(namespace)
    if found:
        _refuse(where, namespace, f"looks like a credential ({found[0].kind})")
    if any(secret in namespace for secret in environment_secrets()):
        _refuse(where, namespace, "holds a secret environment value")


def _refuse(where: str, namespace: str, what: str) -> NoReturn:
    raise ControlError(
        f"{where}: the namespace <a value of {len(namespace)} characters> {what}; a namespace is written "
        "into cassette paths, the summary and the reports: give the tenant's name or id, or a hash of the key"
    )


# The headers that carry a request's API key: a namespace holding one of their values is a
# tenant's key taken as its name. Other headers (a tenant id, an organisation) may rightly
# be the namespace itself.
_KEY_HEADERS = ("authorization", "x-api-key", "api-key", "x-goog-api-key")


def check_namespace(controls: Controls, headers: Mapping[str, Any]) -> None:
    """Refuse a namespace that holds the API key of the request it came with (what ``make``
    could not know: its shape and the environment were checked there)."""
    namespace = controls.namespace
    if namespace is None:
        return
    from ..redact import MIN_SECRET_LENGTH

    for name, value in headers.items():
        if isinstance(name, str) and name.lower() in _KEY_HEADERS:
            text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
            key = text.split(None, 1)[-1] if name.lower() == "authorization" else text
            if len(key) >= MIN_SECRET_LENGTH and key in namespace:
                _refuse(HEADER, namespace, "holds the API key the request carries")


def _bad(where: str, value: object, what: str) -> ControlError:
    return ControlError(f"{where}: {_shown(value)} is not a cache directive ({what}); {HEADER} directives are {FORMS}")


def _shown(value: object) -> str:
    """``value`` for a message: by its length only when it could be a secret (a credential
    put in the header by mistake, or meant for another header)."""
    from ..redact import plausible_secret

    text = str(value)
    if isinstance(value, str) and any(plausible_secret(word, 8) for word in re.split(r"[\s=,;:]+", text)):
        return f"<a value of {len(text)} characters>"
    return repr(value)


@functools.lru_cache(maxsize=256)
def parse_controls(text: str) -> Controls:
    """The directives of an ``x-llm-cache`` header value."""
    flags = {"no_cache": False, "no_store": False}
    ttl: object = _UNSET
    namespace = None
    for part in text.split(","):
        directive = part.strip()
        if not directive:
            continue
        name, sep, value = (s.strip() for s in directive.partition("="))
        name = name.lower()
        if name in ("no-cache", "no-store") and not sep:
            flags[name.replace("-", "_")] = True
        elif name == "ttl" and sep:
            if ttl is not _UNSET and ttl != value:  # which one was meant cannot be guessed
                raise ControlError(f"{HEADER}: ttl is given twice ({_shown(ttl)}, {_shown(value)}); give each once: {FORMS}")
            ttl = value
        elif name == "namespace" and sep:
            if namespace is not None and namespace != value:
                raise ControlError(
                    f"{HEADER}: namespace is given twice ({_shown(namespace)}, {_shown(value)}); give each once: {FORMS}"
                )
            namespace = value
        else:
            raise ControlError(f"{HEADER}: {_shown(directive)} is not a directive; the directives are {FORMS}")
    return make(ttl=ttl, namespace=namespace, where=HEADER, **flags)


def strip(headers: MutableMapping[str, Any] | Any) -> Controls | None:
    """The directives of ``headers``' ``x-llm-cache`` header, which is removed from them
    (a dict, httpx's, vcrpy's or aiohttp's headers); None when there is none."""
    if not headers:
        return None
    if not isinstance(headers, dict) and HEADER not in headers:  # the others compare without case
        return None
    values = []
    for name in dict.fromkeys(n for n in headers if isinstance(n, str) and n.lower() == HEADER):
        getall = getattr(headers, "getall", None) or getattr(headers, "get_list", None)  # aiohttp's, httpx's
        found = getall(name) if getall is not None else [headers[name]]
        del headers[name]
        for value in found:
            if isinstance(value, (list, tuple)):
                value = ",".join(str(v) for v in value)
            values.append(value.decode("latin-1") if isinstance(value, bytes) else str(value))
    return parse_controls(",".join(values)) if values else None


def take(headers: MutableMapping[str, Any] | Any) -> Controls:
    """The controls a request asks for: its ``x-llm-cache`` header (removed from
    ``headers``) over those of ``options()``."""
    given = current()
    found = strip(headers)
    return given if found is None else found.over(given)


def current() -> Controls:
    return _current.get()


# What each context entered, innermost last: (the using object, its token). One variable
# for all of them: a variable per object would stay in a thread's context for good.
_entered: contextvars.ContextVar[tuple[tuple[Any, contextvars.Token[Any]], ...]] = contextvars.ContextVar(
    "llm_cache_entered", default=())


class using:
    """Apply ``controls`` (over the enclosing ones) to the calls made inside the block:
    ``with`` or ``async with``, as often as wanted, nested, and from concurrent tasks (each
    context keeps its own stack of what it entered)."""

    def __init__(self, controls: Controls) -> None:
        self.controls = controls

    def __enter__(self) -> Controls:
        token = _current.set(self.controls.over(_current.get()))
        _entered.set((*_entered.get(), (self, token)))
        return _current.get()

    def __exit__(self, *exc: object) -> None:
        entered = _entered.get()
        # this object's last entry in this context (blocks of one context close in order)
        at = max(i for i, (owner, _) in enumerate(entered) if owner is self)
        _entered.set(entered[:at] + entered[at + 1:])
        _current.reset(entered[at][1])

    async def __aenter__(self) -> Controls:
        return self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()


def carry(func: Callable[..., T]) -> Callable[..., T]:
    """``func`` run with the controls in force now, in whatever thread calls it::

        threading.Thread(target=llm_cache.carry(work)).start()
        pool.submit(llm_cache.carry(work), item)
    """
    context = contextvars.copy_context()
    return functools.partial(context.run, func)
