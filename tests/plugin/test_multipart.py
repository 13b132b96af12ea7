"""Multipart uploads through the openai SDK: keyed on their parts, not on the random boundary,
so a recorded upload replays; the cassette shows the parts, never the file's bytes."""

from __future__ import annotations

import hashlib

import pytest
from conftest import Project
from roundtrip import docs, everything_under, record_then_replay

from llm_cache.verify import check_file

# the uploaded files: bytes that must never be written into a cassette
AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt audio-bytes-never-stored"
OTHER_AUDIO = b"RIFF\x24\x00\x00\x00WAVEfmt other-audio-bytes"
IMAGE = b"\x89PNG\r\n\x1a\nimage-bytes-never-stored"

UPLOADS = f'''
import io, warnings

AUDIO, OTHER_AUDIO, IMAGE = {AUDIO!r}, {OTHER_AUDIO!r}, {IMAGE!r}

def test_uploads(client, save, llm_cache):
    audio = client.audio
    save("transcription", audio.transcriptions.create(
        model="whisper-1", file=("hello.wav", AUDIO, "audio/wav"), prompt="a greeting").model_dump())
    # the same form again, a file object this time: served, recorded once
    save("again", audio.transcriptions.create(
        model="whisper-1", file=("hello.wav", io.BytesIO(AUDIO), "audio/wav"), prompt="a greeting").model_dump())
    # the same file name with other bytes: another request
    save("other", audio.transcriptions.create(
        model="whisper-1", file=("hello.wav", OTHER_AUDIO, "audio/wav"), prompt="a greeting").model_dump())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # openai 3 deprecates translations
        save("translation", audio.translations.create(model="whisper-1", file=("hello.wav", AUDIO)).model_dump())
    save("file", client.files.create(file=("data.jsonl", b'{{"a": 1}}\\n'), purpose="batch").model_dump())
    save("edit", client.images.edit(model="gpt-image-1", image=("cat.png", IMAGE, "image/png"),
                                    prompt="add a hat").model_dump())
'''



def test_uploads_replay_whatever_the_boundary(project: Project, monkeypatch: pytest.MonkeyPatch) -> None:
    got = record_then_replay(
        project, monkeypatch, passed=1, requests=6, upstream=5, test_p_uploads=UPLOADS
    )
    assert got["transcription"]["text"].startswith(f"whisper-1 heard hello.wav ({len(AUDIO)} bytes")
    assert got["transcription"]["text"].endswith("after 'a greeting'")
    assert got["again"] == got["transcription"] != got["other"]
    assert got["translation"]["text"].startswith("translated hello.wav")
    assert (got["file"]["filename"], got["file"]["purpose"], got["file"]["bytes"]) == ("data.jsonl", "batch", 9)
    assert got["edit"]["data"][0]["revised_prompt"] == "add a hat (cat.png)"

    # the model of a form is its "model" field
    assert {p.parent.name for p in project.files()} == {"whisper-1", "gpt-image-1", "_no_model"}
    everything = everything_under(project)
    for content in (AUDIO, OTHER_AUDIO, IMAGE, b"audio-bytes", b"image-bytes"):
        assert content not in everything
    for path in project.files():
        assert check_file(path) == [], path  # llm-cache verify recomputes each key from the parts

    transcriptions = [d["request"] for d in docs(project)
                      if d["request"]["path"] == "/v1/audio/transcriptions"]
    assert {r["headers"]["content-type"] for r in transcriptions} == {"multipart/form-data"}  # no boundary
    [request] = [r for r in transcriptions if r["multipart"][-1]["size"] == len(AUDIO)]
    *fields, file_part = request["multipart"]
    assert fields == [{"name": "model", "text": "whisper-1"}, {"name": "prompt", "text": "a greeting"}]
    assert file_part == {"name": "file", "filename": "hello.wav", "content_type": "audio/wav",
                         "size": len(AUDIO), "sha256": hashlib.sha256(AUDIO).hexdigest()}
