"""A stand-in for the paper's repository: a git repository with ``generated_ds/<Language>/`` split files."""
from __future__ import annotations

import subprocess
from pathlib import Path

from languages.paper import STORED_DIRS, STORED_SPLITS


def fake_paper_repo(root: Path, language: str, splits: dict) -> Path:
    """A git repository laid out like the paper's (``generated_ds/<Language>/``) holding the given splits of
    ``language`` (split name -> strings), committed: what :mod:`languages.paper`'s readers take."""
    folder = root / "generated_ds" / STORED_DIRS[language]
    folder.mkdir(parents=True)
    for split, strings in splits.items():
        (folder / f"{STORED_SPLITS[split][0]}.txt").write_text("".join(s + "\n" for s in strings))
    git = ["git", "-C", str(root), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "data"], check=True)
    return root
