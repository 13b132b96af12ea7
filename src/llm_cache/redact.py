"""What never reaches a cassette, a report or a message.

- Request headers are dropped except ``REQUEST_HEADERS``; response headers
  except ``RESPONSE_HEADERS``. Authorization, cookies, organisation and
  request ids never get written.
- Credential query parameters are dropped (see ``key.SECRET_QUERY_PARAMS``).
- Every credential the request carried (``request_credentials``: its
  credential headers, any other header outside the allow-list whose value
  could be a secret, credential query values, cookies, URL userinfo) and the
  value of every environment variable whose name marks a credential (``_KEY``,
  ``_TOKEN``, ``_SECRET``, ``_PASSWORD``... at its end: ``environment_secrets``,
  when the value could be a secret: ``plausible_secret``) is replaced by ``<redacted>`` wherever it
  appears in a text or JSON body, an API that echoes it included.
- A binary (base64) body is never rewritten: bytes cannot be redacted without
  corrupting what they encode. One that holds any of those values, or
  something shaped like a credential, is not stored (``find_entry_secrets``, in
  ``llm_cache.leaks`` with the rest of the search; importable from here too).
- URLs shown to people (store locations, errors, logs) go through ``mask_url``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, urlencode, urlsplit, urlunsplit

from .key import SECRET_QUERY_PARAMS
from .leaks import SECRET_PATTERNS, SecretFinding, find_entry_secrets, find_secrets, shaped

__all__ = [
    "CREDENTIAL_HEADERS",
    "REDACTED",
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "SECRET_PATTERNS",
    "SecretFinding",
    "base64_forms",
    "credential_named",
    "echo_forms",
    "environment_secrets",
    "field_credential",
    "find_entry_secrets",
    "find_secrets",
    "json_credentials",
    "keep_headers",
    "mask_url",
    "masked",
    "plausible_secret",
    "redact",
    "redact_form",
    "redact_shown",
    "request_credentials",
    "secret_values",
]

REDACTED = "<redacted>"

REQUEST_HEADERS = frozenset({"content-type", "openai-beta", "anthropic-version", "anthropic-beta"})
RESPONSE_HEADERS = frozenset({"content-type", "openai-version", "anthropic-version"})
# Headers that carry a credential: every value of 8 characters or more is one, whatever it looks like.
CREDENTIAL_HEADERS = (
    "authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key",
    "openai-organization", "openai-project", "cookie", "x-amz-security-token",
)
# ... and so is the value of any header whose name says it holds one.
_CREDENTIAL_NAME = re.compile(
    r"auth|key|token|secret|passw|passphrase|pwd|cookie|session|signature|credential"
    r"|(?:^|[_-])(?:pass|pw)$"  # pass, db_pass, user-pw; not second_pass_model, pass_id, bypass
)
# Names that hold a credential word and no credential: OpenAI's prompt_cache_key, a sort or
# partition key, a tokenizer, max_tokens, keywords. Taken out of a name before it is read.
_INNOCENT_NAME = re.compile(
    r"(?:prompt[_-]?cache|cache|sort|partition|foreign|idempotency|row|range|hash|object)[_-]?key"
    r"|tokeni[sz](?:ers?|ed|ation)?(?![a-z])"
    r"|^tokens$|(?:max|num|total|prompt|completion|input|output|cached|reasoning)[_-]?"
    r"(?:(?:completion|output|new)[_-]?)?tokens(?![a-z])"
    r"|(?<![a-z])tokens?[_-]?(?:count|usage|limit|ids?)(?![a-z])|keywords?|keyboard|keystrokes?"
    r"|(?:mon|don|tur|hoc|joc|whis)key"
)


def credential_named(name: str) -> bool:
    """Whether a header's, field's or JSON key's name (lowercased) says it holds a credential:
    ``x-api-key``, ``access_token``, ``client_secret``, ``db_pwd``; not ``prompt_cache_key``,
    ``tokenizer``, ``max_tokens`` or ``keywords``."""
    return _CREDENTIAL_NAME.search(name) is not None and _CREDENTIAL_NAME.search(_INNOCENT_NAME.sub("", name)) is not None
# Headers of the protocol or the SDK that never carry a credential; every other header
# outside the allow-list is taken as one when its value could be a secret.
_PROTOCOL_HEADERS = frozenset({
    "host", "user-agent", "accept", "accept-encoding", "accept-language", "connection", "content-length",
    "content-encoding", "transfer-encoding", "cache-control", "pragma", "expect", "te", "origin", "referer",
    "idempotency-key", "traceparent", "tracestate", "anthropic-dangerous-direct-browser-access",
})
_PROTOCOL_PREFIXES = ("x-stainless-",)
# The end of an environment variable's name that marks a credential: ``_KEY`` takes in
# ``OPENAI_API_KEY``, ``OPENAI_KEY``, Django's ``SECRET_KEY`` and ``AWS_SECRET_ACCESS_KEY``.
SECRET_ENV_SUFFIXES = (
    "_KEY", "APIKEY", "SECRETKEY", "_TOKEN", "_SECRET", "_SECRETS", "_PASSWORD", "_PASSWD", "_PASSPHRASE",
    "_PASS", "_PWD", "_CREDENTIAL", "_CREDENTIALS", "_PAT", "_AUTH",
)
SECRET_ENV_NAMES = frozenset({"TOKEN", "SECRET", "PASSWORD", "PASSWD"})
# Names of passwords and passphrases: their values are words as often as not
# ("correct-horse-battery-staple", "purple monkey dishwasher"), so any of 12 characters counts.
_PASSWORD_ENV = ("PASSWORD", "PASSWD", "PASSPHRASE", "_PASS", "_PWD")
MIN_ENV_PASSWORD_LENGTH = 12
# A numbered variable (OPENAI_API_KEY_2) is named as its first is.
_ENV_NUMBER = re.compile(r"_?\d+$")
# A file's path (absolute, from home, relative, or a Windows drive's): an environment value
# that names where a key is kept, not the key.
_FILE_PATH = re.compile(r"(?:/|~/|\./|\.\./|[A-Za-z]:[\\/])\S*$")
# The password of a URL in any variable (DATABASE_URL=postgres://app:PW@db/app).
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:([^@/\s]+)@")
# A credential the request carried: shorter values would redact ordinary words ("test", "1").
MIN_SECRET_LENGTH = 8
# An environment value is a guess (MY_TOKEN may hold anything): it must look like a secret.
MIN_ENV_SECRET_LENGTH = 16
# What splits a value into the parts that ``plausible_secret`` looks at.
_SEPARATORS = re.compile(r"[/\\.:_,;=+@-]+")
# A part that is a word (lower case, Capitalised, CAPITALS or camelCase), a number, or a
# version ("v1", "x86", "py3"): a value made only of those is not a secret.
_ORDINARY_PART = re.compile(r"[A-Z]+|[A-Z]?[a-z]+(?:[A-Z][a-z]+)*|[0-9]+|[A-Za-z]{0,2}[0-9]{1,3}")


def keep_headers(headers: Mapping[str, Any], allowed: frozenset[str]) -> dict[str, str]:
    """The allow-listed headers, names lowercased, several values joined."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in allowed:
            if isinstance(value, (list, tuple)):
                value = ", ".join(str(v) for v in value)
            out[lower] = str(value)
    return out


