"""Region cuts as safe expressions over columns: ROOT/C syntax in, a numpy boolean mask out.

`met > 220 && mt > 50 && 100 < mbb < 140 && !(njet30 > 3)` is rewritten to Python's `and`/`or`/`not`
(so comparisons bind tighter than the logical operators, as in C and ROOT), parsed with `ast`, checked
node by node against a whitelist and evaluated with numpy. Nothing is ever passed to `eval`.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping

import numpy as np

from lit_vae.errors import ConfigError

_COMPARE = {
    ast.Gt: np.greater, ast.GtE: np.greater_equal, ast.Lt: np.less, ast.LtE: np.less_equal,
    ast.Eq: np.equal, ast.NotEq: np.not_equal,
}
_BINARY = {
    ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
    ast.Pow: np.power, ast.Mod: np.mod,
}
_UNARY = {ast.USub: np.negative, ast.UAdd: np.positive}
FUNCTIONS = {
    "abs": np.abs, "sqrt": np.sqrt, "log": np.log, "exp": np.exp, "cos": np.cos, "sin": np.sin,
    "cosh": np.cosh, "sinh": np.sinh, "min": np.minimum, "max": np.maximum,
}
# Nodes that carry no risk of their own: the expression root, logical operators and operator tokens.
_STRUCTURE = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.Not, ast.Load, *_UNARY, *_BINARY, *_COMPARE)
_TOKENS = [(re.compile(r"&&"), " and "), (re.compile(r"\|\|"), " or "), (re.compile(r"!(?!=)"), " not ")]


def to_python_syntax(expression: str) -> str:
    """Rewrite C/ROOT logical operators (&&, ||, !) into Python's and/or/not."""
    for pattern, replacement in _TOKENS:
        expression = pattern.sub(replacement, expression)
    return " ".join(expression.split())


def parse_cut(expression: str) -> ast.Expression:
    """Parse and whitelist-check a cut; a ConfigError shows the offending part."""
    source = to_python_syntax(expression)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"cut '{expression}' is not a valid expression ({err.msg}); "
                          "use comparisons joined by && || ! and parentheses") from None
    for node in ast.walk(tree):
        _check_node(node, source)
    return tree


def _reject(node: ast.AST, source: str, why: str):
    part = ast.get_source_segment(source, node) or type(node).__name__
    raise ConfigError(f"cut '{source}': '{part}' is not allowed ({why}); allowed are branch names, numbers, "
                      f"comparisons, && || !, + - * / ** %, and the functions {', '.join(FUNCTIONS)}")


def _check_node(node: ast.AST, source: str) -> None:
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            _reject(node, source, "only the listed functions may be called")
        if node.keywords:
            _reject(node, source, "no keyword arguments")
    elif isinstance(node, ast.Name):
        if node.id.startswith("_"):
            _reject(node, source, "names may not start with an underscore")
    elif isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, (int, float)):
            _reject(node, source, "only numbers are constants")
    elif isinstance(node, ast.BinOp):
        if isinstance(node.op, (ast.BitAnd, ast.BitOr)):
            _reject(node, source, "bitwise & and | bind tighter than comparisons; write && and ||")
        if type(node.op) not in _BINARY:
            _reject(node, source, "operator not allowed")
    elif isinstance(node, ast.UnaryOp):
        if not isinstance(node.op, (ast.Not, ast.USub, ast.UAdd)):
            _reject(node, source, "operator not allowed")
    elif isinstance(node, ast.Compare):
        if not all(type(op) in _COMPARE for op in node.ops):
            _reject(node, source, "only < <= > >= == != compare")
    elif not isinstance(node, _STRUCTURE):
        _reject(node, source, f"{type(node).__name__} is not part of a cut")


def cut_branches(expression: str) -> set[str]:
    """The branch names a cut reads (function names excluded)."""
    tree = parse_cut(expression)
    called = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call)}
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} - called


def evaluate_cut(expression: str, columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """Boolean mask of the events that pass expression, evaluated over columns with numpy."""
    tree = parse_cut(expression)
    missing = cut_branches(expression) - set(columns)
    if missing:
        raise ConfigError(f"cut '{expression}' reads {sorted(missing)}, which are not among the columns")
    n = len(next(iter(columns.values()))) if columns else 0
    result = _evaluate(tree.body, columns)
    return np.broadcast_to(np.asarray(result, dtype=bool), (n,)).copy()


def _evaluate(node: ast.AST, columns: Mapping[str, np.ndarray]):
    if isinstance(node, ast.Name):
        return np.asarray(columns[node.id])
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BoolOp):
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        values = [_evaluate(v, columns) for v in node.values]
        result = values[0]
        for value in values[1:]:
            result = combine(result, value)
        return result
    if isinstance(node, ast.UnaryOp):
        operand = _evaluate(node.operand, columns)
        return np.logical_not(operand) if isinstance(node.op, ast.Not) else _UNARY[type(node.op)](operand)
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_evaluate(node.left, columns), _evaluate(node.right, columns))
    if isinstance(node, ast.Compare):  # a < b < c means a < b and b < c
        left = _evaluate(node.left, columns)
        result = True
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = _evaluate(right_node, columns)
            result = np.logical_and(result, _COMPARE[type(op)](left, right))
            left = right
        return result
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func.id](*(_evaluate(a, columns) for a in node.args))
    raise AssertionError(f"unchecked node {type(node).__name__}")  # parse_cut rejects everything else
