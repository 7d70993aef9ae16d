"""User-defined DFAs: minimization, the star-free test and the Language API, against hand checks and an
independent brute-force minimization + aperiodicity check written here."""
from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from languages import DFA, END, explore


def words(alphabet, n):
    return ["".join(w) for k in range(n + 1) for w in itertools.product(alphabet, repeat=k)]


def test_ab_star_is_star_free_and_aa_star_is_not():
    ab = DFA([0, 1], "ab", {(0, "a"): 1, (1, "b"): 0}, 0, [0], name="ab_star")
    assert ab.is_star_free() is True and ab.kind == "star-free"
    assert ab.num_states == 3 and ab.dead_state == 2
    assert len(ab.transition_monoid()) == 6  # 1, a, b, ab, ba, 0
    aa = DFA(["even", "odd"], "a", {("even", "a"): "odd", ("odd", "a"): "even"}, "even", ["even"])
    assert aa.is_star_free() is False and aa.kind == "non-star-free"
    assert len(aa.transition_monoid()) == 2


@pytest.mark.parametrize(
    "pattern, alphabet, star_free",
    [
        ("(a|b)*aa(a|b)*", "ab", True),  # contains aa
        ("a*b*", "ab", True),
        ("(b|ab)*", "ab", True),  # every a is followed by b
        ("((b*ab*){3})*", "ab", False),  # #a = 0 mod 3
        ("(aa|b)*", "ab", False),  # every maximal a-block has even length
        ("(aa|bb)*", "ab", False),  # every maximal block has even length
        ("(ab|ba)*", "ab", True),  # star-free: a pair boundary's parity is fixed by the letters around it
        ("c*(a(c*)b(c*))*", "abc", True),  # a..b alternation with c's anywhere: (ab)* shuffled with c
    ],
)
def test_regex_languages_via_explore(pattern, alphabet, star_free):
    rx = re.compile(pattern)
    # states = residual signatures over short suffixes: a correct (possibly large) DFA for the regex
    suffixes = words(alphabet, 6)

    def sig(p):
        return tuple(rx.fullmatch(p + w) is not None for w in suffixes)

    reps = {}
    frontier = [""]
    trans = {}
    while frontier:
        nxt = []
        for p in frontier:
            s = sig(p)
            if s in reps:
                continue
            reps[s] = p
            nxt.extend(p + c for c in alphabet)
        frontier = nxt
    for s, p in reps.items():
        for c in alphabet:
            trans[(s, c)] = sig(p + c)
    d = DFA(list(reps), alphabet, trans, sig(""), [s for s, p in reps.items() if rx.fullmatch(p)])
    assert d.is_star_free() is star_free
    for w in words(alphabet, 7):
        assert d.accepts(w) == (rx.fullmatch(w) is not None)


def test_minimize_redundant_dfa():
    trans = {
        ("e1", "0"): "e2", ("e1", "1"): "o1", ("o1", "0"): "o2", ("o1", "1"): "e2",
        ("e2", "0"): "e1", ("e2", "1"): "o2", ("o2", "0"): "o1", ("o2", "1"): "e1",
        ("junk", "0"): "junk",
    }
    d = DFA(["e1", "o1", "e2", "o2", "junk"], "01", trans, "e1", ["e1", "e2"])
    m = d.minimize()
    assert m.states == (0, 1) and m.start == 0 and m.accepting == {0}
    assert m.transitions == {(0, "0"): 0, (0, "1"): 1, (1, "0"): 1, (1, "1"): 0}
    assert m.minimize().transitions == m.transitions
    assert d.num_states == m.num_states == 2 and d.dead_state is None
    for w in words("01", 8):
        assert d.accepts(w) == m.accepts(w) == (w.count("1") % 2 == 0)
    assert d.run("011") == ["e1", "e2", "o2", "e1"]
    assert d.trace("011", initial=True) == {"state": [0, 0, 1, 0]}
    assert d.trace("011") == {"state": [0, 1, 0]}
    assert d.is_star_free() is False


def test_missing_transitions_go_to_dead_state():
    d = DFA(["s", "t"], "abc", {("s", "a"): "t", ("t", "b"): "s"}, "s", ["s"])
    assert d.accepts("abab") and not d.accepts("abc") and not d.accepts("c")
    assert d.allowed_next("ab") == [frozenset({"a", END}), frozenset({"b"}), frozenset({"a", END})]
    assert d.allowed_next("ac") == [frozenset({"a", END}), frozenset({"b"}), frozenset()]
    assert d.num_states == 3 and d.dead_state == 2
    assert d.trace("ac", initial=True)["state"] == [0, 1, 2]
    assert d.run("ac") == ["s", "t", None]
    assert d.prefix_labels("abc") == [True, False, True, False]
    m = d.minimize()
    assert m.transitions[(2, "a")] == 2  # the dead state is explicit in the minimal DFA


