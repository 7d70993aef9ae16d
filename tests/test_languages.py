"""The language suite against references written here, independently of :mod:`languages`.

For every language: membership by a regex or a direct counter/stack/parser check; allowed-next sets by
brute force (all member strings up to a bound, compared only at prefixes where the bound is decisive)
and, for the non-regular languages, Dyck(K, h) and flip-flop, by a completability oracle on long
strings; traces by a recomputation (counters, stacks, flip-flop memory) or, for DFA states, by
Myhill-Nerode classes computed from membership of suffixes.
"""
from __future__ import annotations

import itertools
import random
import re

import numpy as np

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import languages
from languages import END

FAST = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- references

ALPHABETS = {
    "tomita1": "01", "tomita2": "01", "tomita3": "01", "tomita4": "01", "tomita5": "01", "tomita6": "01",
    "tomita7": "01", "d2": "ab", "d3": "ab", "d4": "ab", "d12": "ab", "abcde": "abcde", "ab_d_bc": "abcd",
    "zot": "012", "parity": "01", "aa_star": "a", "aaaa_star": "a", "abab_star": "ab", "dyck1": "()",
    "shuffle2": "()[]", "shuffle4": "()[]{}<>", "shuffle6": "()[]{}<>+-ab", "boolean3": "01~+>",
    "boolean5": "01~+>*^", "anbn": "ab", "anbncn": "abc", "anbncndn": "abcd", "flipflop": "wri01",
    "dyck": "()[]{}<>aAbBcCdD",
}
STAR_FREE = {"tomita1", "tomita2", "tomita4", "tomita7", "d2", "d3", "d4", "d12", "abcde", "ab_d_bc", "zot"}
NON_STAR_FREE = {"parity", "aa_star", "aaaa_star", "abab_star", "tomita3", "tomita5", "tomita6"}
COUNTER = {"dyck1", "shuffle2", "shuffle4", "shuffle6", "boolean3", "boolean5", "anbn", "anbncn", "anbncndn"}
MEMBERSHIP = {"parity", "aa_star", "aaaa_star", "abab_star", "tomita5", "tomita6"}
ALL = list(ALPHABETS)


def regex(pattern):
    rx = re.compile(pattern)
    return lambda s: rx.fullmatch(s) is not None


def tomita3(s):
    # forbidden: a maximal odd 1-block immediately followed by a maximal odd 0-block
    runs = [m.group() for m in re.finditer(r"0+|1+", s)]
    return not any(a[0] == "1" and len(a) % 2 and len(b) % 2 for a, b in zip(runs, runs[1:]))


def tomita3_anywhere(s):
    # forbidden: a maximal odd 1-block and, anywhere later, a maximal odd 0-block
    runs = [m.group() for m in re.finditer(r"0+|1+", s)]
    odd_ones = [i for i, r in enumerate(runs) if r[0] == "1" and len(r) % 2]
    odd_zeros = [i for i, r in enumerate(runs) if r[0] == "0" and len(r) % 2]
    return not (odd_ones and odd_zeros and max(odd_zeros) > min(odd_ones))


def dn(n):
    def member(s):
        d = 0
        for c in s:
            d += 1 if c == "a" else -1
            if d < 0 or d > n:
                return False
        return d == 0

    return member


def brackets(pairs, h=None, shuffle=False):
    """Dyck over ``pairs`` (stack; depth <= h) or, with shuffle, one independent counter per pair."""
    opens = {p[0]: i for i, p in enumerate(pairs)}
    closes = {p[1]: i for i, p in enumerate(pairs)}

    def valid_prefix(s):
        stack, counts = [], [0] * len(pairs)
        for c in s:
            if c in opens:
                stack.append(opens[c])
                counts[opens[c]] += 1
                if h is not None and len(stack) > h:
                    return None
            else:
                i = closes[c]
                if shuffle:
                    counts[i] -= 1
                    if counts[i] < 0:
                        return None
                else:
                    if not stack or stack.pop() != i:
                        return None
        return sum(counts) if shuffle else len(stack)

    return valid_prefix


