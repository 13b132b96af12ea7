"""Checks of cassette files: they parse, validate, hold the key of their request, sit where
that key puts them, and contain nothing secret-looking (in the YAML, in the decoded bytes of
a base64 body, or as a credential query parameter). A sound file in an older format gets a
note (not a problem): ``llm-cache upgrade`` rewrites it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from . import cassette
from .atomic import UnsafePath, read_regular
from .cassette import FORMAT_VERSION, Entry, load_doc, parse_entry
from .errors import CassetteError
from .key import SECRET_QUERY_PARAMS, KeyRules, make_key, sequenced
from .redact import REDACTED, find_entry_secrets
from .stores.files import KEY_PREFIX_LENGTH, SUFFIX, FileStore, safe_dirname

__all__ = ["Note", "Problem", "check_file", "examine_file", "recompute_key"]


@dataclass(frozen=True)
class Problem:
    path: str
    reason: str


@dataclass(frozen=True)
class Note:
    """Something worth knowing about a cassette that is not wrong with it."""

    path: str
    text: str


def recompute_key(entry: Entry) -> str:
    """The key of the request stored in ``entry``, under the rules it was recorded with."""
    rules_doc = entry.key_rules or {}
    pinned = None
    if entry.model and entry.model_version.startswith(entry.model + "@"):
        pinned = entry.model_version[len(entry.model) + 1 :]
    rules = KeyRules(
        ignore_fields=tuple(rules_doc.get("ignore_fields", ())),
        match_host="host" in rules_doc,
        pinned_version=pinned,
    )
    host = rules_doc.get("host", "http://localhost")
    url = host + entry.path + ("?" + urlencode([(k, v) for k, v in entry.query]) if entry.query else "")
    body = entry.request_body
    form = body.value if body.kind == "multipart" else None  # its parts, not its bytes, were kept
    key = make_key(entry.method, url, body.to_bytes(), entry.request_headers, rules, form=form).key
    if "sequence" in rules_doc:
        key = sequenced(key, int(rules_doc["sequence"]))
    return key


def check_file(path: Path, allow: tuple[str, ...] = ()) -> list[Problem]:
    """Every problem with one cassette file (empty when it is sound)."""
    return examine_file(path, allow)[0]


def examine_file(
    path: Path, allow: tuple[str, ...] = (), store: FileStore | None = None
) -> tuple[list[Problem], list[Note]]:
    """Every problem with one cassette file, and the notes on it (an older format). With the
    ``store`` it lies in, its parsed copy is checked too: one made from this very file must
    hold its entry. The file is read as replay reads it: never through a symlink, only a
    regular file, no larger than a cassette may be."""
    where = str(path)
    try:
        data = read_regular(path, cassette.MAX_CASSETTE_BYTES)
        text = data.decode("utf-8")
    except UnsafePath as exc:
        return [Problem(where, f"it {exc.strerror}")], []
    except OSError as exc:
        return [Problem(where, f"cannot be read: {exc.strerror or exc}")], []
    except UnicodeDecodeError as exc:
        return [Problem(where, f"cannot be read: {exc}")], []
    try:
        doc = load_doc(text, where)
        entry = parse_entry(doc, where)
    except CassetteError as exc:
        return [Problem(where, exc.reason)], []
    notes = []
    if doc["llm_cache"] != FORMAT_VERSION:
        notes.append(Note(where, f"format {doc['llm_cache']}: run llm-cache upgrade"))
    problems = []
    if path.name != entry.key[:KEY_PREFIX_LENGTH] + SUFFIX:
        problems.append(Problem(where, f"file name does not match its key {entry.key[:KEY_PREFIX_LENGTH]}"))
    if path.parent.name != safe_dirname(entry.model_version):
        problems.append(
            Problem(where, f"lies in {path.parent.name}/ but its model version {entry.model_version!r} "
                    f"belongs in {safe_dirname(entry.model_version)}/")
        )
    actual = recompute_key(entry)
    if actual != entry.key:
        redacted = REDACTED in text
        problems.append(
            Problem(
                where,
                f"its key is not the key of its request ({actual[:12]}...)"
                + ("; the request was redacted, so the stored request differs from the one sent" if redacted else ""),
            )
        )
    for finding in find_entry_secrets(entry, text, allow):
        problems.append(Problem(where, f"{finding.where}: looks like a {finding.kind} ({finding.excerpt})"))
    # written before the parameter was known to carry a credential
    for name in sorted({name for name, _ in entry.query if name.lower() in SECRET_QUERY_PARAMS}):
        problems.append(Problem(where, f"the query parameter {name!r} carries a credential: re-record it"))
    if store is not None:
        wrong, note = store.check_copy(path, data, entry)
        if wrong is not None:
            problems.append(Problem(where, wrong))
        if note is not None:
            notes.append(Note(where, note))
    return problems, notes
