"""Bedrock through boto3's bedrock-runtime client: converse, converse_stream (AWS event-stream
frames, stored as readable messages and replayed as frames the SDK parses) and invoke_model,
recorded then replayed with the server unreachable. The SigV4 headers, which change with
every request, are neither stored nor in the key; the model comes from the path."""

from __future__ import annotations

import json

import boto3  # noqa: F401 - imported once here, not in every inner run
import pytest
from conftest import Project
from roundtrip import docs, everything_under, record_then_replay

from llm_cache.verify import check_file

ACCESS_KEY = "AKIAQ7ZR2LM9XC4VB8NT"  # shaped like an AWS access key id: the secret scan knows it
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKEN0123456789"
MODEL = "anthropic.claude-3-haiku-20240307-v1:0"

BEDROCK = f'''
import json, os
import boto3
from botocore.config import Config

MODEL = "{MODEL}"

def client():
    return boto3.client(
        "bedrock-runtime", region_name="us-east-1", endpoint_url=os.environ["FAKE_LLM_URL"],
        aws_access_key_id="{ACCESS_KEY}", aws_secret_access_key="{SECRET_KEY}",
        aws_session_token="{SESSION_TOKEN}", config=Config(retries={{"max_attempts": 1}}))

def answer(response):  # the parsed answer, without the HTTP metadata boto3 keeps beside it
    return {{k: v for k, v in response.items() if k != "ResponseMetadata"}}

def user(text):
    return [{{"role": "user", "content": [{{"text": text}}]}}]

def test_converse(save, llm_cache):
    bedrock = client()
    save("converse", answer(bedrock.converse(modelId=MODEL, messages=user("hello bedrock"))))
    stream = bedrock.converse_stream(modelId=MODEL, messages=user("bedrock stream"))
    save("stream", list(stream["stream"]))

def test_invoke_model(save, llm_cache):
    body = {{"anthropic_version": "bedrock-2023-05-31", "max_tokens": 64,
             "messages": [{{"role": "user", "content": "hello invoke"}}]}}
    r = client().invoke_model(modelId=MODEL, body=json.dumps(body))
    save("invoke", {{"contentType": r["contentType"], "body": json.loads(r["body"].read())}})
'''



def test_bedrock_converse_stream_and_invoke(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    got = record_then_replay(project, monkeypatch, passed=2, requests=3, upstream=3, test_p_bedrock=BEDROCK)
    assert got["converse"]["output"]["message"]["content"] == [{"text": "echo: hello bedrock"}]
    assert got["converse"]["usage"] == {"inputTokens": 2, "outputTokens": 3, "totalTokens": 5}
    events = got["stream"]
    assert [next(iter(e)) for e in (events[0], *events[-3:])] == [
        "messageStart", "contentBlockStop", "messageStop", "metadata"]
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "echo: bedrock stream"
    assert got["invoke"]["contentType"] == "application/json"
    assert got["invoke"]["body"]["content"][0]["text"] == "echo: hello invoke"

    # signed with SigV4, a fresh signature and date each time: never written, never in the key
    sent = project.server.calls
    assert all(c.headers["authorization"].startswith("AWS4-HMAC-SHA256") for c in sent)
    assert all(c.headers["x-amz-security-token"] == SESSION_TOKEN for c in sent)
    everything = everything_under(project).decode("utf-8", "replace")
    for secret in (ACCESS_KEY, SECRET_KEY, SESSION_TOKEN, "AWS4-HMAC-SHA256", "x-amz-date"):
        assert secret not in everything

    written = docs(project)
    assert {d["model"] for d in written} == {MODEL}  # from /model/{id}/..., percent-decoded
    for path, doc in zip(project.files(), written):
        assert check_file(path) == [], path
        assert set(doc["request"]["headers"]) <= {"content-type"}
    [stream] = [d for d in written if d["request"]["path"].endswith("/converse-stream")]
    assert stream["response"]["headers"]["content-type"] == "application/vnd.amazon.eventstream"
    messages = stream["response"]["eventstream"]  # decoded: headers and JSON a reviewer can read
    assert messages[0] == {"headers": {":event-type": "messageStart", ":content-type": "application/json",
                                       ":message-type": "event"}, "json": {"p": "abcdefg", "role": "assistant"}}
    assert messages[-2]["json"]["stopReason"] == "end_turn"
    assert stream["usage"] == {"input_tokens": 2, "output_tokens": 3}  # from the metadata message
    [converse] = [d for d in written if d["request"]["path"].endswith("/converse")]
    assert converse["usage"] == {"input_tokens": 2, "output_tokens": 3}
    assert json.loads(json.dumps(converse["request"]["json"])) == {
        "messages": [{"role": "user", "content": [{"text": "hello bedrock"}]}]}