def polish(arity):
    def pending(s):
        """Pending operands after each prefix, or None once a proper prefix was already complete."""
        c = 1
        for ch in s:
            if c == 0:
                return None
            c += arity[ch] - 1
        return c

    def member(s):
        # recursive-descent parse, independent of the counting view
        def parse(i):
            if i >= len(s):
                return None
            j = i + 1
            for _ in range(arity[s[i]]):
                j = parse(j)
                if j is None:
                    return None
            return j

        return parse(0) == len(s)

    return member, pending


def blocks(letters):
    rx = re.compile("".join(f"({c}+)" for c in letters))

    def member(s):
        m = rx.fullmatch(s)
        return m is not None and len({len(g) for g in m.groups()}) == 1

    def completable(q):
        n = q.count(letters[0])
        if set(q) <= {letters[0]}:
            return True
        return n >= 1 and "".join(c * n for c in letters).startswith(q)

    def need(q):
        return max(0, len(letters) * max(1, q.count(letters[0])) - len(q))

    return member, completable, need


def flipflop_prefix(q):
    """Whether q is a prefix of a flip-flop string."""
    stored = None
    for i, c in enumerate(q):
        if i % 2 == 0:
            if c not in "wri" or (i == 0 and c != "w"):
                return False
        else:
            if c not in "01":
                return False
            if q[i - 1] == "w":
                stored = c
            elif q[i - 1] == "r" and c != stored:
                return False
    return True


def flipflop_member(s):
    return len(s) >= 2 and len(s) % 2 == 0 and flipflop_prefix(s)


SHUFFLE = ["()", "[]", "{}", "<>", "+-", "ab"]
DYCK8 = ["()", "[]", "{}", "<>", "aA", "bB", "cC", "dD"]
ARITY3 = {"0": 0, "1": 0, "~": 1, "+": 2, ">": 3}
ARITY5 = {**ARITY3, "*": 4, "^": 5}

MEMBER = {
    "tomita1": regex("1*"), "tomita2": regex("(10)*"), "tomita3": tomita3,
    "tomita4": lambda s: "000" not in s,
    "tomita5": lambda s: s.count("0") % 2 == 0 and s.count("1") % 2 == 0,
    "tomita6": lambda s: (s.count("0") - s.count("1")) % 3 == 0,
    "tomita7": regex("0*1*0*1*"), "d2": dn(2), "d3": dn(3), "d4": dn(4), "d12": dn(12),
    "abcde": regex("a+b+c+d+e+"), "ab_d_bc": regex("[ab]*d[bc]*"), "zot": regex("[012]*02*"),
    "parity": lambda s: s.count("1") % 2 == 0, "aa_star": regex("(aa)*"), "aaaa_star": regex("(aaaa)*"),
    "abab_star": regex("(abab)*"),
    "dyck1": lambda s: brackets(["()"])(s) == 0,
    "shuffle2": lambda s: brackets(SHUFFLE[:2], shuffle=True)(s) == 0,
    "shuffle4": lambda s: brackets(SHUFFLE[:4], shuffle=True)(s) == 0,
    "shuffle6": lambda s: brackets(SHUFFLE[:6], shuffle=True)(s) == 0,
    "boolean3": polish(ARITY3)[0], "boolean5": polish(ARITY5)[0],
    "anbn": blocks("ab")[0], "anbncn": blocks("abc")[0], "anbncndn": blocks("abcd")[0],
    "flipflop": flipflop_member, "dyck": lambda s: brackets(DYCK8, h=10)(s) == 0,
}

# completability (is q a prefix of some member?) and an upper bound on the length of the shortest
# completion of a completable q, both written from the definitions
REG_NEED = {"tomita1": 0, "tomita2": 1, "tomita3": 1, "tomita4": 0, "tomita5": 2, "tomita6": 2, "tomita7": 0,
            "abcde": 5, "ab_d_bc": 1, "zot": 2, "parity": 1, "aa_star": 1, "aaaa_star": 3, "abab_star": 3}