def plausible_secret(value: str, min_length: int = MIN_ENV_SECRET_LENGTH) -> bool:
    """Whether ``value`` could be a secret: at least ``min_length`` characters, no spaces,
    and not made only of words, numbers and versions between separators (``application/json``,
    ``true``, ``8080``, ``/usr/local/bin``, ``ContentTypeHeaders`` are not)."""
    if len(value) < min_length or any(c.isspace() for c in value):
        return False
    return any(not _ORDINARY_PART.fullmatch(part) for part in _SEPARATORS.split(value) if part)


_ENV_SEEN: tuple[dict[Any, Any], frozenset[str]] | None = None


def environment_secrets(environ: Mapping[str, str] | None = None) -> set[str]:
    """The values of variables named as credentials (``SECRET_ENV_SUFFIXES``: ``*_KEY``,
    ``*_TOKEN``, ``*_SECRET``, ``*_PASSWORD``...) that could be secrets.

    For the process environment the answer is kept while the environment is unchanged
    (tests change it): a recorded call then pays one comparison, not a scan."""
    global _ENV_SEEN
    if environ is None:
        # the environment's undecoded store where CPython has one: copied and compared
        # without decoding every variable
        raw = getattr(os.environ, "_data", None)
        snapshot = dict(raw) if isinstance(raw, dict) else dict(os.environ)
        seen = _ENV_SEEN
        if seen is not None and seen[0] == snapshot:
            return set(seen[1])
        found = environment_secrets(dict(os.environ))
        _ENV_SEEN = (snapshot, frozenset(found))
        return found
    found = set()
    for name, value in environ.items():
        upper = _ENV_NUMBER.sub("", name.upper()) or name.upper()
        if _FILE_PATH.match(value):  # SSH_KEY=/home/runner/.ssh/id_ed25519 names a file, holds no secret
            continue
        named = upper.endswith(SECRET_ENV_SUFFIXES) or upper in SECRET_ENV_NAMES
        if named and (plausible_secret(value) or (
            upper.endswith(_PASSWORD_ENV) and len(value.strip()) >= MIN_ENV_PASSWORD_LENGTH
        )):
            found.add(value)
        url = _URL_PASSWORD.match(value)
        if url is not None:
            password = unquote(url.group(1))
            if plausible_secret(password, MIN_SECRET_LENGTH) or len(password) >= MIN_ENV_PASSWORD_LENGTH:
                found.add(password)
    return found


