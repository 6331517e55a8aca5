"""The commands of the README and the documentation pages (docs/*.md) as printed (issue 9, item 8; issue 18):
every `detzoo` command of a ```bash block parses as the command line reads it, every bash block is valid
bash, no line continuation is followed by a comment (the shell would end the command there), every ```python
block compiles, and train.slurm is the very script docs/training.md shows. The README's Python quick start
runs as printed in tests/test_api.py."""

import ast
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from detzoo.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _bash_blocks(text: str) -> list[str]:
    return _blocks(text, "bash")


def _page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _detzoo_arguments(block: str) -> list[list[str]]:
    """The arguments of each `detzoo ...`, `python -m detzoo ...` or `torchrun ... -m detzoo[.cli] ...` command
    of a bash block (continuations joined, comments, environment assignments and a trailing `&` dropped)."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
            words = words[1:]
        if words and words[-1] == "&":
            words = words[:-1]
        if words[:1] == ["detzoo"]:
            commands.append(words[1:])
        elif "-m" in words and words.index("-m") + 1 < len(words) \
                and words[words.index("-m") + 1] in ("detzoo", "detzoo.cli"):
            commands.append(words[words.index("-m") + 2:])
    return commands


def test_there_are_pages_and_commands():
    assert {"README.md", "docs/training.md", "docs/getting-started.md"} <= {_page_id(p) for p in PAGES}
    assert sum(len(_detzoo_arguments(b)) for p in PAGES for b in _bash_blocks(p.read_text())) >= 40


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_no_continuation_is_followed_by_a_comment(page):
    for block in _bash_blocks(page.read_text()):
        for line in block.splitlines():
            assert not re.search(r"\\\s+#", line), f"{_page_id(page)}: '\\' then a comment ends the command: {line}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_bash_blocks_are_bash(page):
    for block in _bash_blocks(page.read_text()):
        checked = subprocess.run(["bash", "-n"], input=block, text=True, capture_output=True)
        assert checked.returncode == 0, f"{_page_id(page)}: not valid bash:\n{block}\n{checked.stderr}"


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_every_detzoo_command_parses_as_the_cli_reads_it(page, capsys):
    for block in _bash_blocks(page.read_text()):
        for arguments in _detzoo_arguments(block):
            try:
                build_parser().parse_args(arguments)
            except SystemExit:
                pytest.fail(f"{_page_id(page)}: `detzoo {' '.join(arguments)}` is refused by the command line:\n"
                            f"{capsys.readouterr().err}")


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_python_blocks_compile(page):
    for block in _blocks(page.read_text(), "python"):
        ast.parse(block, filename=_page_id(page))


def test_train_slurm_is_the_script_the_docs_show():
    training = (ROOT / "docs" / "training.md").read_text()
    section = training[training.index("## SLURM"):]
    assert _bash_blocks(section)[0] == (ROOT / "train.slurm").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "train.slurm")], check=True)  # parses as bash