def _bracket_oracle(valid):
    return (lambda q: valid(q) is not None), (lambda q: valid(q) or 0)


ORACLE = {
    **{f"d{n}": ((lambda n: lambda q: all(0 <= d <= n for d in itertools.accumulate(
        (1 if c == "a" else -1 for c in q), initial=0)))(n),
        (lambda q: max(0, q.count("a") - q.count("b")))) for n in (2, 3, 4, 12)},
    "dyck1": _bracket_oracle(brackets(["()"])),
    "shuffle2": _bracket_oracle(brackets(SHUFFLE[:2], shuffle=True)),
    "shuffle4": _bracket_oracle(brackets(SHUFFLE[:4], shuffle=True)),
    "shuffle6": _bracket_oracle(brackets(SHUFFLE[:6], shuffle=True)),
    "dyck": _bracket_oracle(brackets(DYCK8, h=10)),
    "boolean3": ((lambda q: polish(ARITY3)[1](q) is not None), (lambda q: polish(ARITY3)[1](q) or 0)),
    "boolean5": ((lambda q: polish(ARITY5)[1](q) is not None), (lambda q: polish(ARITY5)[1](q) or 0)),
    "anbn": blocks("ab")[1:], "anbncn": blocks("abc")[1:], "anbncndn": blocks("abcd")[1:],
    "flipflop": (flipflop_prefix, lambda q: 2 if not q else len(q) % 2),
    "abcde": (regex("(?:a+(?:b+(?:c+(?:d+e*)?)?)?)?"), lambda q: 5 - len(set(q))),
}

# brute-force bound (longest member enumerated) per language
BOUND = {"d12": 20, "abcde": 12, "ab_d_bc": 7, "zot": 8, "aa_star": 24, "aaaa_star": 24, "dyck1": 18,
         "shuffle2": 10, "shuffle4": 8, "shuffle6": 6, "boolean3": 8, "boolean5": 7, "anbn": 24,
         "anbncn": 24, "anbncndn": 24, "flipflop": 8, "dyck": 6}
# short sampling windows for the property tests
WINDOW = {"flipflop": (2, 40), "anbncn": (3, 60), "anbncndn": (4, 80), "dyck": (2, 120), "d12": (2, 80)}


def window(name):
    if name in WINDOW:
        return WINDOW[name]
    lo, hi = languages.get(name).default_bins["train"]
    return lo, min(hi, 60)


def completable(name, q):
    if name in ORACLE:
        return ORACLE[name][0](q)
    return any(MEMBER[name](q + "".join(w)) for k in range(REG_NEED[name] + 1)
               for w in itertools.product(ALPHABETS[name], repeat=k))


def need(name, q):
    return ORACLE[name][1](q) if name in ORACLE else REG_NEED[name]


def members_upto(name, B):
    """All members of length <= B: enumeration over the alphabet, pruned only by ``completable``
    (a necessary condition for being a prefix of a member) and by the completion bound."""
    alphabet, member = ALPHABETS[name], MEMBER[name]
    out, frontier = [], [""]
    for length in range(B + 1):
        nxt = []
        for q in frontier:
            if member(q):
                out.append(q)
            if length < B:
                for c in alphabet:
                    p = q + c
                    if name in ORACLE and not (completable(name, p) and len(p) + need(name, p) <= B):
                        continue
                    nxt.append(p)
        frontier = nxt
    return out


def oracle_allowed(name, p):
    out = {c for c in ALPHABETS[name] if completable(name, p + c)}
    if MEMBER[name](p):
        out.add(END)
    return out


# --------------------------------------------------------------------------- registry and classes