def _text(item: Any) -> str:
    return item.decode("latin-1") if isinstance(item, bytes) else str(item)


def _authorization(value: str) -> Iterator[str]:
    """The secret parts of an Authorization value, in any scheme: the credentials after the
    scheme, a Basic pair decoded, and each ``name=value`` parameter (AWS Signature V4)."""
    scheme, _, rest = value.strip().partition(" ")
    rest = rest.strip()
    if not rest:
        return
    yield rest
    if scheme.lower() == "basic":
        try:
            pair = base64.b64decode(rest, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            pair = ""
        if pair:
            yield pair
            user, sep, password = pair.partition(":")
            yield password if sep else user
    for param in re.split(r"[,\s]+", rest):
        _, sep, item = param.partition("=")
        if sep and item:
            yield item
            yield item.split("/", 1)[0]  # an AWS access key id before its scope


def _cookies(value: str) -> Iterator[str]:
    for pair in value.split(";"):
        _, sep, item = pair.partition("=")
        if sep:
            yield item.strip().strip('"')


@functools.lru_cache(maxsize=1024)
def _header_secrets(name: str, value: str) -> tuple[str, ...]:
    """``_header_credentials`` kept per header: a client sends the same headers every time."""
    return tuple(_header_credentials(name, value))


@functools.lru_cache(maxsize=1024)
def _forms(item: str) -> tuple[str, ...]:
    """A credential as an answer could echo it: raw, percent-encoded (every character, or
    ``/`` kept as ``urllib.parse.quote`` does by default, ``+`` for a space, lower-case hex,
    twice over) and JSON-escaped."""
    encoded = quote(item, safe="")
    forms = {item, encoded, quote(item), quote_plus(item), json.dumps(item)[1:-1], quote(encoded, safe="")}
    forms |= {_PERCENT.sub(lambda m: m.group(0).lower(), f) for f in tuple(forms) if "%" in f}
    return tuple(sorted(forms, key=lambda f: (f != item, f)))


_PERCENT = re.compile(r"%[0-9A-F]{2}")


# Fields of a JSON body whose value is a credential whatever it looks like (of 8 characters
# or more): a password of words or an API key of digits is no less one. ``key``, ``token``
# and ``code`` are not among them: a logprob's ``token``, a code interpreter's ``code``.
_JSON_CREDENTIAL_FIELDS = frozenset({
    "api_key", "api-key", "apikey", "api_keys", "password", "passwd", "pwd", "passphrase", "client_secret",
    "access_token", "refresh_token", "id_token", "code_verifier", "secret", "secret_key", "private_key",
    "session_token", "auth_token", "api_token", "pass", "pw",
})
# The password of a connection string in a JSON value ("Server=db;User Id=app;Password=...;"):
# a value made of key=value pairs and nothing else, so a prompt's "password = getpass(); ..." is none.
_CONNECTION_STRING = re.compile(r"\s*(?:[A-Za-z][A-Za-z ]{0,30}=[^;=]*;\s*)+(?:[A-Za-z][A-Za-z ]{0,30}=[^;=]*)?")
_CONNECTION_PASSWORD = re.compile(r"(?i)(?:^|;)\s*(?:password|pwd)\s*=\s*([^;]*)")


def json_credentials(value: Any, depth: int = 0) -> set[str]:
    """The values in a JSON body that a field's name says are credentials and that could
    be secrets (``{"api_key": "tvly-..."}``, ``{"auth": {"token": "..."}}``), as the same
    rule takes them from headers, and any value of 8 characters or more of a credential
    field (``_JSON_CREDENTIAL_FIELDS``); ``code``, ``key`` and the like by name alone are
    not (a code interpreter's ``code`` is no secret)."""
    found: set[str] = set()
    if depth > 32:
        return found
    if isinstance(value, dict):
        for name, item in value.items():
            lower = str(name).lower()
            # a number is a password too ({"password": 8675309123456}), and so is each of a list
            # of strings under a credential's name ({"api_keys": ["...", "..."]})
            items = [str(item)] if isinstance(item, (str, int)) and not isinstance(item, bool) else (
                [v for v in item if isinstance(v, str)] if isinstance(item, list) else [])
            for text in items:
                if "=" in text and ";" in text and _CONNECTION_STRING.fullmatch(text):
                    found.update(m.group(1).strip() for m in _CONNECTION_PASSWORD.finditer(text)
                                 if len(m.group(1).strip()) >= MIN_SECRET_LENGTH)
                if lower in _JSON_CREDENTIAL_FIELDS and len(text) >= MIN_SECRET_LENGTH and not text.isspace():
                    found.add(text)  # a password of digits or words is one all the same
                elif credential_named(lower) and plausible_secret(text, MIN_SECRET_LENGTH):
                    found.add(text)
            if isinstance(item, (dict, list)):
                found |= json_credentials(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)):
                found |= json_credentials(item, depth + 1)
    return found


