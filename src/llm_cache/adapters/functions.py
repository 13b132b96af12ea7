"""Functions onto the engine: ``@cache.cached()`` keys a call by its name and arguments.

A call becomes a request to ``function://local/<qualified name>`` whose JSON body
holds the bound arguments (and the model version given), so it is keyed, stored,
expired and evicted like any API call; its JSON-serialisable result is the body.
Arguments are keyed by their JSON form: values JSON does not tell apart (a tuple and a
list, ``1`` and ``1.0``, ``{1: x}`` and ``{"1": x}``) share an entry. A method's ``self`` is
keyed by its class and its attributes (``key_self=False``: its class alone), a classmethod's
``cls`` by its name: an instance is no JSON, and two instances of other state must not share.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

from ..engine import behind
from ..engine.controls import NONE as NO_CONTROLS
from ..engine.controls import Controls, using
from ..engine.flight import Flight
from ..engine.scope import Scope
from ..exchange import Request

__all__ = ["cached_function"]

F = TypeVar("F", bound=Callable[..., Any])
_JSON = [("content-type", "application/json")]


def _owner_parameter(func: Callable[..., Any], signature: inspect.Signature) -> str | None:
    """The name of a method's first parameter (``self`` or ``cls``) when ``func`` is defined in
    a class body, else None: an instance is no JSON, so it is keyed by what ``_owner_key`` takes."""
    parts = func.__qualname__.split(".")
    if len(parts) < 2 or parts[-2] == "<locals>":
        return None
    first = next(iter(signature.parameters.values()), None)
    if first is None or first.name not in ("self", "cls") or first.kind not in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
    ):
        return None
    return first.name


def _owner_key(value: Any, key_self: bool) -> Any:
    """What of a method's instance (or a classmethod's class) goes into the key: its class's
    qualified name, and an instance's attributes unless ``key_self`` is off."""
    if isinstance(value, type):
        return {"class": f"{value.__module__}.{value.__qualname__}"}
    kind = type(value)
    key: dict[str, Any] = {"class": f"{kind.__module__}.{kind.__qualname__}"}
    if key_self:
        key["state"] = getattr(value, "__dict__", {})
    return key


def cached_function(
    scope: Scope, func: F, model_version: str | None, controls: Controls = NO_CONTROLS, key_self: bool = True,
) -> F:
    """``func`` answered from ``scope`` (sync or async), under ``controls`` for every call."""
    qualname = f"{func.__module__}.{func.__qualname__}"
    signature = inspect.signature(func)
    owner = _owner_parameter(func, signature)

    def request_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        if owner is not None and owner in arguments:
            arguments[owner] = _owner_key(arguments[owner], key_self)
        payload: dict[str, Any] = {"function": qualname, "arguments": arguments}
        if model_version:
            payload["model"] = model_version
        try:
            body = json.dumps(payload, sort_keys=True).encode("utf-8")
        except TypeError as exc:
            if owner is not None and key_self:
                try:
                    json.dumps({k: v for k, v in arguments.items() if k != owner})
                except TypeError:
                    pass
                else:  # the instance's attributes are what JSON cannot hold
                    raise TypeError(
                        f"@cached {qualname}: a method is keyed by its instance's attributes, which must be "
                        f"JSON-serialisable ({exc}); when its answer does not depend on them, leave them out "
                        "with @cache.cached(key_self=False)"
                    ) from None
            raise TypeError(f"@cached {qualname}: arguments must be JSON-serialisable ({exc})") from None
        return Request("POST", f"function://local/{qualname}", body, {"content-type": "application/json"})

    def encoded(result: Any) -> bytes:
        try:
            return json.dumps(result).encode("utf-8")
        except TypeError as exc:
            raise TypeError(f"@cached {qualname}: the result must be JSON-serialisable ({exc})") from None

    def raw_of(flight: Flight, result: Any) -> bytes:
        try:
            return encoded(result)
        except TypeError:
            flight.abandon()
            raise

    # A call that was stored returns what a hit on it will return: its result through JSON
    # (a tuple as a list, a dict's keys as strings), so a caller never sees its type change
    # between the first call and the next.
    def keep(flight: Flight, result: Any) -> Any:
        raw = raw_of(flight, result)
        flight.record(200, _JSON, raw)
        return json.loads(raw)

    async def akeep(flight: Flight, result: Any) -> Any:
        raw = raw_of(flight, result)
        await flight.arecord(200, _JSON, raw)
        return json.loads(raw)

    def fell_back(flight: Flight, exc: BaseException, wrapper: Any) -> Any:
        """stale_if_error's answer for a call that raised; the wrapper tells its status."""
        answer = json.loads(flight.fall_back(f"{type(exc).__name__}: {exc}").body)
        wrapper.cache_status = flight.status
        return answer

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            with using(controls):  # for the lookup only: calls the function makes are its own
                flight = await scope.abegin(request_for(args, kwargs))
            async_wrapper.cache_status = flight.status  # type: ignore[attr-defined]
            if flight.served:
                answer = json.loads(flight.response().body)
                if flight.revalidate:

                    async def fetch() -> tuple[int, list[tuple[str, str]], bytes]:
                        return 200, list(_JSON), encoded(await func(*args, **kwargs))

                    behind.arevalidate(scope, flight, fetch)
                return answer
            try:
                result = await func(*args, **kwargs)
            except Exception as exc:
                if flight.can_fall_back():
                    return fell_back(flight, exc, async_wrapper)
                await flight.aabandon()  # a lock taken by an await is given back by one
                raise
            except BaseException:
                await flight.aabandon()
                raise
            return await akeep(flight, result) if flight.forwards else result

        async_wrapper.cache_status = None  # type: ignore[attr-defined]
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with using(controls):  # for the lookup only: calls the function makes are its own
            flight = scope.begin(request_for(args, kwargs))
        wrapper.cache_status = flight.status  # type: ignore[attr-defined]
        if flight.served:
            answer = json.loads(flight.response().body)
            if flight.revalidate:
                behind.revalidate(scope, flight, lambda: (200, list(_JSON), encoded(func(*args, **kwargs))))
            return answer
        try:
            result = func(*args, **kwargs)
        except Exception as exc:
            if flight.can_fall_back():
                return fell_back(flight, exc, wrapper)
            flight.abandon()
            raise
        except BaseException:
            flight.abandon()
            raise
        return keep(flight, result) if flight.forwards else result

    wrapper.cache_status = None  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