def test_names_and_classes():
    assert languages.names() == ALL
    assert len(ALL) == 29
    for name in ALL:
        lang = languages.get(name)
        assert lang.name == name
        assert "".join(lang.alphabet) == ALPHABETS[name]
        assert END not in lang.alphabet and all(len(c) == 1 for c in lang.alphabet)
        assert lang.membership_target == (name in MEMBERSHIP)
        sf = lang.is_star_free()
        if name in STAR_FREE or name in {"flipflop", "dyck"}:
            assert sf is True and lang.kind == "star-free", name
        elif name in NON_STAR_FREE:
            assert sf is False and lang.kind == "non-star-free", name
        else:
            assert name in COUNTER and sf is None and lang.kind == "counter", name
    assert sum(languages.get(n).is_star_free() is True for n in STAR_FREE) == 11
    assert sum(languages.get(n).is_star_free() is False for n in NON_STAR_FREE) == 7


def test_get_params_and_errors():
    assert languages.get("flipflop").params == {"p": 0.8}
    assert languages.get("flipflop", p=0.98).params == {"p": 0.98}
    d = languages.get("dyck", K=3, h=4)
    assert (d.K, d.h, d.params) == (3, 4, {"K": 3, "h": 4})
    assert d.pairs == [("(", ")"), ("[", "]"), ("{", "}")]
    assert languages.get("dyck").pairs == [tuple(p) for p in DYCK8]
    with pytest.raises(ValueError, match="unknown language"):
        languages.get("tomita8")
    with pytest.raises(ValueError, match="bad parameters"):
        languages.get("tomita1", n=3)


def test_regular_trace_dfa_sizes():
    # minimal complete DFA sizes (dead state included), from the definitions
    sizes = {"tomita1": 2, "tomita2": 3, "tomita3": 5, "tomita4": 4, "tomita5": 4, "tomita6": 3, "tomita7": 5,
             "d2": 4, "d12": 14, "abcde": 7, "ab_d_bc": 3, "zot": 2, "parity": 2, "aa_star": 2,
             "aaaa_star": 4, "abab_star": 5, "flipflop": 9}
    for name, m in sizes.items():
        assert languages.get(name).num_states == m, name


def test_tomita3_reading():
    t3 = languages.get("tomita3")
    for s, ok in [("", True), ("1", True), ("0", True), ("10", False), ("100", True), ("1001", True),
                  ("110", True), ("1000", False), ("100110", True), ("1101", True), ("01110", False),
                  ("10010", False), ("10011100", True), ("1001110", False)]:
        assert t3.accepts(s) == ok == tomita3(s), s
    from languages.regular import tomita3_anywhere as anywhere

    aw = anywhere()
    assert not aw.accepts("100110") and not aw.accepts("10") and aw.accepts("100")
    for L in range(11):
        for bits in itertools.product("01", repeat=L):
            s = "".join(bits)
            assert aw.accepts(s) == tomita3_anywhere(s), s
    assert aw.is_star_free() is False and aw.num_states == t3.num_states == 5


# --------------------------------------------------------------------------- sampling


@pytest.mark.parametrize("name", ALL)
@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_samples_are_distinct_members_in_window(name, seed):
    lang = languages.get(name)
    lo, hi = window(name)
    n = 6
    out = lang.sample(n, lo, hi, seed=seed)
    assert len(out) == n == len(set(out))
    for s in out:
        assert lo <= len(s) <= hi
        assert MEMBER[name](s), (name, s)
        assert lang.accepts(s)


@pytest.mark.parametrize("name", ["parity", "dyck1", "shuffle4", "boolean5", "flipflop", "dyck", "tomita3", "d4"])
def test_sampling_reproducible(name):
    lang = languages.get(name)
    lo, hi = window(name)
    a = lang.sample(30, lo, hi, seed=123)
    assert a == lang.sample(30, lo, hi, seed=123)
    assert "\n".join(a).encode() == "\n".join(languages.get(name, **lang.params).sample(30, lo, hi, seed=123)).encode()
    assert a != lang.sample(30, lo, hi, seed=124)