def redact_shown(text: str, headers: Mapping[str, Any] = {}, url: str = "") -> str:
    """``text`` (a request's path, as a message, a log or a report shows it) with the
    credentials of its request and the environment's secrets replaced, in any form a URL
    carries them: a token in the path (``/bot<token>/sendMessage``) is shown redacted."""
    secrets = request_credentials(headers, url) | {f for v in environment_secrets() for f in _forms(v)}
    return str(redact(text, sorted(secrets, key=lambda v: (-len(v), v))))


def masked(text: str) -> str:
    """``text`` as a report, a message or the CLI shows it when it did not come through the
    redaction of a recorded request: a test id (``test_x[<a key as a parameter>]``), an
    old cassette's answer in a drift, a hand-edited cassette's field in an error, what
    ``llm-cache show`` prints. The environment's secrets and anything shaped like a
    credential (``SECRET_PATTERNS``) are replaced with ``<redacted>``."""
    if not text:
        return text
    text = redact_shown(text)
    for kind, found in SECRET_PATTERNS.items():
        pattern = _shown_pattern(found)
        if pattern.search(text) is not None:

            def replaced(match: re.Match[str], kind: str = kind) -> str:
                return REDACTED if shaped(kind, match.group(0)) else match.group(0)

            text = pattern.sub(replaced, text)
    return text


