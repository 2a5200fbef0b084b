"""The README's two commands are a contract: the set-up line runs the timed main job, the test line is .ci/run's."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.main_command_time import MAIN_JOB

ROOT = Path(__file__).resolve().parent.parent


def bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_readme_setup_line_runs_the_timed_main_job():
    setup = bash_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[0]
    commands = [part.strip() for part in setup.split("&&")]
    print(commands)
    assert commands[0].startswith("python3 -m pip install") and "torch==" in commands[0]
    assert tuple(commands[-len(MAIN_JOB):]) == MAIN_JOB


def test_readme_test_line_is_what_ci_runs():
    test_line = bash_blocks((ROOT / "README.md").read_text(encoding="utf-8"))[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert test_line in ci.splitlines()