def test_sample_window_errors_and_exact_counts():
    anbn = languages.get("anbn")
    assert sorted(anbn.sample(3, 4, 8, seed=0)) == ["aaaabbbb", "aaabbb", "aabb"]
    with pytest.raises(ValueError, match="only 3 member strings"):
        anbn.sample(4, 4, 8, seed=0)
    with pytest.raises(ValueError, match="no member strings"):
        anbn.sample(1, 5, 5, seed=0)
    with pytest.raises(ValueError, match="no member strings"):
        languages.get("abcde").sample(1, 1, 4, seed=0)
    # all strings of the window: tomita2 has exactly one member per even length
    t2 = languages.get("tomita2")
    assert sorted(t2.sample(5, 1, 10, seed=1), key=len) == ["10" * k for k in range(1, 6)]
    # exclusion
    out = languages.get("aa_star").sample(4, 2, 10, seed=0, exclude=["aaaa"])
    assert sorted(out, key=len) == ["aa", "aaaaaa", "aaaaaaaa", "aaaaaaaaaa"]
    with pytest.raises(ValueError):
        languages.get("aa_star").sample(5, 2, 10, seed=0, exclude=["aaaa"])


@pytest.mark.parametrize("name", ALL)
def test_counts_match_enumeration(name):
    lang = languages.get(name)
    B = min(BOUND.get(name, 12), 8)
    by_len = {}
    for s in members_upto(name, B):
        by_len[len(s)] = by_len.get(len(s), 0) + 1
    for L in range(B + 1):
        c = lang.count(L)
        if c is not None:
            assert c == by_len.get(L, 0), (name, L)


def test_lengths_are_spread_over_the_window():
    lens = [len(s) for s in languages.get("dyck").sample(400, 2, 700, seed=0)]
    assert min(lens) < 100 and max(lens) > 600
    lens = [len(s) for s in languages.get("parity").sample(500, 2, 50, seed=0)]
    assert len(set(lens)) > 40


def test_long_dyck_samples():
    lang = languages.get("dyck")
    out = lang.sample(40, 700, 1400, seed=7)
    ref = brackets(DYCK8, h=10)
    for s in out:
        assert 700 <= len(s) <= 1400 and len(s) % 2 == 0
        assert ref(s) == 0
    depths = [d for s in out[:5] for d in lang.trace(s)["depth"]]
    assert max(depths) == 10 and len(set(depths)) == 11


def test_flipflop_distribution():
    for p in (0.8, 0.98):
        lang = languages.get("flipflop", p=p)
        out = lang.sample(40, 512, 512, seed=3)
        assert all(len(s) == 512 and s[0] == "w" and flipflop_member(s) for s in out)
        instr = "".join(s[2::2] for s in out)
        assert abs(instr.count("i") / len(instr) - p) < 0.02
        assert abs(instr.count("w") - instr.count("r")) < 0.1 * len(instr) * (1 - p) + 30


# --------------------------------------------------------------------------- allowed_next


