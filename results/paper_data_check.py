"""Check the paper's stored data sets against our languages (the counted checks of results/paper_data.md).

::

    git clone https://github.com/lacoco-lab/ssm_expressivity /tmp/ssm_expressivity
    python results/paper_data_check.py /tmp/ssm_expressivity

Reads ``generated_ds/<Language>/`` (via ``git show HEAD:...``, so a bare mirror works too) and prints,
per language and split: size, distinct strings, strings that are not members of our language, strings
also in the training file, the length range, and for Shuffle-k how many are properly nested; then the
two target checks: ``languages.get(name, targets="paper")`` against the stored Tomita-3 and
{0,1,2}*02* targets, and how many stored strings meet the original's target bug.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import languages  # noqa: E402
from languages.paper import STORED_DIRS as DIRS, STORED_SPLITS as SPLITS, read_stored as read, stored_split  # noqa: E402

def nested(s: str, pairs) -> bool:
    stack, opener = [], {c: o for o, c in pairs}
    for ch in s:
        if ch in opener:
            if not stack or stack.pop() != opener[ch]:
                return False
        else:
            stack.append(ch)
    return not stack


def main(repo: str) -> None:
    for name, d in DIRS.items():
        lang = languages.get(name)
        train = set(read(repo, f"generated_ds/{d}/train_src.txt"))
        cells = []
        for split, (src, _) in SPLITS.items():
            ss = read(repo, f"generated_ds/{d}/{src}.txt", missing_ok=True)
            if not ss:
                continue
            cell = (f"{split} n={len(ss)} distinct={len(set(ss))} non-members={sum(not lang.accepts(x) for x in ss)} "
                    f"len {min(map(len, ss))}-{max(map(len, ss))}")
            if split != "train":
                cell += f" in-train={len(set(ss) & train)}"
            if name.startswith("shuffle"):
                cell += f" nested={sum(nested(x, lang.pairs) for x in ss)}"
            cells.append(cell)
        print(f"{name}: " + " | ".join(cells))
    from languages.regular import tomita3_anywhere

    aw = tomita3_anywhere()
    t3 = [x for split in ("train", "bin0", "bin1") for x in stored_split(repo, "tomita3", split)]
    print(f"tomita3: {len(t3)} stored strings; rejected by the 'anywhere' reading: {sum(not aw.accepts(x) for x in t3)}")
    for name, d in (("tomita3", "Tomita-3"), ("zot", "012Star_0_2Star")):
        paper = languages.get(name, targets="paper")
        total = affected = mismatched = 0
        for split, (src, tgt) in SPLITS.items():
            for s, t in zip(read(repo, f"generated_ds/{d}/{src}.txt", missing_ok=True),
                            read(repo, f"generated_ds/{d}/{tgt}.txt", missing_ok=True)):
                total += 1
                rows = paper.allowed_matrix(s)[1:]  # the original has a target after each symbol only
                if name == "tomita3":  # two bits a position: may 0 follow, may 1 follow
                    mismatched += "".join("1" if b else "0" for r in rows for b in r[:2]) != t
                    affected += any(t[2 * i + (s[i + 1] == "1")] == "0" for i in range(len(s) - 1))
                else:  # 'e' where END may follow, else 'c'
                    mismatched += "".join("e" if r[-1] else "c" for r in rows) != t
                    ours = languages.get(name).allowed_matrix(s)[1:, -1]
                    affected += bool((ours & ~rows[:, -1]).any())
        what = ("the stored target forbids the symbol that comes next" if name == "tomita3"
                else "the stored target withholds END after a member prefix")
        print(f"{name}: {total} stored strings; {what} in {affected}; "
              f"targets='paper' differs from the stored target in {mismatched}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python results/paper_data_check.py PATH_TO_ssm_expressivity_CHECKOUT")
    main(sys.argv[1])
