"""Functions onto the engine: ``@cache.cached()`` keys a call by its name and arguments.

A call becomes a request to ``function://local/<qualified name>`` whose JSON body
holds the bound arguments (and the model version given), so it is keyed, stored,
expired and evicted like any API call; its JSON-serialisable result is the body.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

from ..engine.flight import Flight
from ..engine.scope import Scope
from ..exchange import Request

__all__ = ["cached_function"]

F = TypeVar("F", bound=Callable[..., Any])
_JSON = [("content-type", "application/json")]


def cached_function(scope: Scope, func: F, model_version: str | None) -> F:
    """``func`` answered from ``scope`` (sync or async)."""
    qualname = f"{func.__module__}.{func.__qualname__}"
    signature = inspect.signature(func)

    def request_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        payload: dict[str, Any] = {"function": qualname, "arguments": dict(bound.arguments)}
        if model_version:
            payload["model"] = model_version
        try:
            body = json.dumps(payload, sort_keys=True).encode("utf-8")
        except TypeError as exc:
            raise TypeError(f"@cached {qualname}: arguments must be JSON-serialisable ({exc})") from None
        return Request("POST", f"function://local/{qualname}", body, {"content-type": "application/json"})

    def keep(flight: Flight, result: Any) -> Any:
        try:
            raw = json.dumps(result).encode("utf-8")
        except TypeError as exc:
            flight.abandon()
            raise TypeError(f"@cached {qualname}: the result must be JSON-serialisable ({exc})") from None
        flight.record(200, _JSON, raw)
        return result

    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            flight = await scope.abegin(request_for(args, kwargs))
            if flight.served:
                return json.loads(flight.response().body)
            try:
                result = await func(*args, **kwargs)
            except BaseException:
                flight.abandon()
                raise
            return keep(flight, result) if flight.forwards else result

        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flight = scope.begin(request_for(args, kwargs))
        if flight.served:
            return json.loads(flight.response().body)
        try:
            result = func(*args, **kwargs)
        except BaseException:
            flight.abandon()
            raise
        return keep(flight, result) if flight.forwards else result

    return wrapper  # type: ignore[return-value]