@pytest.mark.parametrize("name", ALL)
def test_allowed_next_brute_force(name):
    lang = languages.get(name)
    alphabet = ALPHABETS[name]
    B = BOUND.get(name, 14)
    mem = members_upto(name, B)
    table: dict[str, set] = {}
    for m in mem:
        table.setdefault(m, set()).add(END)
        for i in range(len(m)):
            table.setdefault(m[:i], set()).add(m[i])
    rng = random.Random(0)
    prefixes = sorted(table)
    cands = set(rng.sample(prefixes, min(1500, len(prefixes))))
    short = 1
    while len(alphabet) ** (short + 1) <= 600 and short < 12:
        short += 1
    for k in range(short + 1):
        cands.update("".join(w) for w in itertools.product(alphabet, repeat=k))
    checked = 0
    for p in sorted(cands):
        got = lang.allowed_next(p)[-1]
        brute = table.get(p, set())
        assert brute <= got, (name, p, brute, got)  # a witness is a witness
        decisive = all(not completable(name, p + c) or len(p) + 1 + need(name, p + c) <= B for c in alphabet)
        if decisive:
            assert got == brute, (name, p, brute, got)
            checked += 1
    assert checked >= min(40, len(cands) // 2), (name, checked)


ORACLE_LANGS = sorted(ORACLE)


def _mutate(s, rng, alphabet):
    s = list(s)
    for _ in range(rng.randrange(3)):
        if s:
            s[rng.randrange(len(s))] = rng.choice(alphabet)
    return "".join(s)


@pytest.mark.parametrize("name", ORACLE_LANGS)
@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_allowed_next_oracle_long_strings(name, seed):
    lang = languages.get(name)
    rng = random.Random(seed)
    lo, hi = window(name)
    for s in lang.sample(3, lo, hi, seed=seed):
        for t in (s, _mutate(s, rng, ALPHABETS[name])):
            allowed = lang.allowed_next(t)
            labels = lang.prefix_labels(t)
            assert len(allowed) == len(labels) == len(t) + 1
            for i in range(len(t) + 1):
                assert set(allowed[i]) == oracle_allowed(name, t[:i]), (name, t, i)
                assert labels[i] == MEMBER[name](t[:i])


@pytest.mark.parametrize("name", ALL)
@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_prefix_labels_and_membership(name, seed):
    lang = languages.get(name)
    rng = random.Random(seed)
    lo, hi = window(name)
    for s in lang.sample(3, lo, hi, seed=seed):
        t = _mutate(s, rng, ALPHABETS[name])
        assert lang.prefix_labels(t) == [MEMBER[name](t[:i]) for i in range(len(t) + 1)]
        assert lang.accepts(t) == MEMBER[name](t)


def test_small_dyck_against_its_dfa():
    for K, h in ((2, 2), (2, 3), (1, 4)):
        lang = languages.get("dyck", K=K, h=h)
        dfa = lang.to_dfa()
        assert dfa.is_star_free() is True
        assert dfa.num_states == sum(K ** d for d in range(h + 1)) + 1
        ref = brackets(DYCK8[:K], h=h)
        for L in range(8):
            for w in itertools.product(lang.alphabet, repeat=L):
                s = "".join(w)
                assert lang.accepts(s) == dfa.accepts(s) == (ref(s) == 0)
                if L <= 4:
                    assert lang.allowed_next(s) == dfa.allowed_next(s)


# --------------------------------------------------------------------------- traces


def _check_lengths(tr, s, keys):
    assert set(tr) == set(keys)
    for v in tr.values():
        assert len(v) == len(s) + 1


REGULAR_NAMES = [n for n in ALL if n in STAR_FREE | NON_STAR_FREE] + ["flipflop"]
RESIDUAL_DEPTH = {"abcde": 4, "ab_d_bc": 3, "zot": 3, "flipflop": 3, "aa_star": 5, "aaaa_star": 5}


def _residual_signature(name, p, suffixes):
    return tuple(MEMBER[name](p + w) for w in suffixes)


@pytest.mark.parametrize("name", REGULAR_NAMES)
def test_dfa_state_trace_is_myhill_nerode_class(name):
    """Two prefixes get the same ``state`` iff no suffix tells them apart; ids are numbered in order
    of first appearance in shortlex order with the dead state last; D_n's state is its depth."""
    lang = languages.get(name)
    alphabet = ALPHABETS[name]
    if name.startswith("d") and name[1:].isdigit():
        n = int(name[1:])
        for s in lang.sample(5, 2, 60, seed=1) + ["ab" * 3 + "b", "a" * (n + 1), "aab"]:
            tr = lang.trace(s, initial=True)
            depth = list(itertools.accumulate((1 if c == "a" else -1 for c in s), initial=0))
            ok = [all(0 <= d <= n for d in depth[: i + 1]) for i in range(len(s) + 1)]
            assert tr["depth"] == depth
            assert tr["top"] == ["a" if d > 0 else None for d in depth]
            assert tr["state"] == [d if o else n + 1 for d, o in zip(depth, ok)]
        return
    R = RESIDUAL_DEPTH.get(name, 6 if len(alphabet) <= 2 else 4)
    suffixes = ["".join(w) for k in range(R + 1) for w in itertools.product(alphabet, repeat=k)]
    suffixes += [m for m in members_upto(name, R + 2) if len(m) > R]  # live vs dead
    # shortlex prefixes reach every state; then sampled and mutated strings
    short = ["".join(w) for k in range(5) for w in itertools.product(alphabet, repeat=k)][:400]
    short += [m[:i] for m in members_upto(name, 7) for i in range(len(m) + 1)]
    short = sorted(set(short), key=lambda x: (len(x), [alphabet.index(c) for c in x]))
    rng = random.Random(0)
    lo, hi = window(name)
    strings = lang.sample(4, lo, min(hi, 40), seed=2)
    strings += [_mutate(s, rng, alphabet) for s in strings]
    cls_of: dict[tuple, int] = {}
    state_of: dict[int, tuple] = {}
    first_seen = []
    for p in short:
        sig = _residual_signature(name, p, suffixes)
        q = lang.trace(p, initial=True)["state"][-1]
        if sig not in cls_of:
            first_seen.append((any(sig), q))
        assert cls_of.setdefault(sig, q) == q and state_of.setdefault(q, sig) == sig, (name, p)
    live = [q for alive, q in first_seen if alive]
    dead = [q for alive, q in first_seen if not alive]
    assert live == sorted(live) and set(live) == set(range(len(live)))
    assert dead in ([], [len(live)])
    assert lang.num_states == len(first_seen)
    for s in strings:
        states = lang.trace(s, initial=True)["state"]
        _check_lengths(lang.trace(s, initial=True), s, lang.state_variables)
        assert lang.trace(s)["state"] == states[1:]
        for i in range(len(s) + 1):
            assert cls_of[_residual_signature(name, s[:i], suffixes)] == states[i], (name, s, i)


@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_flipflop_trace(seed):
    lang = languages.get("flipflop")
    rng = random.Random(seed)
    for s in lang.sample(3, 2, 60, seed=seed):
        tr = lang.trace(s, initial=True)
        stored, instr = [None], [None]
        for t in range(len(s)):
            instr.append(s[t] if t % 2 == 0 else s[t - 1])
            if t % 2 == 1 and s[t - 1] == "w":
                stored.append(s[t])
            else:
                stored.append(stored[-1])
        assert tr["stored"] == stored
        assert tr["instruction"] == instr
        # after every r the bit equals the stored bit before it
        for t in range(1, len(s), 2):
            if s[t - 1] == "r":
                assert s[t] == tr["stored"][t]
        m = _mutate(s, rng, "wri01")
        assert len(lang.trace(m)["stored"]) == len(m)


@pytest.mark.parametrize("name", sorted(COUNTER))
@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_counter_traces(name, seed):
    lang = languages.get(name)
    rng = random.Random(seed)
    lo, hi = window(name)
    for s in lang.sample(3, lo, hi, seed=seed):
        for t in (s, _mutate(s, rng, ALPHABETS[name])):
            tr = lang.trace(t, initial=True)
            _check_lengths(tr, t, lang.state_variables)
            assert lang.trace(t) == {k: v[1:] for k, v in tr.items()}
            for i in range(len(t) + 1):
                p = t[:i]
                alive = completable(name, p)
                if name == "dyck1":
                    d = p.count("(") - p.count(")")
                    assert tr["counter"][i] == (d,) and tr["depth"][i] == d
                    assert tr["phase"][i] == (0 if alive else -1)
                elif name.startswith("shuffle"):
                    k = int(name[-1])
                    assert tr["counter"][i] == tuple(p.count(o) - p.count(c) for o, c in SHUFFLE[:k])
                    assert tr["phase"][i] == (0 if alive else -1)
                elif name.startswith("boolean"):
                    arity = ARITY3 if name == "boolean3" else ARITY5
                    c = 1 + sum(arity[ch] - 1 for ch in p)
                    assert tr["counter"][i] == (c,)
                    assert tr["phase"][i] == (-1 if not alive else (1 if MEMBER[name](p) else 0))
                else:
                    letters = ALPHABETS[name]
                    assert tr["counter"][i] == tuple(p.count(letters[j]) - p.count(letters[j + 1])
                                                     for j in range(len(letters) - 1))
                    phase = -1 if not alive else (letters.index(p[-1]) + 1 if p else 0)
                    assert tr["phase"][i] == phase


@FAST
@given(seed=st.integers(0, 2**32 - 1), K=st.integers(1, 8), h=st.integers(1, 10))
def test_dyck_trace(seed, K, h):
    lang = languages.get("dyck", K=K, h=h)
    rng = random.Random(seed)
    pairs = DYCK8[:K]
    close_to_open = {c: o for o, c in pairs}
    for s in lang.sample(3, 2, 200, seed=seed):
        for t in (s, _mutate(s, rng, "".join(pairs))):
            tr = lang.trace(t, initial=True)
            stack = []
            stacks = [()]
            for c in t:
                if c in close_to_open:
                    if stack:
                        stack.pop()
                else:
                    stack.append(c)
                stacks.append(tuple(stack))
            assert tr["stack"] == stacks
            assert tr["depth"] == [len(x) for x in stacks]
            assert tr["top"] == [x[-1] if x else None for x in stacks]
            ref = brackets(pairs, h=h)
            allowed = lang.allowed_next(t)
            for i in range(len(t) + 1):
                p = t[:i]
                exp = set()
                if ref(p) is not None:
                    exp = {o for o, _ in pairs if len(stacks[i]) < h}
                    exp |= {c for o, c in pairs if stacks[i] and stacks[i][-1] == o}
                    if not stacks[i]:
                        exp.add(END)
                assert set(allowed[i]) == exp


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("name", ALL)
def test_out_of_alphabet_symbols(name):
    lang = languages.get(name)
    good = lang.sample(1, *window(name), seed=0)[0][:5]
    for bad in ("$", "z" if "z" not in ALPHABETS[name] else "Z", "é"):
        s = good + bad + good
        pos = len(good)
        for method in (lang.accepts, lang.allowed_next, lang.prefix_labels, lang.trace, lang.allowed_matrix):
            with pytest.raises(ValueError) as e:
                method(s)
            msg = str(e.value)
            assert repr(bad) in msg and f"position {pos}" in msg, msg


def test_empty_string():
    for name in ALL:
        lang = languages.get(name)
        assert lang.accepts("") == MEMBER[name]("")
        assert lang.prefix_labels("") == [MEMBER[name]("")]
        assert set(lang.allowed_next("")[0]) == oracle_allowed(name, "")
        assert all(len(v) == 1 for v in lang.trace("", initial=True).values())
        assert all(len(v) == 0 for v in lang.trace("").values())


def test_flipflop_mixture_draws_one_density_per_string():
    mix = languages.get("flipflop", p=[0.5, 0.98])
    assert mix is languages.get("flipflop", p=[0.5, 0.98])  # lists are cached like scalars
    assert mix.params == {"p": [0.5, 0.98]} and "0.5|0.98" in mix.description
    strings = mix.sample(400, 512, 512, seed=1)
    assert all(mix.accepts(s) for s in strings)
    ignore = np.array([s[2::2].count("i") / 255 for s in strings])  # instructions after the first w
    # Two clusters, one per density (binomial sd at n=255: 0.031 and 0.009), about half each.
    dense, sparse = ignore[ignore < 0.74], ignore[ignore >= 0.74]
    assert abs(dense.mean() - 0.5) < 0.02 and abs(sparse.mean() - 0.98) < 0.01
    assert 0.35 < len(dense) / len(strings) < 0.65
    # A one-element list is the plain language, and the scalar's strings are unchanged by the feature.
    assert languages.get("flipflop", p=[0.8]).sample(5, 64, 64, seed=2) == languages.get("flipflop").sample(5, 64, 64, seed=2)
    with pytest.raises(ValueError, match="p must"):
        languages.get("flipflop", p=[])
    with pytest.raises(ValueError, match="p must"):
        languages.get("flipflop", p=[0.8, 1.0])
