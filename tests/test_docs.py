"""The documentation site (issue 18, item 3): `mkdocs build --strict` passes with no warning and fails on a
broken link; no link of the README or the pages points outside the repository and every relative one
resolves; the API reference documents every public name; the configuration reference is the schema's.
The docs tools are part of the `dev` extra: a missing mkdocs fails these tests, it does not skip them."""

import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import detzoo

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
PUBLIC_PACKAGES = ["detzoo", "detzoo.evaluation", "detzoo.inspect", "detzoo.models", "detzoo.predict", "detzoo.serve"]


def _build(config: Path, site: Path, cwd: Path) -> subprocess.CompletedProcess:
    assert importlib.util.find_spec("mkdocs") and importlib.util.find_spec("mkdocstrings"), \
        "mkdocs is not installed: pip install -c constraints.txt -e '.[docs]' (the dev extra has it)"
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
                          cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


def test_the_site_builds_strict_without_a_warning(tmp_path):
    built = _build(ROOT / "mkdocs.yml", tmp_path / "site", ROOT)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "WARNING" not in built.stderr, built.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "detzoo.Model" in api and "predict" in api  # the reference rendered from the docstrings
    assert (tmp_path / "site" / "recipes" / "index.html").is_file()


def test_a_broken_link_fails_the_build(tmp_path):
    """Strict mode is what makes a broken link or a missing page fail CI: checked on a copy with one of each."""
    copy = tmp_path / "repo"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "src").symlink_to(ROOT / "src")
    page = copy / "docs" / "evaluation.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no_such_page.md).\n")
    built = _build(copy / "mkdocs.yml", tmp_path / "site", copy)
    assert built.returncode != 0
    assert "no_such_page.md" in built.stderr
    page.write_text(page.read_text().replace("no_such_page.md", "training.md#no-such-heading"))
    built = _build(copy / "mkdocs.yml", tmp_path / "site", copy)
    assert built.returncode != 0 and "no-such-heading" in built.stderr


def _links(text: str) -> list[str]:
    """Markdown link and image targets outside code blocks and inline code."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", text)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_stay_in_the_repository_and_resolve(page):
    text = page.read_text()
    assert "shared/docs" not in text and "../shared" not in text.replace("../shared/data", ""), \
        f"{page.name} names a file outside the repository"
    links = _links(text)
    for link in links:
        if re.match(r"https?://", link):
            continue  # an upstream project's page
        assert not re.match(r"[a-z]+:", link), f"{page.name}: {link}: only http(s) and relative links"
        target = link.split("#", 1)[0]
        if not target:
            continue  # a heading of the same page (mkdocs checks those of the docs)
        resolved = (page.parent / target).resolve()
        assert resolved.is_relative_to(ROOT), f"{page.name}: {link} points outside the repository"
        assert resolved.exists(), f"{page.name}: {link} does not exist"
    if page.name == "README.md":
        assert {"docs/getting-started.md", "docs/api.md", "docs/recipes.md"} <= set(links)


def test_every_page_is_in_the_navigation():
    config = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r"^\s*-\s[^:#]+:\s*(\S+\.md)\s*$", config, flags=re.M))
    assert listed == {p.name for p in DOCS.glob("*.md")}


def _public_names() -> list[tuple[str, str]]:
    names = [("detzoo.api", "load")]
    for package in PUBLIC_PACKAGES:
        module = importlib.import_module(package)
        names += [(package, name) for name in module.__all__ if not name.startswith("__")]
    return names


def test_the_api_reference_covers_every_public_name():
    reference = (DOCS / "api.md").read_text()
    assert detzoo.__all__ == ["Model", "Result", "__version__", "load"]
    for package, name in _public_names():
        obj = getattr(importlib.import_module(package), name)
        where = f"{obj.__module__}.{name}"
        assert f"::: {where}\n" in reference, f"docs/api.md: no reference entry for {package}.{name} ({where})"


def test_the_configuration_reference_is_the_schemas():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "tools" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tables = module.reference()
    assert tables in (DOCS / "configuration.md").read_text(), \
        "regenerate docs/configuration.md's tables: python tools/config_reference.py"
    for key in ("`score_thresh`", "`save_every_steps`", "`fill_gaps`", "`zoom_out_max`", "`split`"):
        assert key in tables
