"""Without --dir or --store, the llm-cache command works on the store the project's test run uses:
its pytest configuration, found and read as pytest finds and reads it."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
from conftest import Project
from fakeapi import FakeLLMServer
from test_cli import chat_entry, run

from llm_cache.stores.files import FileStore


def _project(root: Path, files: dict[str, str], cassettes: str = "tests/cassettes") -> str:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text))
    entry = chat_entry("a question of the project", "an answer")
    FileStore(root / cassettes).put(entry)
    (root / "src" / "deep").mkdir(parents=True, exist_ok=True)
    return entry.key


def _listed(root: Path, *args: str, cwd: Path | None = None) -> list[dict[str, object]]:
    out = run("ls", "--json", *args, cwd=cwd or root / "src" / "deep")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize(("name", "text"), [
    ("pytest.ini", "[pytest]\nllm_cache_dir = tests/cassettes\n"),
    (".pytest.ini", "[pytest]\nllm_cache_dir = tests/cassettes\n"),
    ("pyproject.toml", '[tool.pytest.ini_options]\nllm_cache_dir = "tests/cassettes"\n'),
    ("pyproject.toml", '[tool.pytest]\nllm_cache_dir = "tests/cassettes"\n'),
    ("pytest.toml", '[pytest]\nllm_cache_dir = "tests/cassettes"\n'),
    ("tox.ini", "[tox]\nenvlist = py311\n[pytest]\nllm_cache_dir = tests/cassettes\n"),
    ("setup.cfg", "[metadata]\nname = x\n[tool:pytest]\nllm_cache_dir = tests/cassettes\n"),
])
def test_the_cassette_directory_is_read_from_each_kind_of_pytest_configuration(
        tmp_path: Path, name: str, text: str) -> None:
    key = _project(tmp_path, {name: text})
    assert [item["key"] for item in _listed(tmp_path)] == [key]


def test_without_a_directory_setting_it_is_cassettes_beside_the_configuration(tmp_path: Path) -> None:
    key = _project(tmp_path, {"pyproject.toml": "[tool.pytest.ini_options]\naddopts = '-q'\n"}, cassettes="cassettes")
    assert [item["key"] for item in _listed(tmp_path)] == [key]  # from src/deep, not ./cassettes there
    missing = run("ls", cwd=tmp_path / "src" / "deep")
    assert missing.returncode == 0
    shutil.rmtree(tmp_path / "cassettes")
    gone = run("ls", cwd=tmp_path / "src")
    assert gone.returncode == 1
    assert gone.stderr.strip() == ("llm-cache ls: no cassette directory at "
                                   f"{tmp_path / 'cassettes'} (cassettes/ beside {tmp_path / 'pyproject.toml'}; "
                                   "give another with --dir or --store)")


def test_the_first_file_that_configures_pytest_wins_as_in_pytest(tmp_path: Path) -> None:
    # in one directory pytest.ini comes before pyproject.toml; a pyproject.toml without a pytest
    # table, or a tox.ini without [pytest], is passed over for the directory above
    key = _project(tmp_path, {
        "pytest.ini": "[pytest]\nllm_cache_dir = tests/cassettes\n",
        "pyproject.toml": '[tool.pytest.ini_options]\nllm_cache_dir = "not/here"\n',
        "src/pyproject.toml": '[project]\nname = "inner"\n',
        "src/tox.ini": "[tox]\nenvlist = py311\n",
    })
    assert [item["key"] for item in _listed(tmp_path)] == [key]
    (tmp_path / "src" / "pytest.ini").write_text("[pytest]\nllm_cache_dir = inner\n")  # always counts, as in pytest
    nearer = run("ls", cwd=tmp_path / "src" / "deep")
    assert nearer.returncode == 1 and f"no cassette directory at {tmp_path / 'src' / 'inner'} " in nearer.stderr
    assert "(llm_cache_dir in " in nearer.stderr and str(tmp_path / "src" / "pytest.ini") in nearer.stderr


def test_flags_beat_addopts_which_beat_ini_values(tmp_path: Path) -> None:
    key = _project(tmp_path, {"pyproject.toml": """\
        [tool.pytest.ini_options]
        llm_cache_dir = "not/here"
        addopts = "-q --llm-cache-dir tests/cassettes -p no:cacheprovider"
        """})
    assert [item["key"] for item in _listed(tmp_path)] == [key]
    other = FileStore(tmp_path / "other")
    other.put(chat_entry("another question", "another answer"))
    assert [item["key"] for item in _listed(tmp_path, "--dir", str(tmp_path / "other"))] != [key]
    assert len(_listed(tmp_path, "--store", f"file://{tmp_path / 'other'}")) == 1


def test_a_store_url_is_taken_from_the_rootdir_and_wins_over_the_directory(tmp_path: Path) -> None:
    key = _project(tmp_path, {"pytest.ini": "[pytest]\nllm_cache_dir = not/here\nllm_cache_store = file://shared\n"},
                   cassettes="shared")
    assert [item["key"] for item in _listed(tmp_path)] == [key]
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --llm-cache-store=redis://127.0.0.1:1/0?timeout=0.3\n")
    down = run("stats", cwd=tmp_path / "src")
    assert down.returncode == 1 and "is unavailable within 0.3 s" in down.stderr
    assert "(this one is --llm-cache-store in the addopts of" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1


def test_the_ttl_is_the_projects_unless_given(tmp_path: Path) -> None:
    _project(tmp_path, {"pytest.ini": "[pytest]\nllm_cache_dir = tests/cassettes\nllm_cache_ttl = 12h\n"})
    stats = run("stats", cwd=tmp_path)
    assert stats.returncode == 0 and "(ttl 12h;" in stats.stdout
    assert "(ttl 3d;" in run("stats", "--ttl", "3d", cwd=tmp_path).stdout
    (tmp_path / "pytest.ini").write_text("[pytest]\nllm_cache_dir = tests/cassettes\n")
    assert "(ttl 30d;" in run("stats", cwd=tmp_path).stdout


def test_verify_allows_what_the_project_allows(tmp_path: Path) -> None:
    _project(tmp_path, {"pytest.ini": "[pytest]\nllm_cache_dir = tests/cassettes\n"})
    path = next((tmp_path / "tests" / "cassettes").rglob("*.yaml"))
    path.write_text(path.read_text().replace("an answer", "key sk-proj-EXAMPLEEXAMPLE1234567890ab"))
    flagged = run("verify", cwd=tmp_path)
    assert flagged.returncode == 1 and "looks like an openai or anthropic key" in flagged.stdout
    (tmp_path / "pytest.ini").write_text("[pytest]\nllm_cache_dir = tests/cassettes\n"
                                         "llm_cache_secret_allowlist =\n    sk-proj-EXAMPLE\n")
    allowed = run("verify", cwd=tmp_path)
    assert allowed.returncode == 0, allowed.stdout
    assert "1 cassette checked, all sound" in allowed.stdout


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("pytest.ini", "[pytest]\nllm_cache_ttl = 3 days\n",
     ("llm-cache stats: error: llm_cache_ttl in pytest.ini must be a duration like 90s, 30m, 12h, 30d or 2w, "
      "or 'never', got '3 days'")),
    ("pytest.ini", "[pytest]\nllm_cache_store = memory://\n",
     ("llm-cache stats: error: llm_cache_store in pytest.ini is memory://, which cannot be inspected: "
      "a memory store lives in one process only, and is gone when it ends; give --dir DIR or --store *")),
    ("pytest.ini", "[pytest]\nllm_cache_store = ftp://host/x\n",
     "llm-cache stats: error: llm_cache_store in pytest.ini must be a store URL: file://PATH, *, got 'ftp://host/x'"),
    # no scheme: a path is what --store takes, not what the plugin takes from llm_cache_store
    ("pytest.ini", "[pytest]\nllm_cache_store = some/dir\n",
     "llm-cache stats: error: llm_cache_store in pytest.ini must be a store URL: *, got 'some/dir'"),
    ("pytest.ini", "[pytest\nllm_cache_dir = x\n",
     ("llm-cache stats: error: the pytest configuration pytest.ini cannot be parsed: *pytest.ini:1: * "
      "(--dir DIR and --ttl AGE need no configuration)")),
    ("pytest.ini", '[pytest]\naddopts = --llm-cache-dir "unclosed\n',
     "llm-cache stats: error: addopts in pytest.ini cannot be split into arguments: No closing quotation"),
    ("pyproject.toml", '[tool.pytest]\nllm_cache_dir = ["a", "b"]\n',
     "llm-cache stats: error: llm_cache_dir in pyproject.toml must be a string, got a list of str"),
    ("pyproject.toml", "[tool.pytest]\nllm_cache_ttl = 7\n",
     "llm-cache stats: error: llm_cache_ttl in pyproject.toml must be a string, got a TOML int"),
    ("pyproject.toml", "[tool.pytest]\naddopts = 5\n",
     "llm-cache stats: error: addopts in pyproject.toml must be a string or a list of strings, got a TOML int"),
    ("pyproject.toml", '[tool.pytest]\nllm_cache_secret_allowlist = "sk-x"\n',
     "llm-cache stats: error: llm_cache_secret_allowlist in pyproject.toml must be a list of strings, got a string"),
    ("pyproject.toml", '[tool.pytest]\nminversion = "9"\n[tool.pytest.ini_options]\nllm_cache_dir = "c"\n',
     ("llm-cache stats: error: the pytest configuration pyproject.toml has both [tool.pytest] and "
     "[tool.pytest.ini_options]: pytest reads one of them *")),
    ("setup.cfg", "[pytest]\nllm_cache_dir = c\n",
     ("llm-cache stats: error: the pytest configuration setup.cfg has a [pytest] section, which pytest no longer "
     "reads in setup.cfg: name it [tool:pytest] *")),
    ("pytest.toml", 'llm_cache_dir = "c"\n',
     ("llm-cache stats: error: the pytest configuration pytest.toml has options outside a [pytest] table "
     "(llm_cache_dir) *")),
])
def test_a_bad_configuration_is_bad_usage_naming_the_file(tmp_path: Path, name: str, text: str, expected: str) -> None:
    (tmp_path / name).write_text(text)
    (tmp_path / "cassettes").mkdir()
    out = run("stats", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1
    # '*' stands for any text; brackets are literal (fnmatch would take them for a set)
    assert re.fullmatch(".*".join(map(re.escape, expected.split("*"))), out.stderr.strip()), out.stderr
    # the flags name their store: the configuration is never read then, for the TTL or the allowlist either
    for command in (["stats"], ["verify"], ["ls"]):
        given = run(*command, "--dir", str(tmp_path / "cassettes"), cwd=tmp_path)
        assert given.returncode == 0, given.stderr
    assert run("stats", "--store", f"file://{tmp_path / 'cassettes'}", cwd=tmp_path).returncode == 0


def test_a_value_of_the_wrong_type_is_not_shown_since_it_may_hold_a_password(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[tool.pytest]\naddopts = ["--llm-cache-store=redis://:hunter2@cache:6379/0", 3]\n'
        'llm_cache_store = ["redis://:hunter2@cache:6379/0"]\n')
    out = run("ls", cwd=tmp_path)
    assert out.returncode == 2 and "hunter2" not in out.stderr, out.stderr
    assert "llm_cache_store in pyproject.toml must be a string, got a list of str" in out.stderr


def test_an_empty_value_is_unset_as_the_plugin_takes_it(tmp_path: Path) -> None:
    key = _project(tmp_path, {"pytest.ini": """\
        [pytest]
        llm_cache_dir = tests/cassettes
        llm_cache_ttl =
        llm_cache_store =
        addopts = --llm-cache-dir= --llm-cache-store=
        """})
    assert [item["key"] for item in _listed(tmp_path)] == [key]
    assert "(ttl 30d;" in run("stats", cwd=tmp_path).stdout


def test_o_in_addopts_overrides_the_ini_value_and_a_flag_there_wins_over_both(tmp_path: Path) -> None:
    key = _project(tmp_path, {"pytest.ini": "[pytest]\nllm_cache_dir = not/here\nllm_cache_ttl = 1d\n"
                                            "addopts = -o llm_cache_dir=tests/cassettes --override-ini=llm_cache_ttl=5h\n"})
    assert [item["key"] for item in _listed(tmp_path)] == [key]
    assert "(ttl 5h;" in run("stats", cwd=tmp_path).stdout
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = --llm-cache-ttl=2h -o llm_cache_ttl=5h\n"
                                         "llm_cache_dir = tests/cassettes\n")
    assert "(ttl 2h;" in run("stats", cwd=tmp_path).stdout


@pytest.mark.parametrize("marker", ["pyproject.toml", "setup.py"])
def test_the_rootdir_pytest_takes_without_a_configuration_is_the_commands(tmp_path: Path, marker: str) -> None:
    # pytest takes the first pyproject.toml as its (empty) configuration when no file configures it,
    # and else the first directory with a setup.py as its rootdir
    key = _project(tmp_path, {marker: '[project]\nname = "x"\n' if marker == "pyproject.toml" else ""},
                   cassettes="cassettes")
    assert [item["key"] for item in _listed(tmp_path)] == [key]
    (tmp_path / "cassettes" / ".llm-cache").mkdir(exist_ok=True)
    shutil.rmtree(tmp_path / "cassettes")
    gone = run("ls", cwd=tmp_path)
    assert gone.returncode == 1
    assert f"no cassette directory at cassettes (cassettes/ beside {marker}; give another" in gone.stderr


def test_a_directory_setting_that_names_a_file_says_so(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text("[pytest]\nllm_cache_dir = sub/../afile\n")
    (tmp_path / "afile").write_text("")
    out = run("ls", cwd=tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == ("llm-cache ls: afile is not a directory "
                                  "(llm_cache_dir in pytest.ini; give another with --dir or --store)")


def test_warm_takes_a_memory_store_as_a_flag_but_not_from_the_project(tmp_path: Path, fake_api: FakeLLMServer) -> None:
    requests = tmp_path / "requests.yaml"
    requests.write_text('- path: /chat/completions\n  json: {model: gpt-4o, messages: [{role: user, content: hi}]}\n')
    checked = run("warm", str(requests), "--store", "memory://", "--base-url", fake_api.openai_base_url, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "1 requests: 0 fresh, 1 recorded" in checked.stdout
    (tmp_path / "pytest.ini").write_text("[pytest]\nllm_cache_store = memory://\n")
    refused = run("warm", str(requests), "--base-url", fake_api.openai_base_url, cwd=tmp_path)
    assert refused.returncode == 2
    assert ("llm-cache warm: error: llm_cache_store in pytest.ini is memory://, which keeps nothing once the command "
            "ends: warm a store the tests read with --dir DIR or --store") in refused.stderr


def test_a_broken_pyproject_is_named_and_diff_of_two_files_never_reads_it(tmp_path: Path) -> None:
    _project(tmp_path, {"pytest.ini": "[pytest]\nllm_cache_dir = tests/cassettes\n"})
    (tmp_path / "pytest.ini").unlink()
    (tmp_path / "pyproject.toml").write_text("[tool.pytest.ini_options\n")
    out = run("ls", cwd=tmp_path)
    assert out.returncode == 2
    assert "llm-cache ls: error: the pytest configuration pyproject.toml cannot be parsed: Expected ']'" in out.stderr
    path = str(next((tmp_path / "tests" / "cassettes").rglob("*.yaml")))
    assert run("diff", path, path, cwd=tmp_path).returncode == 0


def test_warm_fills_the_projects_store(tmp_path: Path, fake_api: FakeLLMServer) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.pytest.ini_options]\nllm_cache_dir = "tests/cassettes"\n')
    requests = tmp_path / "requests.yaml"
    requests.write_text('- path: /chat/completions\n  json: {model: gpt-4o, messages: [{role: user, content: hi}]}\n')
    (tmp_path / "src").mkdir()
    out = run("warm", str(requests), "--base-url", fake_api.openai_base_url, cwd=tmp_path / "src")
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "tests" / "cassettes").rglob("*.yaml"))) == 1
    assert not (tmp_path / "src" / "cassettes").exists()


CALLS = '''
from conftest import chat

def test_a(client, llm_cache):
    assert chat(client, "one question").choices[0].message.content
'''


def test_the_command_sees_what_the_plugin_recorded_with_the_same_configuration(project: Project) -> None:
    project.pytester.makeini("[pytest]\nllm_cache_dir = recorded/here\nllm_cache_ttl = 2h\n")
    project.pytester.makepyfile(test_calls=CALLS)
    project.run("--llm-cache=record").assert_outcomes(passed=1)
    recorded = sorted((project.pytester.path / "recorded" / "here").rglob("*.yaml"))
    assert len(recorded) == 1
    (project.pytester.path / "sub").mkdir()
    listed = _listed(project.pytester.path, cwd=project.pytester.path / "sub")
    assert [Path(str(item["path"])).resolve() for item in listed] == [recorded[0].resolve()]
    assert "(ttl 2h;" in run("stats", cwd=project.pytester.path / "sub").stdout


def test_the_largest_cassette_read_is_the_projects(tmp_path: Path) -> None:
    _project(tmp_path, {"pytest.ini": "[pytest]\nllm_cache_dir = tests/cassettes\nllm_cache_max_cassette_size = 200\n"})
    (listed,) = _listed(tmp_path)
    assert "more than the 200 allowed" in str(listed["error"])
    (tmp_path / "pytest.ini").write_text("[pytest]\nllm_cache_dir = tests/cassettes\nllm_cache_max_cassette_size = big\n")
    bad = run("ls", cwd=tmp_path)
    assert bad.returncode == 2 and "llm_cache_max_cassette_size in pytest.ini must be a size" in bad.stderr
