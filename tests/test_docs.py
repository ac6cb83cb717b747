"""The documentation's Python examples run as written, on real photos, so they cannot rot; the
README stays a front door and its links lead somewhere."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import copy_photos, real_photos

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# A python block, unless the line before it says why it cannot run here.
EXAMPLE = re.compile(r"(<!-- not run: [^\n]*-->\n)?```python\n(.*?)```", re.S)
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def examples() -> list:
    found = []
    for page in PAGES:
        for number, match in enumerate(EXAMPLE.finditer(page.read_text(encoding="utf-8"))):
            code = match.group(1) is None and match.group(2)
            if code:  # the digits sample is 1,797 images to compute features of: slow
                marks = [pytest.mark.slow] if "write_digits(" in code else []
                found.append(pytest.param(code, id=f"{page.name}:{number}", marks=marks))
    return found


@pytest.fixture
def workspace(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding what the examples name: photos/CLASS/*.jpg and photo.jpg."""
    for label in ("daisy", "sunflower"):
        copy_photos(real_photos(label, 16), tmp_path / "photos" / label)
    shutil.copy(real_photos("daisy", 1, skip=30)[0], tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HEADSTART_CACHE_DIR", str(cache_dir))
    return tmp_path


def test_there_are_examples_to_run():
    assert len(examples()) >= 2


@pytest.mark.parametrize("code", examples())
def test_the_example_runs(code: str, workspace: Path):
    if "write_digits(" in code:  # it writes its own photos
        shutil.rmtree(workspace / "photos")
    exec(compile(code, "<example>", "exec"), {"__name__": "__example__"})


def test_the_readme_is_a_front_door():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert readme.count("```bash") >= 2 and "bash scripts/test.sh" in readme


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_lead_to_files(page: Path):
    for target in LINK.findall(page.read_text(encoding="utf-8")):
        if "://" not in target and not target.startswith("mailto:"):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
