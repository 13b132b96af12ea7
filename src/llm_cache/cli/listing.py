"""Commands that read: ls, stats, show, diff."""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from ..cassette import Entry
from ..key import flatten
from ..llm import completion_text, last_user_text, prompt_messages, tool_calls
from ..policy import is_expired
from ..stores.files import FileStore
from ..values import format_duration
from .common import (
    OK,
    PROBLEM,
    _age,
    _emit,
    _not_cassettes,
    _now,
    _table,
    _ttl,
    _words,
)
from .stores import StoreArg, census, find, load_all, where


def cmd_ls(args: argparse.Namespace) -> int:
    ttl, now = _ttl(args), _now()
    with StoreArg(args) as stores:
        store = stores.store
        loaded, foreign = load_all(store)
    rows: list[list[str]] = []
    data: list[dict[str, Any]] = []
    for item in loaded:
        if item.entry is None:
            rows.append([item.key[:12], item.group, "-", "-", "-", "-", "-", f"UNREADABLE: {item.error}"])
            data.append({"path": item.location, "error": item.error})
            continue
        e = item.entry
        expired = is_expired(e.recorded_at, ttl, now)
        size = item.size
        prompt = _words(last_user_text(e.request_body.value if e.request_body.kind == "json" else None))
        rows.append([e.key[:12], e.model_version, e.recorded_at.strftime("%Y-%m-%d %H:%M"), _age(e.recorded_at, now),
                     "yes" if expired else "no", str(size), f"{e.method} {e.path}", prompt])
        data.append({"key": e.key, "model_version": e.model_version, "recorded_at": e.recorded_at.isoformat(),
                     "age_seconds": int((now - e.recorded_at).total_seconds()), "expired": expired, "size": size,
                     "endpoint": e.path, "method": e.method, "prompt": prompt, "path": item.location})
    header = ["KEY", "MODEL VERSION", "RECORDED", "AGE", "EXPIRED", "SIZE", "ENDPOINT", "PROMPT"]
    _emit(args, data, (_table(rows, header) if rows else f"no cassettes in {where(store)}") + _not_cassettes(foreign))
    return OK


def _group() -> dict[str, Any]:
    return {"entries": 0, "bytes": 0, "expired": 0, "unreadable": 0, "oldest": None, "newest": None, "hits": 0}


def cmd_stats(args: argparse.Namespace) -> int:
    ttl, now = _ttl(args), _now()
    with StoreArg(args) as stores:
        store = stores.store
        usage = store.usage()
        listed = list(census(store))
    groups: dict[str, dict[str, Any]] = {}
    for meta, name in listed:
        if meta is None:  # ours, but replay cannot use it
            groups.setdefault(name, _group())["unreadable"] += 1
            continue
        g = groups.setdefault(meta.model_version, _group())
        g["entries"] += 1
        g["bytes"] += meta.size
        g["hits"] += usage[meta.key].hits if meta.key in usage else 0
        if meta.recorded_at is None:
            g["unreadable"] += 1
            continue
        g["expired"] += is_expired(meta.recorded_at, ttl, now)
        g["oldest"] = min(filter(None, [g["oldest"], meta.recorded_at]))
        g["newest"] = max(filter(None, [g["newest"], meta.recorded_at]))
    total = {k: sum(g[k] for g in groups.values()) for k in ("entries", "bytes", "expired", "unreadable", "hits")}

    def day(value: datetime | None) -> str:
        return value.strftime("%Y-%m-%d") if value else "-"

    rows = [[name, str(g["entries"]), str(g["bytes"]), str(g["expired"]), day(g["oldest"]), day(g["newest"]), str(g["hits"])]
            for name, g in sorted(groups.items())]
    rows.append(["total", str(total["entries"]), str(total["bytes"]), str(total["expired"]), "", "", str(total["hits"])])
    text = _table(rows, ["MODEL VERSION", "ENTRIES", "BYTES", "EXPIRED", "OLDEST", "NEWEST", "HITS"])
    kept = f"{store.root}/.llm-cache/usage.json" if isinstance(store, FileStore) else where(store)
    text += f"\n(ttl {format_duration(ttl)}; hits from {kept})"
    data = {"model_versions": {name: {**g, "oldest": g["oldest"] and g["oldest"].isoformat(),
                                      "newest": g["newest"] and g["newest"].isoformat()}
                               for name, g in sorted(groups.items())},
            "total": total, "ttl": format_duration(ttl)}
    _emit(args, data, text)
    return OK


