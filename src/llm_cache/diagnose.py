"""Why a request missed: the stored request nearest to it, and the fields they differ in.

A replay miss names the stored request of the same model version, method and path whose
JSON body differs from the request's in the fewest flattened fields (``messages[1].content``,
``temperature``), after the key rules' ignored fields are dropped from both; two bodies
that agree in every field differ in the query or the API-version headers.

Comparing is done on digests (``Digests``): per request, the set of its flattened field
names and the set of short hashes of its (field, value) pairs. The fields two requests
differ in are the names of either minus those of the pairs they share, so a miss compares
sets of strings, not parsed cassettes; bodies of one shape share one set of names. A store
that keeps digests offers ``request_digests`` (the file store keeps them in an index under
``.llm-cache/``); any other store is read entry by entry, within a bound.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import time
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .cassette import Entry
from .key import KeyRules, RequestKey, canonical_body, flatten

__all__ = [
    "CLOSEST_LIMIT",
    "SAME_BODY",
    "SCAN_BUDGET",
    "DigestSource",
    "Digests",
    "closest",
    "differing_fields",
    "entry_digests",
    "field_digests",
    "pair_set",
]

# How many stored requests of the model version a miss compares itself with (the first
# found, in the store's order): bounds the time and memory of a miss in a huge directory.
CLOSEST_LIMIT = 2000
# equally close stored requests read to choose between them: at most this many cassettes parsed
TIES_READ = 8
# A store without digests is read for at most this many seconds per miss.
SCAN_BUDGET = 0.5
# What two requests with equal bodies differ in: the key has nothing else.
SAME_BODY = "query or API-version headers"


class Digests(NamedTuple):
    """A request body as a miss compares it."""

    # its flattened field names (``messages[1].content``)
    names: frozenset[str]
    # a hash of each (name, value) pair: 11 characters of base64, never a space; or those
    # hashes joined by spaces, as an index on disk keeps them (no set built per request)
    pairs: frozenset[str] | str


def pair_set(pairs: frozenset[str] | str) -> frozenset[str]:
    """The pair hashes as a set, from an index's joined string too."""
    return (frozenset(pairs.split(" ")) if pairs else frozenset()) if isinstance(pairs, str) else pairs


def _shared(wanted: frozenset[str], stored: frozenset[str] | str) -> int:
    """How many pair hashes two requests share. In a joined string of 11-character hashes
    (``stores.digests`` checks that it is one) a hash is found exactly where it is one; a
    search per hash, cheaper than making the set once, for the first miss only (the store
    keeps sets after it)."""
    if isinstance(stored, str):
        return len([p for p in wanted if p in stored]) if len(wanted) <= 32 else len(wanted & pair_set(stored))
    return len(wanted & stored)


@runtime_checkable
class DigestSource(Protocol):
    """A store that keeps the digests of its stored requests."""

    def request_digests(
        self, model_version: str, ignore_fields: tuple[str, ...] = (), limit: int | None = None
    ) -> Iterator[tuple[str, str, str, Digests]]:
        """(location, method, path, ``entry_digests``) of each stored request of the model
        version, in the store's order, at most ``limit``."""


def _value_token(value: Any) -> str:
    """A text that two leaf values share exactly when Python finds them equal, as the
    comparison of parsed bodies did (``1 == 1.0 == True``; NaN equals nothing)."""
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, bool):
        return "i" + str(int(value))
    if isinstance(value, int):
        return "i" + str(value)
    if isinstance(value, float):
        if value.is_integer():
            return "i" + str(int(value))
        if math.isnan(value):
            return "nan" + os.urandom(8).hex()
        return "f" + repr(value)
    if value is None:
        return "n"
    if isinstance(value, dict):  # flatten's only containers are empty ones
        return "d" + repr(value)
    if isinstance(value, list):
        return "l" + repr(value)
    return "o" + repr(value)


def _pair(name: str, value: Any) -> str:
    # 64 bits: two different pairs share a hash once in 10**19 comparisons
    token = f"{len(name)}:{name}{_value_token(value)}".encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(hashlib.blake2b(token, digest_size=8).digest())[:11].decode()


def _digests(flat: dict[str, Any]) -> tuple[Digests, dict[str, str]]:
    """The digests of a flattened body, and the name of each pair."""
    named = {_pair(name, value): name for name, value in flat.items()}
    return Digests(frozenset(flat), frozenset(named)), named


_NOTHING = Digests(frozenset(), frozenset())


def field_digests(body: Any) -> Digests:
    """The digests of a canonical JSON body; empty for no JSON body (None)."""
    return _NOTHING if body is None else _digests(flatten(body))[0]


def entry_digests(entry: Entry, ignore_fields: Iterable[str] = ()) -> Digests:
    """The digests of a stored request's body, canonical under ``ignore_fields``."""
    body = entry.request_body
    raw = body.to_bytes() if body.kind == "json" else b""
    if not raw:
        return _NOTHING
    # a stored JSON body that canonical_body does not take for one (a bare scalar) is one
    # field named "" whose value is None, as flatten(None) makes it
    return _digests(flatten(canonical_body(raw, ignore_fields)))[0]