_SHOWN_PATTERNS: dict[re.Pattern[str], re.Pattern[str]] = {}


def _shown_pattern(pattern: re.Pattern[str]) -> re.Pattern[str]:
    """A secret's pattern for text that shows strings escaped (a diff's ``"...\\nsk-..."``):
    its leading word boundary also taken after a ``\\n``, ``\\t`` or ``\\r`` escape."""
    shown = _SHOWN_PATTERNS.get(pattern)
    if shown is None:
        source = pattern.pattern
        if source.startswith(r"\b"):
            source = r"(?:\b|(?<=\\[nrt]))" + source[2:]
        shown = re.compile(source, pattern.flags)
        if len(_SHOWN_PATTERNS) < 64:
            _SHOWN_PATTERNS[pattern] = shown
    return shown


def echo_forms(item: str) -> tuple[str, ...]:
    """A credential in the forms an answer could echo it: raw, percent-encoded, JSON-escaped."""
    return _forms(item)


def base64_forms(values: Iterable[str]) -> set[str]:
    """Each of ``values`` as base64 would show it (standard and URL-safe, without padding):
    a credential pasted encoded into a prompt or a body is redacted as the credential is."""
    found = set()
    for value in values:
        encoded = value.encode("utf-8")
        for b64 in (base64.b64encode(encoded), base64.urlsafe_b64encode(encoded)):
            found.add(b64.decode("ascii").rstrip("="))
    return found


def _header_credentials(name: str, value: str) -> Iterator[str]:
    lower = name.lower()
    if lower in REQUEST_HEADERS or lower in _PROTOCOL_HEADERS or lower.startswith(_PROTOCOL_PREFIXES):
        return
    if lower in CREDENTIAL_HEADERS or credential_named(lower):
        found = [value]
        if "authorization" in lower:
            found += _authorization(value)
        elif lower == "cookie":
            found += _cookies(value)
        yield from (v for v in found if len(v) >= MIN_SECRET_LENGTH)
    elif plausible_secret(value, MIN_SECRET_LENGTH):
        yield value


