"""The README's commands as printed (issue 9, item 8): no line continuation followed by a comment (the shell
would end the command there), and train.slurm is in the repository, the very script the README shows."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_no_continuation_is_followed_by_a_comment():
    for block in _bash_blocks((ROOT / "README.md").read_text()):
        for line in block.splitlines():
            assert not re.search(r"\\\s+#", line), f"README: '\\' then a comment ends the command: {line}"


def test_train_slurm_is_the_script_the_readme_shows():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("### SLURM"):]
    assert _bash_blocks(section)[0] == (ROOT / "train.slurm").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "train.slurm")], check=True)  # parses as bash
