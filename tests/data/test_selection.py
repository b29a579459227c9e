"""Cut expressions: same masks as plain numpy, C precedence, and hostile input that never executes."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lit_vae.data.selection import cut_branches, evaluate_cut, to_python_syntax
from lit_vae.errors import ConfigError

RNG = np.random.default_rng(3)
COLUMNS = {
    "met": RNG.exponential(150, 5000), "mt": RNG.exponential(80, 5000), "mbb": RNG.uniform(0, 300, 5000),
    "mct2": RNG.exponential(120, 5000), "nBjet30_MV2c10": RNG.integers(0, 4, 5000),
    "lep1Eta": RNG.normal(0, 1.2, 5000),
}


@pytest.mark.parametrize("cut, expected", [
    ("met > 220 && mt > 50", (COLUMNS["met"] > 220) & (COLUMNS["mt"] > 50)),
    ("met > 220 and mt > 50", (COLUMNS["met"] > 220) & (COLUMNS["mt"] > 50)),
    ("100 < mbb < 140", (COLUMNS["mbb"] > 100) & (COLUMNS["mbb"] < 140)),
    ("100 < mbb <= 140 < mct2", (COLUMNS["mbb"] > 100) & (COLUMNS["mbb"] <= 140) & (COLUMNS["mct2"] > 140)),
    # && binds tighter than ||, comparisons tighter than both, as in C and ROOT.
    ("met > 220 && mt > 50 || mbb < 20", ((COLUMNS["met"] > 220) & (COLUMNS["mt"] > 50)) | (COLUMNS["mbb"] < 20)),
    ("mbb < 20 || met > 220 && mt > 50", (COLUMNS["mbb"] < 20) | ((COLUMNS["met"] > 220) & (COLUMNS["mt"] > 50))),
    ("!(nBjet30_MV2c10 >= 2) && met > 100", (COLUMNS["nBjet30_MV2c10"] < 2) & (COLUMNS["met"] > 100)),
    ("nBjet30_MV2c10 != 2", COLUMNS["nBjet30_MV2c10"] != 2),
    ("abs(lep1Eta) < 1.37 || abs(lep1Eta) > 1.52",
     (np.abs(COLUMNS["lep1Eta"]) < 1.37) | (np.abs(COLUMNS["lep1Eta"]) > 1.52)),
    ("sqrt(met * mt) > 2 * 50 + 10", np.sqrt(COLUMNS["met"] * COLUMNS["mt"]) > 110),
    ("-mt < -50", COLUMNS["mt"] > 50),
])
def test_masks_equal_plain_numpy(cut, expected):
    np.testing.assert_array_equal(evaluate_cut(cut, COLUMNS), expected)


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0, 400), b=st.floats(0, 400), c=st.floats(0, 300), d=st.floats(0, 300))
def test_random_thresholds_match_numpy(a, b, c, d):
    cut = f"met > {a!r} && mt > {b!r} || {c!r} < mbb < {d!r}"
    expected = ((COLUMNS["met"] > a) & (COLUMNS["mt"] > b)) | ((COLUMNS["mbb"] > c) & (COLUMNS["mbb"] < d))
    np.testing.assert_array_equal(evaluate_cut(cut, COLUMNS), expected)


def test_syntax_rewrite_keeps_not_equal():
    assert to_python_syntax("a != 1 && !b || c") == "a != 1 and not b or c"
    assert cut_branches("abs(lep1Eta) < 2 && 100 < mbb < 140") == {"lep1Eta", "mbb"}


@pytest.mark.parametrize("cut, shown", [
    ("__import__('os').system('touch {marker}')", "__import__('os').system"),
    ("met.__class__", "met.__class__"),
    ("open('{marker}', 'w')", "open('{marker}', 'w')"),
    ("[open('{marker}', 'w') for x in (1,)]", "[open("),
    ("(lambda: open('{marker}', 'w'))()", "lambda"),
    ("met[0] > 1", "met[0]"),
    ("__builtins__ > 0", "__builtins__"),
    ("'a' == 'a'", "'a'"),
    ("exec('open(\"{marker}\", \"w\")')", "exec("),
])
def test_hostile_cuts_are_rejected_before_anything_runs(tmp_path, cut, shown):
    marker = tmp_path / "pwned"
    cut, shown = cut.format(marker=marker), shown.format(marker=marker)
    with pytest.raises(ConfigError) as err:
        evaluate_cut(cut, COLUMNS)
    assert shown in str(err.value) and "not allowed" in str(err.value)
    assert not marker.exists()


@pytest.mark.parametrize("cut, message", [
    ("met > ", "not a valid expression"),
    ("met > 220 && unknown_branch > 1", "reads ['unknown_branch']"),
    ("met > 220 & mt > 50", "'220 & mt' is not allowed (bitwise & and | bind tighter than comparisons; write &&"),
])
def test_malformed_cuts_say_why(cut, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        evaluate_cut(cut, COLUMNS)


# --- fuzzing: whatever the text, an expression is a mask or a ConfigError, and nothing runs -------------

NAMES = [*COLUMNS, "__import__", "open", "os", "eval", "exec", "globals", "sqrt", "abs", "min", "log", "exp",
         "mass", "l1", "unknown", "lambda", "x"]
OPERATORS = ["&&", "||", "!", "and", "or", "not", "+", "-", "*", "/", "**", "%", "//", "<", "<=", ">", ">=",
             "==", "!=", "&", "|", "^", "~", ".", ",", ":", ";", "=", "@", "[", "]", "{", "}", "'", '"']
LEAVES = st.one_of(st.sampled_from(NAMES), st.integers(-10**30, 10**30).map(str),
                   st.floats(allow_nan=True, allow_infinity=True).map(repr), st.sampled_from(["1e999", "9**9**9"]))


def _expressions():
    """Random expression trees: operators, calls of any name with any arity, attributes and subscripts."""
    return st.recursive(LEAVES, lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(OPERATORS), inner).map(" ".join),
        st.tuples(st.sampled_from(["!", "-", "not ", "~"]), inner).map("".join),
        st.tuples(st.sampled_from(NAMES), st.lists(inner, max_size=3)).map(lambda t: f"{t[0]}({', '.join(t[1])})"),
        st.tuples(inner, st.sampled_from(NAMES)).map(lambda t: f"({t[0]}).{t[1]}"),
        inner.map(lambda e: f"({e})"), inner.map(lambda e: f"met[{e}]"),
    ), max_leaves=12)


def _mask_or_config_error(expression: str) -> None:
    try:
        mask = evaluate_cut(expression, COLUMNS)
    except ConfigError:
        return
    assert mask.dtype == bool and mask.shape == (5000,)


@settings(max_examples=300, deadline=None)
@given(expression=_expressions())
def test_random_expression_trees_give_a_mask_or_a_config_error(expression):
    _mask_or_config_error(expression)


@settings(max_examples=300, deadline=None)
@given(expression=st.lists(st.sampled_from([*"metmbb_().,'\"[]{}:;=!&|<>+-*/%~^@ 0123456789e", "__import__",
                                             "open(", "lambda", "**"]), max_size=40).map("".join))
def test_random_text_gives_a_mask_or_a_config_error(expression):
    _mask_or_config_error(expression)
