"""The llm-cache command, run through its console script: each subcommand, its exit status, bad usage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from llm_cache.cassette import Entry, encode_body
from llm_cache.key import KeyRules, make_key
from llm_cache.stores.files import FileStore
from llm_cache.usage import Usage, UsageIndex

NOW = datetime.now(timezone.utc)
SCRIPT = shutil.which("llm-cache", path=os.path.dirname(sys.executable)) or "llm-cache"


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SCRIPT, *args], capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


def chat_entry(prompt: str, answer: str, *, model: str = "gpt-4o", days_old: float = 0, stream: bool = False,
               tool: bool = False, rules: KeyRules | None = None) -> Entry:
    rules = rules or KeyRules()
    body = {"model": model, "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": prompt}]}
    if stream:
        body["stream"] = True
    raw = json.dumps(body).encode()
    rk = make_key("POST", "https://api.example.test/v1/chat/completions", raw, {}, rules)
    if stream:
        chunks = [{"choices": [{"index": 0, "delta": {"content": word + " "}}]} for word in answer.split()]
        if tool:
            chunks += [
                {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"name": "get_weather", "arguments": ""}}]}}]},
                {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]}}]},
                {"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}}]},
            ]
        text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        response = encode_body(text.encode(), "text/event-stream")
    else:
        response = encode_body(json.dumps({"model": model + "-2024-08-06", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": answer}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4}}).encode(), "application/json")
    return Entry(
        key=rk.key, recorded_at=NOW - timedelta(days=days_old), model=model, model_version=rk.model_version,
        method="POST", path=rk.path, query=[], request_headers={"content-type": "application/json"},
        request_body=encode_body(raw, "application/json"), status=200, response_headers={}, response_body=response,
        response_model=model + "-2024-08-06", usage={"input_tokens": 3, "output_tokens": 4},
        key_rules={"ignore_fields": list(rules.ignore_fields)} if rules.ignore_fields else None,
    )


@pytest.fixture
def cassettes(tmp_path: Path) -> tuple[Path, dict[str, Entry]]:
    store = FileStore(tmp_path / "cassettes")
    entries = {
        "old": chat_entry("an old question about shipping", "old answer", days_old=40),
        "new": chat_entry("a new question about refunds", "new answer"),
        "stream": chat_entry("stream the weather please", "it is sunny today", stream=True, tool=True),
        "mini": chat_entry("small model question", "tiny answer", model="gpt-4o-mini", days_old=10),
        "pinned": chat_entry("pinned", "p", rules=KeyRules(pinned_version="2024-08-06"), days_old=1),
        "ignored": chat_entry("with ignore rule", "i", rules=KeyRules(ignore_fields=("messages.0",))),
    }
    for entry in entries.values():
        store.put(entry)
    UsageIndex(store.root).update({entries["new"].key: Usage(NOW.timestamp(), 7), entries["mini"].key: Usage(NOW.timestamp(), 2)})
    return store.root, entries


def test_a_reader_that_stops_early_gets_no_error(cassettes: tuple[Path, dict[str, Entry]]) -> None:
    root, _ = cassettes
    listing = subprocess.Popen([SCRIPT, "ls", "--dir", str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert listing.stdout is not None and listing.stderr is not None
    listing.stdout.close()  # as `llm-cache ls | head -0` would
    error = listing.stderr.read().decode()
    assert listing.wait(timeout=60) == 0  # the same exit as when the reader took everything
    assert error == "", error


def test_version_and_help() -> None:
    assert run("--version").stdout.startswith("llm-cache ")
    out = run("--help")
    assert out.returncode == 0
    for command in ("ls", "stats", "show", "prune", "verify", "diff"):
        assert command in out.stdout


def test_ls(cassettes: tuple[Path, dict[str, Entry]]) -> None:
    root, entries = cassettes
    out = run("ls", "--dir", str(root))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["KEY", "MODEL", "VERSION", "RECORDED", "AGE", "EXPIRED", "SIZE", "ENDPOINT", "PROMPT"]
    old = next(line for line in lines if line.startswith(entries["old"].key[:12]))
    assert "40d" in old and " yes " in old and "an old question about shipping" in old
    new = next(line for line in lines if line.startswith(entries["new"].key[:12]))
    assert " no " in new and "POST /v1/chat/completions" in new
    data = json.loads(run("ls", "--dir", str(root), "--json").stdout)
    assert len(data) == 6
    assert {d["model_version"] for d in data} == {"gpt-4o", "gpt-4o-mini", "gpt-4o@2024-08-06"}
    # a shorter TTL makes more of them expired
    assert sum(d["expired"] for d in json.loads(run("ls", "--dir", str(root), "--json", "--ttl", "5d").stdout)) == 2


def test_stats(cassettes: tuple[Path, dict[str, Entry]]) -> None:
    root, _ = cassettes
    out = run("stats", "--dir", str(root), "--json")
    assert out.returncode == 0
    data = json.loads(out.stdout)
    assert data["model_versions"]["gpt-4o"]["entries"] == 4
    assert data["model_versions"]["gpt-4o"]["expired"] == 1
    assert data["model_versions"]["gpt-4o"]["hits"] == 7
    assert data["model_versions"]["gpt-4o-mini"]["hits"] == 2
    assert data["total"]["entries"] == 6
    assert data["total"]["bytes"] == sum(p.stat().st_size for p in root.rglob("*.yaml"))
    text = run("stats", "--dir", str(root)).stdout
    assert text.splitlines()[0].split()[:3] == ["MODEL", "VERSION", "ENTRIES"]
    assert any(line.startswith("total") for line in text.splitlines())


def test_show_a_stream_with_tool_calls(cassettes: tuple[Path, dict[str, Entry]]) -> None:
    root, entries = cassettes
    out = run("show", entries["stream"].key[:8], "--dir", str(root))
    assert out.returncode == 0, out.stderr
    assert "  [system] be brief" in out.stdout
    assert "  [user] stream the weather please" in out.stdout
    assert "completion (streamed, 8 events):" in out.stdout
    assert "  it is sunny today " in out.stdout
    assert '  get_weather({"city": "Paris"})' in out.stdout
    data = json.loads(run("show", entries["new"].key[:10], "--dir", str(root), "--json").stdout)
    assert data["completion"] == "new answer" and data["response_model"] == "gpt-4o-2024-08-06"


def test_show_unknown_ambiguous_and_bad_keys(cassettes: tuple[Path, dict[str, Entry]], tmp_path: Path) -> None:
    root, _ = cassettes
    missing = run("show", "ffffffff", "--dir", str(root))
    assert missing.returncode == 1 and "no cassette whose key starts with ffffffff" in missing.stderr
    assert run("show", "zz", "--dir", str(root)).returncode == 2
    # make two keys share a prefix by copying a cassette under another name
    store = FileStore(tmp_path / "twins")
    a, b = chat_entry("a", "a"), chat_entry("b", "b")
    b.key = a.key[:6] + b.key[6:]
    store.put(a), store.put(b)
    ambiguous = run("show", a.key[:6], "--dir", str(store.root))
    assert ambiguous.returncode == 2 and "ambiguous" in ambiguous.stderr


def test_show_and_diff_say_why_a_cassette_ls_lists_as_unreadable_cannot_be_shown(
    cassettes: tuple[Path, dict[str, Entry]],
) -> None:
    root, entries = cassettes
    broken = root / "gpt-4o" / "abcd000011112222.yaml"
    broken.write_text("key: [unclosed\n")
    empty = root / "gpt-4o" / "abcd999988887777.yaml"
    empty.write_text("")
    assert "UNREADABLE: it is empty: no YAML document in it" in run("ls", "--dir", str(root)).stdout
    for ref, path, why in (("abcd0000", broken, "not valid YAML"),
                           ("abcd9999888877776666", empty, "it is empty: no YAML document in it")):
        out = run("show", ref, "--dir", str(root))
        assert out.returncode == 1, out.stderr
        assert out.stderr.startswith(f"llm-cache show: cassette {path} is unusable: {why}"), out.stderr
    diff = run("diff", "abcd0000", entries["old"].key[:10], "--dir", str(root))
    assert diff.returncode == 1 and f"cassette {broken} is unusable: not valid YAML" in diff.stderr
    both = run("show", "abcd", "--dir", str(root))
    assert both.returncode == 1 and "2 unusable files are named by it" in both.stderr


def test_prune_expired_dry_run_then_for_real(cassettes: tuple[Path, dict[str, Entry]]) -> None:
    root, entries = cassettes
    dry = run("prune", "--expired", "--dry-run", "--dir", str(root))
    assert dry.returncode == 0
    assert f"would remove {root}/gpt-4o/{entries['old'].key[:16]}.yaml (expired (older than 30d))" in dry.stdout
    assert "would remove 1 of 6 cassettes" in dry.stdout
    assert len(list(root.rglob("*.yaml"))) == 6
    real = run("prune", "--expired", "--dir", str(root))
    assert "removed 1 of 6 cassettes" in real.stdout
    assert len(list(root.rglob("*.yaml"))) == 5


def test_prune_a_model_in_every_namespace_and_say_when_none_is_there(tmp_path: Path) -> None:
    import dataclasses

    store = FileStore(tmp_path / "cassettes")
    plain = chat_entry("plain", "a")
    spaced = [dataclasses.replace(chat_entry(f"of {ns}", "a"), model_version=f"{ns}+gpt-4o") for ns in ("acme", "globex")]
    mini = dataclasses.replace(chat_entry("mini", "a", model="gpt-4o-mini"), model_version="acme+gpt-4o-mini")
    for entry in (plain, *spaced, mini):
        store.put(entry)
    out = run("prune", "--model", "*+gpt-4o", "--dir", str(store.root), "--json")
    assert sorted(r["key"] for r in json.loads(out.stdout)["removed"]) == sorted(e.key for e in spaced)
    assert len(list(store.root.rglob("*.yaml"))) == 2  # the plain gpt-4o and acme's gpt-4o-mini stay
    none = run("prune", "--model", "gtp-4o", "--dir", str(store.root), "--dry-run")
    assert none.returncode == 0
    assert "no cassettes of model gtp-4o in the store (its model versions: acme+gpt-4o-mini, gpt-4o)" in none.stderr


def test_verify_names_and_prune_removes_what_a_recording_moved_aside(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "cassettes")
    entry = chat_entry("soon corrupt", "a")
    where = Path(store.put(entry))
    where.write_text("llm_cache: 2\nkey: [not closed\n")
    aside = Path(store.quarantine(entry.key, entry.model_version) or "")
    assert aside.name.endswith(".yaml.corrupt") and aside.exists()
    mine = where.parent / "notes.corrupt"  # a file of the user's, named alike
    mine.write_text("keep me")
    verify = run("verify", "--dir", str(store.root))
    assert verify.returncode == 0, verify.stdout
    assert f"{aside}: note: a cassette a recording moved aside as corrupt" in verify.stdout
    dry = run("prune", "--corrupt", "--dry-run", "--dir", str(store.root))
    assert f"would remove {aside} (moved aside as corrupt)" in dry.stdout and aside.exists()
    done = run("prune", "--corrupt", "--dir", str(store.root), "--json")
    assert json.loads(done.stdout)["corrupt_removed"] == [str(aside)]
    assert not aside.exists() and mine.read_text() == "keep me"
    assert "moved aside" not in run("verify", "--dir", str(store.root)).stdout


def test_prune_by_model_unused_and_caps(cassettes: tuple[Path, dict[str, Entry]]) -> None:
    root, entries = cassettes
    out = run("prune", "--model", "gpt-4o-mini", "--dir", str(root), "--json")
    assert [r["key"] for r in json.loads(out.stdout)["removed"]] == [entries["mini"].key]
    # unused for 2 days: the 40-day-old one and the pinned one (1 day old) stays
    out = run("prune", "--unused-since", "2d", "--dir", str(root), "--json")
    assert [r["key"] for r in json.loads(out.stdout)["removed"]] == [entries["old"].key]
    out = run("prune", "--max-entries", "2", "--eviction", "fifo", "--dir", str(root), "--json")
    assert len(json.loads(out.stdout)["removed"]) == 2
    assert len(list(root.rglob("*.yaml"))) == 2
    keys_left = set(json.loads((root / ".llm-cache" / "usage.json").read_text())["keys"])
    assert keys_left <= {e.key for e in entries.values()} and entries["mini"].key not in keys_left


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prune"], "prune needs at least one of"),
        (["prune", "--max-size", "huge"], "--max-size must be a size like 500KB"),
        (["prune", "--expired", "--ttl", "soon"], "--ttl must be a duration like"),
        (["prune", "--max-entries", "2", "--eviction", "random"], "--eviction must be one of lru|lfu|fifo"),
        (["ls", "--bogus"], "unrecognized arguments: --bogus"),
        (["ls", "--ttl", "99999999999d"], "--ttl must be a duration of at most 36500d (100 years), or 'never'"),
        (["verify", "--allow", "([unclosed"], "--allow must be a regular expression (unterminated character set"),
        (["prune", "--max-entries", "9" * 5000], "--max-entries must be a whole number from 1 to 10**15"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "usage: llm-cache"),  # no command at all
    ],
)
def test_bad_usage_exits_2(cassettes: tuple[Path, dict[str, Entry]], args: list[str], message: str) -> None:
    root, _ = cassettes
    out = run(*args, "--dir", str(root)) if args and args[0] != "frobnicate" else run(*args)
    assert out.returncode == 2
    assert message in out.stderr
    assert len(list(root.rglob("*.yaml"))) == 6


@pytest.mark.parametrize("command", [["ls"], ["stats"], ["verify"], ["prune", "--expired"], ["show", "abcd"]])
def test_missing_directory_exits_1_and_empty_directory_is_fine(tmp_path: Path, command: list[str]) -> None:
    missing = run(*command, "--dir", str(tmp_path / "nope"))
    assert missing.returncode == 1 and "no cassette directory at" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = run(*command, "--dir", str(tmp_path / "empty"))
    assert empty.returncode == (1 if command[0] == "show" else 0), empty.stderr


def test_default_dir_is_cassettes_in_the_current_directory(cassettes: tuple[Path, dict[str, Entry]]) -> None:
    root, _ = cassettes
    assert len(json.loads(run("ls", "--json", cwd=root.parent).stdout)) == 6


def test_verify_sound_then_each_kind_of_problem(cassettes: tuple[Path, dict[str, Entry]]) -> None:
    root, entries = cassettes
    ok = run("verify", "--dir", str(root))
    assert ok.returncode == 0 and "6 cassettes checked, all sound" in ok.stdout

    path = lambda name: root / entries[name].model_version / f"{entries[name].key[:16]}.yaml"
    path("old").write_text("{broken")
    tampered = path("new").read_text().replace("a new question about refunds", "a different question")
    path("new").write_text(tampered)
    path("mini").write_text(path("mini").read_text().replace("tiny answer", "key sk-proj-LEAKEDLEAKED1234567890ab"))
    moved = root / "gpt-4o" / f"{entries['pinned'].key[:16]}.yaml"
    path("pinned").rename(moved)

    out = run("verify", "--dir", str(root))
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert any(str(path("old")) in line and "not valid YAML" in line for line in lines)
    assert any(str(path("new")) in line and "its key is not the key of its request" in line for line in lines)
    assert any(str(path("mini")) in line and "looks like an openai or anthropic key (sk-pro...ab)" in line for line in lines)
    assert any(str(moved) in line and "belongs in gpt-4o@2024-08-06/" in line for line in lines)
    assert "LEAKED" not in out.stdout
    assert lines[-1] == "6 cassettes checked, 4 with problems"
    allowed = json.loads(run("verify", "--dir", str(root), "--json", "--allow", "sk-proj-LEAKED").stdout)
    assert not any(str(path("mini")) == p["path"] for p in allowed["problems"])


def test_diff(cassettes: tuple[Path, dict[str, Entry]]) -> None:
    root, entries = cassettes
    out = run("diff", entries["old"].key[:10], str(root / "gpt-4o" / f"{entries['new'].key[:16]}.yaml"), "--dir", str(root))
    assert out.returncode == 0
    assert 'request.json.messages[1].content: "an old question about shipping" -> "a new question about refunds"' in out.stdout
    assert 'response.json.choices[0].message.content: "old answer" -> "new answer"' in out.stdout
    same = run("diff", entries["old"].key[:10], entries["old"].key[:12], "--dir", str(root), "--json")
    assert json.loads(same.stdout)["differences"] == []
    stream_vs_plain = json.loads(run("diff", entries["stream"].key[:8], entries["new"].key[:8], "--dir", str(root), "--json").stdout)
    assert any(d["field"] == "response.text (assembled)" for d in stream_vs_plain["differences"])
    # --exit-code, for scripts: 1 when they differ, 0 when they do not
    old = entries["old"].key[:10]
    assert run("diff", "--exit-code", old, entries["new"].key[:10], "--dir", str(root)).returncode == 1
    assert run("diff", "--exit-code", old, entries["old"].key[:12], "--dir", str(root)).returncode == 0


def test_diff_tells_an_absent_field_from_a_null_one_and_leaves_timing_out(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "cassettes")
    a, b = chat_entry("same question", "same answer"), chat_entry("same question", "same answer")
    b.request_body = encode_body(json.dumps({**json.loads(b.request_body.to_bytes()), "seed": None}).encode(),
                                 "application/json")
    a.duration_ms, b.duration_ms = 812.4, 97.0  # the calls' own timing: never a difference
    b.key = "f" * 64
    where_a, where_b = store.put(a), store.put(b)
    out = run("diff", where_a, where_b)
    assert out.returncode == 0, out.stderr
    assert "request.json.seed: (absent) -> null" in out.stdout
    assert "duration_ms" not in out.stdout
    [seed] = [d for d in json.loads(run("diff", where_a, where_b, "--json").stdout)["differences"]
              if d["field"] == "request.json.seed"]
    assert seed == {"field": "request.json.seed", "b": None}  # no "a": absent there, not null


def test_warm(tmp_path: Path, fake_api: Any) -> None:
    requests = tmp_path / "common.yaml"
    requests.write_text(
        "- path: /chat/completions\n  json: {model: gpt-4o, messages: [{role: user, content: opening hours}]}\n"
        "- path: /embeddings\n  json: {model: text-embedding-3-small, input: hours}\n"
    )
    base = ["warm", str(requests), "--dir", str(tmp_path / "c"), "--base-url", fake_api.openai_base_url,
            "--header", "Authorization: Bearer sk-cli-warm-000000"]
    first = run(*base)
    assert first.returncode == 0, first.stderr
    assert "2 requests: 0 fresh, 2 recorded, 0 refreshed, 0 missing, 0 failed" in first.stdout
    assert "warming [##############################] 2/2" in first.stderr
    # not a terminal (a CI log): the bar's last state only, on a line of its own, not redrawn
    assert "\r" not in first.stderr and "1/2" not in first.stderr
    again = json.loads(run(*base, "--json").stdout)
    assert (again["fresh"], again["recorded"]) == (2, 0)
    assert fake_api.count() == 2
    assert len(list((tmp_path / "c").rglob("*.yaml"))) == 2
    replay_only = run("warm", str(requests), "--dir", str(tmp_path / "empty"), "--mode", "replay",
                      "--base-url", fake_api.openai_base_url)
    assert replay_only.returncode == 1 and "2 missing" in replay_only.stdout
    assert run("warm", str(tmp_path / "nope.yaml")).returncode == 1
    bad_header = run("warm", str(requests), "--header", "no colon")
    assert bad_header.returncode == 2 and "--header must look like 'Name: value'" in bad_header.stderr
    assert run("warm", str(requests), "--store", "ftp://x").returncode == 2
    method = tmp_path / "method.yaml"
    method.write_text("- {path: /chat/completions, method: 123, json: {}}\n")
    bad_method = run("warm", str(method), "--dir", str(tmp_path / "c"), "--base-url", fake_api.openai_base_url)
    assert bad_method.returncode == 2
    assert "method.yaml request 1 method must be an HTTP method like POST or GET, got 123" in bad_method.stderr
    down = run("warm", str(requests), "--store", "redis://127.0.0.1:1/0?timeout=0.5", "--base-url", fake_api.openai_base_url)
    assert down.returncode == 1 and "give another store with --store" in down.stderr
    assert "--llm-cache-store" not in down.stderr and "Traceback" not in down.stderr
    assert fake_api.count() == 2  # neither sent a request