def _url_credentials(url: str) -> Iterator[str]:
    """Credential query values and the userinfo of ``url``, as sent and decoded."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    if userinfo:
        user, sep, password = userinfo.partition(":")
        for item in (userinfo, password if sep else user):
            yield item
            yield unquote(item)
    yield from _pair_credentials(parts.query)


def _pair_credentials(encoded: str) -> Iterator[str]:
    """The credentials among the fields of a query string or an
    ``application/x-www-form-urlencoded`` body (``field_credential``), as sent and decoded."""
    for pair in re.split(r"[&;]", encoded):  # ; separates fields too, for many servers
        name, _, item = pair.partition("=")
        if item:
            value = unquote(item.replace("+", " "))
            if field_credential(unquote(name.replace("+", " ")), value):
                yield item
                yield value


def _credential_field(name: str) -> bool:
    """Whether a query or form field named ``name`` (as sent, percent-encoded) holds a credential."""
    return unquote(name.replace("+", " ")).lower() in SECRET_QUERY_PARAMS


def field_credential(name: str, value: str) -> bool:
    """Whether a query, form or multipart field (``name`` and ``value`` decoded) carries a
    credential: any value of a credential field (``SECRET_QUERY_PARAMS``: ``api_key``,
    ``client_secret``), and a value that could be a secret in a field named as a credential
    header would be (``subscription-key``, ``x-api-key``, ``access-token``, ``auth``)."""
    lower = name.lower()
    if lower in SECRET_QUERY_PARAMS:
        return True
    return credential_named(lower) and plausible_secret(value, MIN_SECRET_LENGTH)


def redact_form(encoded: str) -> str:
    """An ``application/x-www-form-urlencoded`` body with the value of every credential
    field (``SECRET_QUERY_PARAMS``) replaced by ``<redacted>``, however short it is."""
    out = []
    for pair in encoded.split("&"):
        name, sep, item = pair.partition("=")
        if item and _credential_field(name):
            pair = f"{name}{sep}{REDACTED}"
        out.append(pair)
    return "&".join(out)


def request_credentials(
    headers: Mapping[str, Any] = {}, url: str = "", form: str = "", fields: Iterable[tuple[str, str]] = (),
    body: Any = None,
) -> set[str]:
    """Every credential a request carried, of 8 characters or more, in the forms an answer
    could echo it: raw, percent-encoded and JSON-escaped. ``form``: its body, when that is
    an ``application/x-www-form-urlencoded`` form (an OAuth token request's
    ``client_secret``, ``password``, ``refresh_token``); ``fields``: the text fields of a
    ``multipart/form-data`` body, as (name, value); ``body``: its JSON value, when it is JSON
    (``json_credentials``)."""
    found: set[str] = set()
    for name, value in headers.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        for item in values:
            found.update(_header_secrets(_text(name), _text(item)))
    found.update(_url_credentials(url))
    found.update(_pair_credentials(form))
    found.update(value for name, value in fields if field_credential(name, value))
    if body is not None:
        found.update(json_credentials(body))
    forms: set[str] = set()
    for item in found:
        if len(item) >= MIN_SECRET_LENGTH:
            forms.update(_forms(item))
    return forms


def secret_values(
    request_headers: Mapping[str, Any] = {}, environ: Mapping[str, str] | None = None, url: str = ""
) -> list[str]:
    """Every value that must not appear in a cassette, longest first: what the request
    carried (``request_credentials``) and the secret environment values."""
    found = request_credentials(request_headers, url) | environment_secrets(environ)
    return sorted(found, key=lambda v: (-len(v), v))


def redact(value: Any, secrets: Iterable[str]) -> Any:
    """``value`` with every secret replaced by ``<redacted>``, in strings and mapping keys,
    and a number under a credential's name that is a secret of digits replaced by the
    string ``<redacted>``."""
    secrets = list(secrets)
    if not secrets:
        return value

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            for secret in secrets:
                if secret in item:
                    item = item.replace(secret, REDACTED)
            return item
        if isinstance(item, dict):
            return {walk(k): _number(k, v) if numbers and isinstance(v, int) else walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        return item

    def _number(name: Any, item: int) -> Any:
        """A password that is a number, under a credential's name: its JSON number is the
        secret (anywhere else a number equal to one, a timestamp, stays)."""
        if isinstance(item, bool) or str(item) not in numbers:
            return item
        lower = str(name).lower()
        return REDACTED if lower in _JSON_CREDENTIAL_FIELDS or credential_named(lower) else item

    numbers = {s for s in secrets if s.isdigit()}
    return walk(value)


_URL_SECRET_PARAMS = frozenset({"password", *SECRET_QUERY_PARAMS})


def mask_url(url: str) -> str:
    """``url`` with its password (in the userinfo, or a ``password=`` or credential query
    parameter) replaced by ``***``, for showing it: ``redis://:***@host:6379/0``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest and "@" not in parts.netloc:
        # a password holding '#', '?' or '/' unencoded ends the netloc early: redis://:Pa#ss@host
        # keeps "Pa#ss" out of it. Everything up to the last '@' is the userinfo here.
        userinfo, _, after = rest.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        shown = f"{user}:***" if colon and not any(c in user for c in "/?#") else "***"
        return mask_url(f"{scheme}://{shown}@{after}")
    netloc = parts.netloc
    if "@" not in netloc and not parts.query:
        return url  # nothing to hide; urlunsplit would also drop the // of memory://
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, sep, _ = userinfo.partition(":")
        # a lone userinfo is a password to redis-py, and a token in https://TOKEN@host
        userinfo = f"{user}:***" if sep else "***"
        netloc = f"{userinfo}@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        hidden = [n.lower() in _URL_SECRET_PARAMS or field_credential(n, v) for n, v in pairs]
        if any(hidden):
            query = urlencode([(n, "***" if h else v) for (n, v), h in zip(pairs, hidden)], safe="*:/")
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
