"""Checks of stored entries: they parse, validate, hold the key of their request, sit where
that key puts them (a file's name and directory; a Redis entry's key and index row), and
contain nothing secret-looking (in the YAML, in the decoded bytes of a base64 body, or as a
credential query parameter). A sound file in an older format gets a note (not a problem):
``llm-cache upgrade`` rewrites it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from . import cassette
from .atomic import UnsafePath, read_regular
from .cassette import FORMAT_VERSION, Entry, load_doc, parse_entry
from .errors import CassetteError
from .key import SECRET_QUERY_PARAMS, KeyRules, make_key, sequenced
from .leaks import find_entry_secrets
from .meta import EntryMeta
from .redact import REDACTED
from .stores.files import KEY_PREFIX_LENGTH, SUFFIX, FileStore, safe_dirname

__all__ = ["Note", "Problem", "check_file", "examine_data", "examine_file", "examine_stored", "recompute_key"]

UPGRADE_HINT = "run llm-cache upgrade"


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
    label, namespace, model = entry.model_version, None, entry.model or ""
    if label != model and not label.startswith(model + "@") and "+" in label:
        namespace, _, label = label.partition("+")  # recorded in a namespace: "tenant+gpt-4o"
    pinned = None
    if entry.model and label.startswith(entry.model + "@"):
        pinned = label[len(entry.model) + 1 :]
    rules = KeyRules(
        ignore_fields=tuple(rules_doc.get("ignore_fields", ())),
        match_host="host" in rules_doc,
        pinned_version=pinned,
        namespace=namespace,
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


def examine_data(
    where: str, data: bytes, allow: tuple[str, ...] = (), upgrade: str = UPGRADE_HINT
) -> tuple[Entry | None, list[Problem], list[Note]]:
    """The checks of an entry's stored text, wherever it is kept: it parses and validates,
    holds the key of its request, contains nothing secret-looking. Returns the entry (None
    when it does not parse), the problems and the notes (an older format: ``upgrade`` says
    what to do about it)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, [Problem(where, f"cannot be read: {exc}")], []
    try:
        doc = load_doc(text, where)
        entry = parse_entry(doc, where)
    except CassetteError as exc:
        return None, [Problem(where, exc.reason)], []
    notes = []
    if doc["llm_cache"] != FORMAT_VERSION:
        notes.append(Note(where, f"format {doc['llm_cache']}: {upgrade}"))
    problems = []
    actual = recompute_key(entry)
    if actual != entry.key:
        if REDACTED.encode() in entry.request_body.to_bytes() or REDACTED in entry.path or any(
                REDACTED in str(v) for v in (*entry.request_headers.values(), *(v for _, v in entry.query))):
            # the cache wrote it so: a secret in the request was replaced before the file was
            # written, so the request kept cannot give the key of the one sent. Said, not a problem.
            notes.append(Note(where, "its request was redacted (a secret-looking value was replaced by "
                                     f"{REDACTED}), so its key cannot be checked against it"))
        else:
            problems.append(Problem(where, f"its key is not the key of its request ({actual[:12]}...)"))
    for finding in find_entry_secrets(entry, text, allow):
        problems.append(Problem(where, f"{finding.where}: looks like {'an' if finding.kind[:1] in 'aeiou' else 'a'} {finding.kind} ({finding.excerpt})"))
    # written before the parameter was known to carry a credential
    for name in sorted({name for name, _ in entry.query if name.lower() in SECRET_QUERY_PARAMS}):
        problems.append(Problem(where, f"the query parameter {name!r} carries a credential: re-record it"))
    return entry, problems, notes


def examine_file(
    path: Path, allow: tuple[str, ...] = (), store: FileStore | None = None
) -> tuple[list[Problem], list[Note]]:
    """Every problem with one cassette file, and the notes on it (an older format): those of
    ``examine_data``, and that it sits where its key puts it. With the ``store`` it lies in,
    its parsed copy is checked too: one made from this very file must hold its entry. The
    file is read as replay reads it: never through a symlink, only a regular file, no
    larger than a cassette may be."""
    where = str(path)
    try:
        data = read_regular(path, cassette.MAX_CASSETTE_BYTES)
    except UnsafePath as exc:
        return [Problem(where, f"it {exc.strerror}")], []
    except OSError as exc:
        return [Problem(where, f"cannot be read: {exc.strerror or exc}")], []
    entry, found, notes = examine_data(where, data, allow)
    if entry is None:
        return found, notes
    problems = []
    if path.name != entry.key[:KEY_PREFIX_LENGTH] + SUFFIX:
        problems.append(Problem(where, f"file name does not match its key {entry.key[:KEY_PREFIX_LENGTH]}"))
    if path.parent.name != safe_dirname(entry.model_version):
        problems.append(
            Problem(where, f"lies in {path.parent.name}/ but its model version {entry.model_version!r} "
                    f"belongs in {safe_dirname(entry.model_version)}/")
        )
    problems += found
    if store is not None:
        wrong, note = store.check_copy(path, data, entry)
        if wrong is not None:
            problems.append(Problem(where, wrong))
        if note is not None:
            notes.append(Note(where, note))
    return problems, notes


def examine_stored(
    meta: EntryMeta, data: bytes | None, allow: tuple[str, ...] = ()
) -> tuple[list[Problem], list[Note]]:
    """The checks of an entry kept in a store without files (Redis): those of
    ``examine_data`` on its stored text ``data`` (None: gone since it was listed, nothing
    to check), and that it is kept under its own key and indexed under its model version."""
    where = meta.location
    if data is None:
        return [], []
    if meta.recorded_at is None:
        return [Problem(where, "its index row is damaged (no model version or recording time): re-record it")], []
    if len(data) > cassette.MAX_CASSETTE_BYTES:
        return [Problem(where, f"it is larger than a cassette may be ({cassette.MAX_CASSETTE_BYTES} bytes)")], []
    entry, found, notes = examine_data(where, data, allow, upgrade="re-record it (llm-cache upgrade rewrites files only)")
    if entry is None:
        return found, notes
    problems = []
    if entry.key != meta.key:
        problems.append(Problem(where, f"it holds the entry of another key ({entry.key[:12]}...)"))
    if entry.model_version != meta.model_version:
        problems.append(Problem(where, f"it is indexed under model version {meta.model_version!r} "
                                f"but its model version is {entry.model_version!r}"))
    return problems + found, notes
