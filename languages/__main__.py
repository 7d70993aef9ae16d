"""``python -m languages [NAME] [--K K] [--h H] [--p P] [--seed S] [--rows R]``

Without NAME: every language of the suite with its alphabet, class (star-free / non-star-free from the
minimal DFA's transition monoid, or counter), default length windows and one short sampled string
with its trace (abridged). With NAME: that language only, with a longer trace.
"""
from __future__ import annotations

import sys

from . import END, cli, get, names
from .dfa import DFA


def _fmt(v, width: int = 14) -> str:
    if isinstance(v, tuple) and v and all(isinstance(x, str) for x in v):
        text = "".join(v)
    else:
        text = "()" if v == () else (repr(v) if isinstance(v, str) else str(v))
    return text if len(text) <= width else text[: width - 1] + "…"


def _short_sample(lang, seed: int) -> str:
    for lo, hi in ((6, 16), (1, 24), (1, 64)):
        try:
            return lang.sample(1, lo, hi, seed=seed)[0]
        except ValueError:
            continue
    return ""


def show(lang, seed: int = 0, rows: int = 8, out=sys.stdout) -> None:
    sf = lang.is_star_free()
    cls = lang.kind
    detail = ""
    if isinstance(lang, DFA):
        detail = f"; minimal DFA {lang.num_states} states, transition monoid {len(lang.transition_monoid())}"
    elif sf is True:
        detail = " (regular, bounded depth; aperiodicity argued in languages.dyck)"
    params = f" {lang.params}" if lang.params else ""
    print(f"{lang.name}{params}: {lang.description}", file=out)
    print(f"  alphabet {' '.join(lang.alphabet)}   class {cls}{detail}"
          f"{'   target: prefix membership' if lang.membership_target else ''}", file=out)
    if lang.default_bins:
        bins = ", ".join(f"{k} [{a}, {b}]" for k, (a, b) in lang.default_bins.items())
        print(f"  default windows: {bins}", file=out)
    s = _short_sample(lang, seed)
    print(f"  sample {s!r} (len {len(s)}, member {lang.accepts(s)}); trace(s, initial=True), "
          f"'allowed' = allowed_next ($ = END):", file=out)
    tr = lang.trace(s, initial=True)
    allowed = lang.allowed_next(s)
    member = lang.prefix_labels(s)
    keys = list(tr)
    order = lang.alphabet + (END,)
    shown = ["".join(c for c in order if c in a) or "-" for a in allowed]
    aw = max(12, min(20, max(len(x) for x in shown)))
    header = f"    {'i':>3} {'read':>4}  {'allowed':<{aw}} {'in L':<5} " + " ".join(f"{k:<14}" for k in keys)
    print(header, file=out)
    n = len(s) + 1
    idx = list(range(n)) if n <= rows else list(range(rows - 2)) + [None] + [n - 2, n - 1]
    for i in idx:
        if i is None:
            print(f"    {'...':>3}", file=out)
            continue
        read = s[i - 1] if i else "^"
        vals = " ".join(f"{_fmt(tr[k][i]):<14}" for k in keys)
        al = shown[i] if len(shown[i]) <= aw else shown[i][: aw - 1] + "…"
        print(f"    {i:>3} {read:>4}  {al:<{aw}} {str(member[i]):<5} {vals}", file=out)


@cli.cli("python -m languages")
def main(argv=None) -> int:
    ap = cli.ArgumentParser(prog="python -m languages", description=__doc__.split("\n\n")[1])
    ap.add_argument("name", nargs="?", choices=names(), metavar="NAME",
                    help="one language (default: all 29): " + ", ".join(names()))
    ap.add_argument("--K", type=cli.positive_int, help="dyck: bracket types")
    ap.add_argument("--h", type=cli.positive_int, help="dyck: maximum depth")
    ap.add_argument("--p", type=cli.probability, help="flipflop: probability of i; boolean3/5: operator probability")
    ap.add_argument("--seed", type=cli.nonnegative_int, default=0)
    ap.add_argument("--rows", type=cli.positive_int, default=None, help="trace rows to show")
    args = ap.parse_args(argv)
    params = {k: getattr(args, k) for k in ("K", "h", "p") if getattr(args, k) is not None}
    if params and not args.name:
        raise cli.UsageError(f"--{next(iter(params))} needs a language NAME (it sets that language's parameter)")
    if args.name:
        show(get(args.name, **params), seed=args.seed, rows=args.rows or 40)
        return 0
    counts = {"star-free": 0, "non-star-free": 0, "counter": 0}
    for name in names():
        lang = get(name)
        show(lang, seed=args.seed, rows=args.rows or 8)
        counts[lang.kind] += 1
        print()
    print(f"{len(names())} languages: {counts['star-free']} star-free (incl. flipflop and dyck), "
          f"{counts['non-star-free']} non-star-free, {counts['counter']} counter")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except BrokenPipeError:  # e.g. piped into head
        sys.stderr.close()
        raise SystemExit(0)
