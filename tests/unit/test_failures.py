"""Which frames of a failure the cache raised are the project's own (pytest/failures.py)."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path
from types import SimpleNamespace

from llm_cache.pytest.failures import _is_project, _project_packages

SITE = sysconfig.get_paths()["purelib"]


def frame(path: str, module: str) -> SimpleNamespace:
    return SimpleNamespace(f_code=SimpleNamespace(co_filename=path), f_globals={"__name__": module})


def test_the_projects_package_counts_as_its_own_even_installed_in_site_packages(tmp_path: Path) -> None:
    (tmp_path / "src" / "mypkg").mkdir(parents=True)
    (tmp_path / "src" / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "helpers.py").write_text("")
    (tmp_path / "notes").mkdir()  # a directory that is not a package
    packages = _project_packages(str(tmp_path))
    assert packages == {"mypkg", "helpers"}
    assert _is_project(frame(os.path.join(SITE, "mypkg", "client.py"), "mypkg.client"), packages)
    assert _is_project(frame(str(tmp_path / "tests" / "test_x.py"), "test_x"), packages)
    # an SDK's frame, a vendored copy under any site-packages, the standard library, the cache's own
    assert not _is_project(frame(os.path.join(SITE, "openai", "_base_client.py"), "openai._base_client"), packages)
    assert not _is_project(frame("/opt/app/lib/site-packages/httpx/_client.py", "httpx._client"), packages)
    assert not _is_project(frame(os.__file__, "os"), packages)
    import llm_cache.engine.scope as ours

    assert not _is_project(frame(ours.__file__, ours.__name__), packages | {"llm_cache"})
