"""LLM-aware behaviour: drift in refresh, what is not kept, tokens and dollars saved, sequences."""

from __future__ import annotations

import json

import pytest

from conftest import Project

DRIFT = """
from conftest import chat
def test_it(client, llm_cache):
    chat(client, "drifting")
def test_stable(client, llm_cache):
    chat(client, "stable")
"""


def _age_all(project: Project) -> None:
    import re

    for path in project.files():
        text = path.read_text()
        if "drifting" in text:
            path.write_text(re.sub(r"recorded_at: '[^']+'", "recorded_at: '2020-01-01T00:00:00Z'", text, count=1))


@pytest.mark.all_xdist_modes
def test_refresh_reports_a_new_snapshot_fingerprint_and_text(project: Project) -> None:
    project.pytester.makepyfile(test_drift=DRIFT)
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    _age_all(project)
    project.server.snapshot, project.server.fingerprint, project.server.generation = "2024-11-20", "fp_bbb222", 2
    report = project.pytester.path / "r.json"
    result = project.run("--llm-cache=refresh", f"--llm-cache-report={report}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(
        [
            "drift (3): re-recorded answers that changed",
            "  test_drift.py::test_it  * response_model: 'gpt-4o-2024-08-06' -> 'gpt-4o-2024-11-20'",
            "  test_drift.py::test_it  * system_fingerprint: 'fp_aaa111' -> 'fp_bbb222'",
            "  test_drift.py::test_it  * text: 'echo: drifting' -> 'echo: drifting (gen 2)'",
        ],
        consecutive=True,
    )
    drift = json.loads(report.read_text())["drift"]
    assert [d["field"] for d in drift] == ["response_model", "system_fingerprint", "text"]
    assert drift[0]["old"] == "gpt-4o-2024-08-06" and drift[0]["new"] == "gpt-4o-2024-11-20"
    # the whole key, as misses_detail, stale_cassettes and unused_entries give it: a tool joins on it
    [cassette] = [p for p in project.files() if "drifting" in p.read_text()]
    assert {d["key"] for d in drift} == {cassette.read_text().split("key: ", 1)[1].split()[0]}
    assert len(drift[0]["key"]) == 64
    assert f"test_drift.py::test_it  {drift[0]['key'][:12]}  response_model" in result.stdout.str()


def test_a_refresh_that_changed_nothing_reports_no_drift(project: Project) -> None:
    project.pytester.makepyfile(test_drift=DRIFT)
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    _age_all(project)
    result = project.run("--llm-cache=refresh")
    result.stdout.fnmatch_lines(["*refreshed: 1*"])
    result.stdout.no_fnmatch_line("drift*")


NOT_KEPT = """
import httpx2, openai, anthropic, os
from conftest import chat

def mock_client(payload):
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=payload))
    return openai.OpenAI(base_url="http://mock.test/v1", api_key="sk-x", max_retries=0,
                         http_client=httpx2.Client(transport=transport))

def test_truncated_chat(client, llm_cache, save):
    save("truncated", chat(client, "long answer please", max_tokens=1).choices[0].finish_reason)

def test_truncated_anthropic(anthropic_client, llm_cache, save):
    r = anthropic_client.messages.create(model="claude-x", max_tokens=1, messages=[{"role": "user", "content": "hi"}])
    save("anthropic", r.stop_reason)

def test_empty_choices(llm_cache, save):
    r = mock_client({"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": []}
                    ).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "e1"}])
    save("empty_choices", len(r.choices))

def test_empty_content(llm_cache, save):
    r = mock_client({"id": "x", "object": "chat.completion", "created": 1, "model": "gpt-4o", "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": ""}}]}
                    ).chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "e2"}])
    save("empty_content", r.choices[0].message.content)

def test_kept(client, llm_cache):
    chat(client, "a normal answer")
"""


@pytest.mark.all_xdist_modes
def test_empty_and_truncated_answers_are_not_kept_but_reach_the_test(project: Project) -> None:
    project.pytester.makepyfile(test_notkept=NOT_KEPT)
    report = project.pytester.path / "r.json"
    result = project.run("--llm-cache=record", f"--llm-cache-report={report}")
    result.assert_outcomes(passed=5)
    assert (project.result("truncated"), project.result("anthropic")) == ("length", "max_tokens")
    assert (project.result("empty_choices"), project.result("empty_content")) == (0, "")
    assert len(project.files()) == 1  # only the normal answer
    result.stdout.fnmatch_lines(["not stored: 4 (empty 2, truncated 2)"])
    assert json.loads(report.read_text())["not_stored_reasons"] == {"empty": 2, "truncated": 2}
    # each refusal is said at once, with what replay will do and the setting that keeps it
    out = result.stdout.str()
    for reason, why in (("truncated", "the answer was cut off by the token limit"),
                        ("empty", "the answer is empty")):
        assert out.count(f"To keep such answers: set llm_cache_record_{reason} = true") == 2, out
        result.stdout.fnmatch_lines([f"*NotStoredWarning: not storing *.yaml: {why}*; a replay will miss it, "
                                     "and a recording asks again. *"])
    # the field that said it was cut off, as each provider wrote it
    assert out.count("cut off by the token limit (finish_reason: length)") == 1, out
    assert out.count("cut off by the token limit (stop_reason: max_tokens)") == 1, out