def test_user_dfa_language_api():
    # a*b*c over {a, b, c}
    d = DFA([0, 1, 2], "abc", {(0, "a"): 0, (0, "b"): 1, (1, "b"): 1, (0, "c"): 2, (1, "c"): 2}, 0, [2],
            name="a*b*c")
    rx = re.compile("a*b*c")
    by_len = {}
    for w in words("abc", 7):
        if rx.fullmatch(w):
            by_len[len(w)] = by_len.get(len(w), 0) + 1
    assert [d.count(L) for L in range(8)] == [by_len.get(L, 0) for L in range(8)]
    out = d.sample(30, 1, 10, seed=5)
    assert len(set(out)) == 30 and all(rx.fullmatch(s) and 1 <= len(s) <= 10 for s in out)
    assert out == d.sample(30, 1, 10, seed=5)
    assert d.count_window(1, 4) == 10
    assert sorted(d.sample(10, 1, 4, seed=0)) == sorted(w for w in words("abc", 4) if rx.fullmatch(w))
    with pytest.raises(ValueError, match="only 10 member strings"):
        d.sample(11, 1, 4, seed=0)
    assert d.kind == "star-free" and d.is_star_free()
    with pytest.raises(ValueError, match=r"'d' at position 2"):
        d.accepts("abdc")


def test_dfa_validation():
    with pytest.raises(ValueError, match="start state"):
        DFA([0], "a", {}, 1, [0])
    with pytest.raises(ValueError, match="accepting state"):
        DFA([0], "a", {}, 0, [5])
    with pytest.raises(ValueError, match="symbol 'b'"):
        DFA([0], "a", {(0, "b"): 0}, 0, [0])
    with pytest.raises(ValueError, match="unknown state"):
        DFA([0], "a", {(0, "a"): 7}, 0, [0])
    with pytest.raises(ValueError, match="reserved"):
        DFA([0], "a$", {}, 0, [0])
    with pytest.raises(ValueError, match="one-character"):
        DFA([0], ["ab"], {}, 0, [0])


def test_explore_parity():
    d = explore("01", 0, lambda q, c: (q + (c == "1")) % 2, lambda q: q == 0, name="my_parity")
    assert d.name == "my_parity" and d.num_states == 2 and d.is_star_free() is False


# --------------------------------------------------------------------------- brute-force check


def _brute_star_free(states, alphabet, delta, start, accepting):
    """Minimize by residual signatures, build the transition monoid, test aperiodicity."""
    m = len(states)
    reach, frontier = {start}, [start]
    while frontier:
        frontier = [delta[(q, c)] for q in frontier for c in alphabet if delta[(q, c)] not in reach]
        reach.update(frontier)
    suffixes = words(alphabet, m)

    def accepts_from(q, w):
        for c in w:
            q = delta[(q, c)]
        return q in accepting

    cls = {q: tuple(accepts_from(q, w) for w in suffixes) for q in reach}
    classes = sorted(set(cls.values()))
    idx = {c: i for i, c in enumerate(classes)}
    rep = {idx[cls[q]]: q for q in reach}
    gens = [tuple(idx[cls[delta[(rep[i], c)]]] for i in range(len(classes))) for c in alphabet]
    monoid, frontier = set(gens), list(gens)
    while frontier:
        new = []
        for f in frontier:
            for g in gens:
                h = tuple(g[x] for x in f)
                if h not in monoid:
                    monoid.add(h)
                    new.append(h)
        frontier = new
    n = len(classes)

    def power(f, k):
        out = tuple(range(n))
        for _ in range(k):
            out = tuple(f[x] for x in out)
        return out

    return all(power(f, n) == power(f, n + 1) for f in monoid), len(classes)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), m=st.integers(1, 5))
def test_star_free_matches_brute_force_on_random_dfas(data, m):
    alphabet = "ab"
    delta = {(q, c): data.draw(st.integers(0, m - 1)) for q in range(m) for c in alphabet}
    accepting = {q for q in range(m) if data.draw(st.booleans())}
    d = DFA(range(m), alphabet, delta, 0, accepting)
    sf, n_classes = _brute_star_free(list(range(m)), alphabet, delta, 0, accepting)
    assert d.is_star_free() == sf
    assert d.num_states == n_classes
    for w in words(alphabet, 6):
        q = 0
        for c in w:
            q = delta[(q, c)]
        assert d.accepts(w) == (q in accepting)