def differing_fields(body: Any, stored: Digests) -> list[str]:
    """The sorted names of the fields in which a canonical body and a stored one differ."""
    wanted, named = _digests(flatten(body)) if body is not None else (_NOTHING, {})
    return sorted((wanted.names | stored.names) - {named[p] for p in pair_set(wanted.pairs) & pair_set(stored.pairs)})


def _scanned(
    store: Any, rk: RequestKey, ignore: tuple[str, ...], limit: int, budget: float
) -> Iterator[tuple[str, str, str, Digests]]:
    deadline = time.monotonic() + budget
    for entry in store.entries(rk.model_version, limit=limit):
        if entry.path == rk.path and entry.method == rk.method:
            yield store.location(entry.key, entry.model_version), entry.method, entry.path, \
                entry_digests(entry, ignore)
        if time.monotonic() >= deadline:
            return


def closest(
    store: Any,
    rk: RequestKey,
    rules: KeyRules,
    *,
    limit: int = CLOSEST_LIMIT,
    budget: float = SCAN_BUDGET,
) -> tuple[str | None, list[str]]:
    """The location of the stored request of ``rk``'s model version, method and path that
    differs least from it, and the sorted names of the fields it differs in; ``(None, [])``
    when there is none.

    The first ``limit`` stored requests of the model version are compared, in the store's
    order; of those equally close, the file store's first ``TIES_READ`` are read and the one
    whose differing values are most alike wins (elsewhere, the first). A store with ``request_digests`` (the
    file store) answers from its digests. Any other (memory, Redis) is read entry by entry,
    at most ``limit`` entries and for at most ``budget`` seconds, then the closest of those
    read is named.
    """
    ignore = tuple(rules.ignore_fields)
    if isinstance(store, DigestSource):
        rows = store.request_digests(rk.model_version, ignore, limit=limit)
    else:
        rows = _scanned(store, rk, ignore, limit, budget)
    wanted = field_digests(rk.body)
    wanted_pairs = pair_set(wanted.pairs)
    # how many names the request and a body of a shape have between them, by shape
    together: dict[frozenset[str], int] = {}
    tied: list[tuple[str, Digests]] = []  # the closest so far, equally close, in the store's order
    best_count = math.inf
    for location, method, path, stored in rows:
        if path != rk.path or method != rk.method:
            continue
        names = stored.names
        union = together.get(names)
        if union is None:
            union = together[names] = len(wanted.names | names)
        # none: the query or headers differ, one difference
        count = union - _shared(wanted_pairs, stored.pairs) or 1
        if count < best_count:
            tied, best_count = [(location, stored)], count
        elif count == best_count and len(tied) < TIES_READ:
            tied.append((location, stored))
    if not tied:
        return None, []
    read = getattr(store, "entry_at", None)  # the file store: its parsed copies make this cheap
    location, stored = _likeliest(rk, tied, read) if len(tied) > 1 and read is not None else tied[0]
    return location, differing_fields(rk.body, stored) or [_rules_changed(read, location, rules) or SAME_BODY]


def _rules_changed(read: Any, location: str, rules: KeyRules) -> str | None:
    """When a stored body equals the request's under this run's rules, what of the rules it
    was recorded under differs (its key was made under those): ``ignore_fields`` added or
    dropped since, say. None when they are the same, or the entry cannot be read."""
    from .errors import LLMCacheError

    if read is None:
        return None
    try:
        entry = read(location)
    except (OSError, ValueError, LLMCacheError):
        return None
    then = sorted((entry.key_rules or {}).get("ignore_fields") or ())
    now = sorted(rules.ignore_fields)
    if then == now:
        return None
    return (f"ignore_fields (recorded ignoring {', '.join(then) or 'nothing'}; this run ignores "
            f"{', '.join(now) or 'nothing'}: re-record it)")


def _alike(a: str, b: str) -> float:
    """How alike two texts are, 0 to 1: the share of their words they have in common. Linear
    in their length (a diff's ratio is quadratic: seconds for two 20 KB prompts)."""
    words_a, words_b = set(a.split()), set(b.split())
    union = words_a | words_b
    return len(words_a & words_b) / len(union) if union else 1.0


def _likeliest(rk: RequestKey, tied: list[tuple[str, Digests]], read: Any) -> tuple[str, Digests]:
    """Of stored requests that differ from ``rk`` in as many fields, the one whose differing
    values are most alike (an edited prompt, not another test's): each is read, once, for
    this. Equals keep the store's order."""
    from .errors import LLMCacheError

    wanted = flatten(rk.body) if rk.body is not None else {}
    scored = []
    for order, (location, stored) in enumerate(tied):
        try:
            entry = read(location)
        except (OSError, ValueError, LLMCacheError):
            continue
        body = entry.request_body.value if entry.request_body.kind == "json" else None
        have = flatten(body) if body is not None else {}
        score = 0.0
        for name in differing_fields(rk.body, stored):
            a, b = wanted.get(name), have.get(name)
            if isinstance(a, str) and isinstance(b, str):
                score += _alike(a, b)
        scored.append((-score, order, location, stored))
    if not scored:
        return tied[0]
    _, _, location, stored = min(scored)
    return location, stored