TRUNCATED = """
from conftest import chat

def test_truncated(client, llm_cache):
    assert chat(client, "long answer please", max_tokens=1).choices[0].finish_reason == "length"
"""


def test_replay_of_an_answer_not_kept_says_why_and_the_setting_that_keeps_it(project: Project) -> None:
    project.pytester.makepyfile(test_cut=TRUNCATED)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert project.files() == []
    missed = project.run()
    missed.assert_outcomes(failed=1)
    missed.stdout.fnmatch_lines([
        "*recorded, not kept: the answer was cut off by the token limit (finish_reason: length)",
        "*fix: set llm_cache_record_truncated = true, then record it with --llm-cache=record*",
    ])
    # kept once the setting says so: the note is gone, and replay passes
    project.pytester.makeini("[pytest]\nllm_cache_record_truncated = true\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert len(project.files()) == 1
    assert not list((project.cassettes / ".llm-cache" / "refused").iterdir())
    project.run().assert_outcomes(passed=1)
    # a request that was never refused misses as before: record it
    project.pytester.makepyfile(test_cut=TRUNCATED.replace("long answer please", "another question"))
    other = project.run()
    other.assert_outcomes(failed=1)
    assert "recorded, not kept" not in other.stdout.str()
    other.stdout.fnmatch_lines(["*fix: record it with --llm-cache=record*"])


CLOSED_EARLY = """
def test_first_chunk_only(client, llm_cache):
    stream = client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "a long answer please in many words"}], stream=True)
    for chunk in stream:
        break
    stream.close()

def test_not_stored_on_request(client, llm_cache):
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "just this once"}],
                                   extra_headers={"x-llm-cache": "no-store"})
"""


def test_a_stream_closed_early_or_a_no_store_answer_is_counted_and_its_miss_says_why(project: Project) -> None:
    """Recording them again would never help: the record run counts and says the closed
    stream, and replay's miss of either says why it was not kept, not "record it"."""
    project.pytester.makepyfile(test_early=CLOSED_EARLY)
    recorded = project.run("--llm-cache=record")
    recorded.assert_outcomes(passed=2, warnings=1)
    assert project.files() == []
    recorded.stdout.fnmatch_lines([
        "*NotStoredWarning: not storing *.yaml: the stream was closed before its provider's last event*",
        "not stored: 2 (closed early 1, no-store 1)",
    ])
    missed = project.run()
    missed.assert_outcomes(failed=2)
    missed.stdout.fnmatch_lines([
        "*recorded, not kept: the stream was closed before its provider's last event: it would replay cut short",
        "*fix: read the stream to its end while recording *, then record it with --llm-cache=record*",
    ])
    missed.stdout.fnmatch_lines([
        "*recorded, not kept: the request asked not to store its answer (x-llm-cache: no-store)",
        "*fix: leave no-store out of this request where it must replay, then record it*",
    ])


def test_keeping_them_is_configurable(project: Project) -> None:
    project.pytester.makepyfile(test_notkept=NOT_KEPT)
    project.pytester.makeini("[pytest]\nllm_cache_record_empty = true\nllm_cache_record_truncated = true\n")
    project.run("--llm-cache=record").assert_outcomes(passed=5)
    assert len(project.files()) == 5
    project.run().assert_outcomes(passed=5)  # and they replay


def test_embeddings_are_never_taken_for_empty_answers(project: Project) -> None:
    project.pytester.makepyfile(
        test_emb="def test_it(client, llm_cache):\n    client.embeddings.create(model='text-embedding-3-small', input='x')\n"
    )
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert len(project.files()) == 1


COSTLY = """
from conftest import chat
def test_a(client, llm_cache):
    chat(client, "one two three")
    chat(client, "one two three")
def test_b(client, llm_cache):
    chat(client, "four", model="gpt-4o-mini")
    chat(client, "four", model="gpt-4o-mini")
def test_c(client, llm_cache):
    chat(client, "five", model="claude-x")
    chat(client, "five", model="claude-x")
"""


@pytest.mark.all_xdist_modes
def test_tokens_and_dollars_saved_from_the_prices_given(project: Project) -> None:
    project.pytester.makepyfile(test_cost=COSTLY)
    project.pytester.makeini("[pytest]\nllm_cache_prices =\n    gpt-4o = 2.50, 10.00\n    gpt-4o-mini = $0.15, $0.60\n")
    report = project.pytester.path / "r.json"
    result = project.run("--llm-cache=record", f"--llm-cache-report={report}")
    result.assert_outcomes(passed=3)
    data = json.loads(report.read_text())
    io = data["tokens_by_model"]
    # the server counts words: "one two three" is 3 in, "echo: one two three" 4 out
    assert io["gpt-4o"] == {"input": 3, "output": 4} and io["gpt-4o-mini"] == {"input": 1, "output": 2}
    expected = (3 * 2.50 + 4 * 10.00 + 1 * 0.15 + 2 * 0.60) / 1_000_000
    assert data["cost_saved"] == pytest.approx(expected)
    result.stdout.fnmatch_lines([f"saved: ${expected:.6f} at the llm_cache_prices given (1 without a price: claude-x)"])


def test_no_dollar_figure_when_no_model_served_has_a_price(project: Project) -> None:
    project.pytester.makepyfile(test_cost="from conftest import chat\n"
                                          "def test_it(client, llm_cache):\n    chat(client, 'x', model='claude-x')\n")
    project.pytester.makeini("[pytest]\nllm_cache_prices =\n    gpt-4o = 2.50, 10.00\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    result = project.run()  # replayed: its tokens were served from a cassette
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["tokens served from cassettes: *", "saved: no price in llm_cache_prices for claude-x"])
    result.stdout.no_fnmatch_line("saved: $*")


def test_no_prices_no_dollars(project: Project) -> None:
    project.pytester.makepyfile(test_cost=COSTLY)
    report = project.pytester.path / "r.json"
    result = project.run("--llm-cache=record", f"--llm-cache-report={report}")
    result.stdout.no_fnmatch_line("saved:*")
    assert json.loads(report.read_text())["cost_saved"] is None


def test_bad_prices_are_a_usage_error(project: Project) -> None:
    project.pytester.makepyfile(test_cost=COSTLY)
    project.pytester.makeini("[pytest]\nllm_cache_prices =\n    gpt-4o = cheap\n")
    result = project.run()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: llm_cache_prices must be lines 'model = input, output' in dollars per million tokens*"])


SEQUENCE = """
import itertools, httpx2, openai, pytest

def sampling_client():
    counter = itertools.count(1)
    def handler(request):
        n = next(counter)
        return httpx2.Response(200, json={"id": f"c{n}", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": f"answer {n}"}}]})
    return openai.OpenAI(base_url="http://mock.test/v1", api_key="sk-x", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))

def sample(client):
    return client.chat.completions.create(model="gpt-4o", temperature=1,
        messages=[{"role": "user", "content": "pick a number"}]).choices[0].message.content

@pytest.mark.llm_cache(sequence=True)
def test_agent_loop(save):
    client = sampling_client()
    save("sequence", [sample(client) for _ in range(3)])

def test_shared(llm_cache, save):
    client = sampling_client()
    save("shared", [sample(client) for _ in range(3)])
"""


@pytest.mark.all_xdist_modes
def test_sequence_records_each_occurrence_and_replays_in_order(project: Project) -> None:
    project.pytester.makepyfile(test_seq=SEQUENCE)
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    assert project.result("sequence") == ["answer 1", "answer 2", "answer 3"]
    # without sequence=True identical requests share one cassette: the first answer, three times
    assert project.result("shared") == ["answer 1", "answer 1", "answer 1"]
    assert len(project.files()) == 4
    project.clear_results()
    project.run().assert_outcomes(passed=2)
    assert project.result("sequence") == ["answer 1", "answer 2", "answer 3"]
    assert project.result("shared") == ["answer 1", "answer 1", "answer 1"]


def test_one_call_too_many_in_a_sequence_names_the_last_recorded_call_and_the_count(project: Project) -> None:
    project.pytester.makepyfile(test_seq=SEQUENCE)
    project.run("--llm-cache=record").assert_outcomes(passed=2)
    [third] = [p for p in project.files() if "answer 3" in p.read_text()]
    project.pytester.makepyfile(test_seq=SEQUENCE.replace("range(3)", "range(4)"))
    result = project.run("-k", "agent_loop")
    result.assert_outcomes(failed=1, deselected=1)
    # not the test_shared cassette of the same body, said to differ in "query or API-version headers"
    result.stdout.fnmatch_lines([
        f"E  *closest:   {third}",
        "E  *differs in: call count (this is call 4 of this request in a test marked sequence=True; 3 were recorded)",
    ])
    result.stdout.no_fnmatch_line("*query or API-version headers*")


def test_a_refusal_note_is_never_written_through_a_symlink(project: Project, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("outside")
    meta = project.cassettes / ".llm-cache"
    meta.mkdir(parents=True)
    (meta / "refused").symlink_to(outside, target_is_directory=True)
    project.pytester.makepyfile(test_cut=TRUNCATED)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    assert list(outside.iterdir()) == []  # nothing written where the link points
    project.run().assert_outcomes(failed=1)  # the miss still fails, without the note


def test_a_suite_run_with_warnings_as_errors_can_let_the_refusals_pass(project: Project) -> None:
    project.pytester.makepyfile(test_cut=TRUNCATED)
    project.pytester.makeini("[pytest]\nfilterwarnings =\n    error\n    ignore::llm_cache.NotStoredWarning\n")
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    project.pytester.makeini("[pytest]\nfilterwarnings =\n    error::llm_cache.LLMCacheWarning\n")
    strict = project.run("--llm-cache=record")  # a NotStoredWarning is an LLMCacheWarning too
    strict.assert_outcomes(failed=1)
    strict.stdout.fnmatch_lines(["*NotStoredWarning: not storing *"])