def cmd_show(args: argparse.Namespace) -> int:
    with StoreArg(args) as stores:
        found = find(stores, args.key)
    e, path = found.entry, found.location
    now = _now()
    request_json = e.request_body.value if e.request_body.kind == "json" else None
    answered = f", answered by {e.response_model}" if e.response_model else ""
    fingerprint = f", fingerprint {e.system_fingerprint}" if e.system_fingerprint else ""
    lines = [
        f"key:       {e.key}",
        f"{'file:     ' if found.in_file else 'stored:   '} {path}",
        f"model:     {e.model or '-'} (version {e.model_version}{answered}{fingerprint})",
        f"recorded:  {e.recorded_at.isoformat()} ({_age(e.recorded_at, now)} ago)",
        f"endpoint:  {e.method} {e.path} -> {e.status}",
    ]
    if e.usage:
        lines.append("usage:     " + ", ".join(f"{v} {k.replace('_tokens', '')}" for k, v in e.usage.items()))
    prompt = prompt_messages(request_json)
    if prompt:
        lines.append("prompt:")
        lines.extend(f"  [{role}] {text}" for role, text in prompt)
    stream = e.response_body.kind == "events"
    text = completion_text(e.response_body)
    label = f"completion (streamed, {len(e.response_body.value)} events):" if stream else "completion:"
    if text:
        lines += [label, *("  " + line for line in text.splitlines())]
    calls = tool_calls(e.response_body)
    if calls:
        lines.append("tool calls:")
        lines.extend(f"  {name}({arguments})" for name, arguments in calls)
    data = {"key": e.key, "path": path, "model": e.model, "model_version": e.model_version,
            "response_model": e.response_model, "system_fingerprint": e.system_fingerprint,
            "recorded_at": e.recorded_at.isoformat(), "endpoint": e.path, "status": e.status, "usage": e.usage,
            "prompt": [{"role": r, "text": t} for r, t in prompt], "completion": text, "streamed": stream,
            "tool_calls": [{"name": n, "arguments": a} for n, a in calls]}
    _emit(args, data, "\n".join(lines))
    return OK


def _diff_values(a: Entry, b: Entry) -> list[tuple[str, Any, Any]]:
    def fields(e: Entry) -> dict[str, Any]:
        doc = e.to_doc()
        # duration_ms, like offsets_ms below: timing, which differs between any two recordings
        flat = flatten({k: v for k, v in doc.items() if k not in ("request", "response", "duration_ms")})
        for side in ("request", "response"):
            section = doc[side]
            body = e.request_body if side == "request" else e.response_body
            # offsets_ms: timing, which differs between any two recordings
            rest = {k: v for k, v in section.items()
                    if k not in ("json", "events", "text", "base64", "newline", "offsets_ms")}
            flat.update(flatten(rest, side))
            if body.kind == "json":
                flat.update(flatten(body.value, f"{side}.json"))
            elif body.kind == "events":
                flat.update(flatten(body.json_values(), f"{side}.events"))
            else:
                flat[f"{side}.{body.kind}"] = body.value
        if e.response_body.kind == "events":
            flat["response.text (assembled)"] = completion_text(e.response_body)
        return flat

    fa, fb = fields(a), fields(b)
    out = []
    for name in sorted(fa.keys() | fb.keys()):
        va, vb = fa.get(name, ABSENT), fb.get(name, ABSENT)
        if va != vb:
            out.append((name, va, vb))
    return out


class _Absent:
    """A field one side of a diff does not have (not the same as one holding null)."""

    def __repr__(self) -> str:
        return "(absent)"


ABSENT = _Absent()


def _shown(value: Any) -> str:
    return "(absent)" if value is ABSENT else json.dumps(value, default=str)


def cmd_diff(args: argparse.Namespace) -> int:
    with StoreArg(args) as stores:  # opened only for a key prefix: two files need no store
        a, b = find(stores, args.a), find(stores, args.b)
    differences = _diff_values(a.entry, b.entry)
    lines = [f"--- {a.location}", f"+++ {b.location}"]
    lines += [f"{name}: {_shown(va)} -> {_shown(vb)}" for name, va, vb in differences]
    if not differences:
        lines.append("(no differences)")
    data = {"a": a.location, "b": b.location, "differences": [
        {"field": n, **({} if va is ABSENT else {"a": va}), **({} if vb is ABSENT else {"b": vb})}
        for n, va, vb in differences]}  # a side without the field has no key: absent, not null
    _emit(args, data, "\n".join(lines))
    return PROBLEM if differences and args.exit_code else OK
