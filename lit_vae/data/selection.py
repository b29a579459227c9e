"""The safe expression language of manifests: region cuts and derived features, on numpy or torch.

`met > 220 && mt > 50 && 100 < mbb < 140 && !(njet30 > 3)` is rewritten to Python's `and`/`or`/`not`
(so comparisons bind tighter than the logical operators, as in C and ROOT), parsed with `ast`, checked
node by node against a whitelist and evaluated with numpy, or with torch when the columns are tensors
(differentiable, so training losses can use derived features). Nothing is ever passed to `eval`.

Kinematics: objects declared in the manifest (`l1: {pt: l1_pt, eta: l1_eta, phi: l1_phi, mass: 0}`) are
arguments of `mass`, `pt`, `eta`, `phi`, `energy` (of the sum of the objects' four-vectors) and
`delta_r(o1, o2)`; `delta_phi(a, b)` is a - b wrapped into [-pi, pi).
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Mapping

import numpy as np
import torch

from lit_vae.errors import ConfigError

MAX_LENGTH = 4000  # characters; a manifest expression is a line, not a program

_COMPARE = {ast.Gt: "gt", ast.GtE: "ge", ast.Lt: "lt", ast.LtE: "le", ast.Eq: "eq", ast.NotEq: "ne"}
_NUMPY_COMPARE = {"gt": "greater", "ge": "greater_equal", "lt": "less", "le": "less_equal", "eq": "equal",
                  "ne": "not_equal"}
_BINARY = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow", ast.Mod: "mod"}
_UNARY = {ast.USub: "neg", ast.UAdd: "pos"}
# name: (least, most) arguments; None: any number >= least
NUMERIC_FUNCTIONS = {
    "abs": (1, 1), "sqrt": (1, 1), "log": (1, 1), "exp": (1, 1), "cos": (1, 1), "sin": (1, 1), "cosh": (1, 1),
    "sinh": (1, 1), "atan2": (2, 2), "min": (2, 2), "max": (2, 2), "where": (3, 3), "delta_phi": (2, 2),
}
OBJECT_FUNCTIONS = {"mass": (1, None), "pt": (1, None), "eta": (1, None), "phi": (1, None), "energy": (1, None),
                    "delta_r": (2, 2)}
FUNCTIONS = {**NUMERIC_FUNCTIONS, **OBJECT_FUNCTIONS}
OBJECT_FIELDS = ("pt", "eta", "phi", "mass")
# Nodes that carry no risk of their own: the expression root, logical operators and operator tokens.
_STRUCTURE = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.Not, ast.Load, *_UNARY, *_BINARY, *_COMPARE)
_TOKENS = [(re.compile(r"&&"), " and "), (re.compile(r"\|\|"), " or "), (re.compile(r"!(?!=)"), " not ")]


def to_python_syntax(expression: str) -> str:
    """Rewrite C/ROOT logical operators (&&, ||, !) into Python's and/or/not."""
    for pattern, replacement in _TOKENS:
        expression = pattern.sub(replacement, expression)
    return " ".join(expression.split())


def parse_cut(expression: str, objects: frozenset[str] | set[str] = frozenset()) -> ast.Expression:
    """Parse and whitelist-check an expression; a ConfigError shows the offending part. Object functions
    take names of declared objects, every other function numbers."""
    if not isinstance(expression, str):
        raise ConfigError(f"expression {expression!r} must be a string")
    if len(expression) > MAX_LENGTH:
        raise ConfigError(f"expression of {len(expression)} characters is longer than {MAX_LENGTH}; split it")
    source = to_python_syntax(expression)
    try:
        tree = ast.parse(source, mode="eval")
    except SyntaxError as err:
        raise ConfigError(f"'{expression}' is not a valid expression ({err.msg}); "
                          "use comparisons joined by && || ! and parentheses") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"expression '{expression[:60]}...' is nested too deeply") from None
    try:
        for node in ast.walk(tree):
            _check_node(node, source, objects)
    except RecursionError:
        raise ConfigError(f"expression '{expression[:60]}...' is nested too deeply") from None
    return tree


def _reject(node: ast.AST, source: str, why: str):
    part = ast.get_source_segment(source, node) or type(node).__name__
    raise ConfigError(f"expression '{source}': '{part}' is not allowed ({why}); allowed are branch names, numbers, "
                      f"comparisons, && || !, + - * / ** %, and the functions {', '.join(FUNCTIONS)}")


def _check_node(node: ast.AST, source: str, objects) -> None:
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            _reject(node, source, "only the listed functions may be called")
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            _reject(node, source, "no keyword or starred arguments")
        least, most = FUNCTIONS[node.func.id]
        if len(node.args) < least or (most is not None and len(node.args) > most):
            wanted = f"{least}" if least == most else f"{least} or more"
            _reject(node, source, f"{node.func.id} takes {wanted} arguments, got {len(node.args)}")
        if node.func.id in OBJECT_FUNCTIONS:
            for arg in node.args:
                if not (isinstance(arg, ast.Name) and arg.id in objects):
                    known = ", ".join(sorted(objects)) or "none declared"
                    _reject(arg, source, f"{node.func.id} takes declared objects ({known})")
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
        _reject(node, source, f"{type(node).__name__} is not part of an expression")


def _object_arguments(tree: ast.AST) -> set[int]:
    return {id(a) for n in ast.walk(tree) if isinstance(n, ast.Call) and n.func.id in OBJECT_FUNCTIONS
            for a in n.args}


def expression_names(expression: str, objects: Mapping[str, Mapping] | None = None) -> set[str]:
    """The column names an expression reads, through the fields of the objects it uses too."""
    objects = objects or {}
    tree = parse_cut(expression, set(objects))
    called, as_object = {n.func for n in ast.walk(tree) if isinstance(n, ast.Call)}, _object_arguments(tree)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node not in called:
            if id(node) in as_object:
                for field in objects[node.id].values():
                    names |= expression_names(str(field))
            else:
                names.add(node.id)
    return names


def cut_branches(expression: str, objects: Mapping[str, Mapping] | None = None) -> set[str]:
    """The branch names a cut reads (function names excluded)."""
    return expression_names(expression, objects)


# --- evaluation on numpy or torch --------------------------------------------------------------------------

class _Backend:
    """The array operations an expression needs, for numpy arrays or torch tensors."""

    def __init__(self, xp):
        self.xp = xp
        self.torch = xp is torch

    def const(self, value, like):
        if self.torch and not isinstance(value, torch.Tensor):
            dtype = like.dtype if isinstance(like, torch.Tensor) and like.is_floating_point() else torch.float64
            return torch.as_tensor(value, dtype=dtype, device=like.device if isinstance(like, torch.Tensor) else None)
        return value

    def op(self, name: str, a, b=None):
        if name in _NUMPY_COMPARE:
            if self.torch:
                return getattr(torch, name)(*self._pair(a, b))
            return getattr(np, _NUMPY_COMPARE[name])(a, b)
        arithmetic = {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / b,
                      "pow": lambda: a ** b, "mod": lambda: self.remainder(a, b), "neg": lambda: -a, "pos": lambda: +a}
        return arithmetic[name]()

    def _pair(self, a, b):
        like = a if isinstance(a, torch.Tensor) else b
        return self.const(a, like), self.const(b, like)

    def logical(self, name: str, a, b=None):
        xp = self.xp
        if name == "not":
            return xp.logical_not(self.const(a, a))
        return (xp.logical_and if name == "and" else xp.logical_or)(*self._pair(a, b))

    def remainder(self, a, b):
        return torch.remainder(*self._pair(a, b)) if self.torch else np.mod(a, b)

    # sinh, cosh and asinh through exp, log and sqrt for torch: the same values, and ONNX Runtime runs them in
    # float64 (its Sinh, Cosh and Asinh kernels are float32 only), so an exported generator keeps precision
    def sinh(self, x):
        if not self.torch:
            return np.sinh(x)
        x2 = x * x  # the series below |x| = 1/2, where (e^x - e^-x) / 2 would lose digits to cancellation
        series = x * (1 + x2 / 6 * (1 + x2 / 20 * (1 + x2 / 42 * (1 + x2 / 72 * (1 + x2 / 110 * (1 + x2 / 156))))))
        return torch.where(x.abs() < 0.5, series, (torch.exp(x) - torch.exp(-x)) / 2)

    def cosh(self, x):
        return (torch.exp(x) + torch.exp(-x)) / 2 if self.torch else np.cosh(x)

    @staticmethod
    def _atan2(y, x):
        """atan2 with +, *, /, sqrt only (ONNX Runtime has no float64 Atan): the half-angle form
        2 atan(y / (r + x)), mirrored for x < 0, so that every atan argument lies in [-1, 1]."""
        r = torch.sqrt(x * x + y * y)
        right = x >= 0
        t = torch.where(right, y / torch.where(r + x > 0, r + x, 1.0), y / torch.where(r - x > 0, r - x, 1.0))
        half = _atan_unit(t)
        return torch.where(right, 2 * half, torch.where(y >= 0, 1.0, -1.0).to(y.dtype) * math.pi - 2 * half)

    def asinh(self, x):
        if not self.torch:
            return np.arcsinh(x)
        a = x.abs()
        return torch.sign(x) * _log1p(a + a * a / (1 + torch.sqrt(1 + a * a)))

    def call(self, name: str, *args):
        xp = self.xp
        if name == "delta_phi":
            return self.remainder(args[0] - args[1] + math.pi, 2 * math.pi) - math.pi
        if name == "where":
            cond, a, b = args
            if not self.torch:
                return np.where(cond, a, b)
            return torch.where(torch.as_tensor(cond) != 0, *self._pair(a, b))
        if name in ("min", "max", "atan2"):
            fn = {"min": (torch.minimum, np.minimum), "max": (torch.maximum, np.maximum),
                  "atan2": (self._atan2, np.arctan2)}[name]
            return fn[0](*self._pair(*args)) if self.torch else fn[1](*args)
        (x,) = args
        x = self.const(x, x)
        return getattr(self, name)(x) if name in ("sinh", "cosh") else getattr(xp, name)(x)


def _log1p(u: torch.Tensor) -> torch.Tensor:
    """log(1 + u) to full precision for small u with log alone (ONNX has no Log1p): Goldberg's correction
    log(w) * u / (w - 1), w = 1 + u rounded."""
    w = 1 + u
    return torch.where(w == 1, u, torch.log(w) * u / torch.where(w == 1, 1.0, w - 1))


def _atan_unit(t: torch.Tensor) -> torch.Tensor:
    """atan(t) for |t| <= 1 to float64 precision: three half-angle reductions (|t| <= 0.1), then the series."""
    for _ in range(3):
        t = t / (1 + torch.sqrt(1 + t * t))
    t2 = t * t
    return 8 * t * (1 + t2 * (-1 / 3 + t2 * (1 / 5 + t2 * (-1 / 7 + t2 * (1 / 9 + t2 * (-1 / 11 + t2 / 13))))))


def _four_vector(backend: _Backend, fields: dict):
    """(E, px, py, pz) of an object from pt, eta, phi and mass."""
    xp, (pt, eta, phi, mass) = backend.xp, (fields[f] for f in OBJECT_FIELDS)
    pz = pt * backend.sinh(eta)
    e = xp.sqrt((pt * backend.cosh(eta)) ** 2 + mass ** 2)
    return e, pt * xp.cos(phi), pt * xp.sin(phi), pz


def _kinematics(backend: _Backend, name: str, objects: list[dict]):
    xp = backend.xp
    if name == "delta_r":
        a, b = objects
        return xp.sqrt((a["eta"] - b["eta"]) ** 2 + backend.call("delta_phi", a["phi"], b["phi"]) ** 2)
    e, px, py, pz = (sum(parts) for parts in zip(*(_four_vector(backend, o) for o in objects), strict=True))
    if name == "energy":
        return e
    pt = xp.sqrt(px ** 2 + py ** 2)
    if name == "pt":
        return pt
    if name == "phi":
        return backend.call("atan2", py, px)
    if name == "eta":
        return backend.asinh(pz / pt)
    m2 = e ** 2 - px ** 2 - py ** 2 - pz ** 2
    return torch.sqrt(torch.clamp(m2, min=0.0)) if backend.torch else np.sqrt(np.maximum(m2, 0.0))


def evaluate(expression: str, columns: Mapping, objects: Mapping[str, Mapping] | None = None):
    """The value of expression over columns (numpy arrays, or torch tensors: then differentiable)."""
    objects = objects or {}
    tree = parse_cut(expression, set(objects))
    missing = expression_names(expression, objects) - set(columns)
    if missing:
        raise ConfigError(f"expression '{expression}' reads {sorted(missing)}, which are not among the columns")
    is_torch = any(isinstance(v, torch.Tensor) for v in columns.values())
    backend = _Backend(torch if is_torch else np)
    as_object = _object_arguments(tree)
    cache: dict[str, dict] = {}

    def resolve(name: str) -> dict:
        if name not in cache:
            first = next(iter(columns.values()))
            cache[name] = {f: _as_array(backend, evaluate(str(objects[name][f]), columns), first)
                           for f in OBJECT_FIELDS}
        return cache[name]

    def walk(node: ast.AST):
        if isinstance(node, ast.Name):
            return columns[node.id] if is_torch else np.asarray(columns[node.id])
        if isinstance(node, ast.Constant):  # floating point: 9**9**9 is inf at once, not a giant integer
            value = _as_float(node.value)
            return torch.tensor(value, dtype=torch.float64) if is_torch else np.float64(value)
        if isinstance(node, ast.BoolOp):
            values = [walk(v) for v in node.values]
            result = values[0]
            for value in values[1:]:
                result = backend.logical("and" if isinstance(node.op, ast.And) else "or", result, value)
            return result
        if isinstance(node, ast.UnaryOp):
            operand = walk(node.operand)
            return backend.logical("not", operand) if isinstance(node.op, ast.Not) else \
                backend.op(_UNARY[type(node.op)], operand)
        if isinstance(node, ast.BinOp):
            return backend.op(_BINARY[type(node.op)], walk(node.left), walk(node.right))
        if isinstance(node, ast.Compare):  # a < b < c means a < b and b < c
            left, result = walk(node.left), None
            for op, right_node in zip(node.ops, node.comparators, strict=True):
                right = walk(right_node)
                step = backend.op(_COMPARE[type(op)], left, right)
                result = step if result is None else backend.logical("and", result, step)
                left = right
            return result
        if isinstance(node, ast.Call):
            if node.func.id in OBJECT_FUNCTIONS:
                return _kinematics(backend, node.func.id, [resolve(a.id) for a in node.args if id(a) in as_object])
            return backend.call(node.func.id, *(walk(a) for a in node.args))
        raise AssertionError(f"unchecked node {type(node).__name__}")  # parse_cut rejects everything else

    try:
        with np.errstate(all="ignore"):
            return walk(tree.body)
    except RecursionError:
        raise ConfigError(f"expression '{expression[:60]}...' is nested too deeply") from None
    except (ArithmeticError, ValueError, TypeError, RuntimeError) as err:
        raise ConfigError(f"expression '{expression[:60]}' cannot be evaluated: {err}") from None


def _as_float(value: int | float) -> float:
    """A numeric constant as a float (integers beyond the float range become inf)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _as_array(backend: _Backend, value, like):
    """A field value (column or number) broadcast to the events' shape."""
    if backend.torch:
        return torch.as_tensor(value, dtype=like.dtype if like.is_floating_point() else torch.float64,
                               device=like.device).expand(like.shape)
    return np.broadcast_to(np.asarray(value, dtype=np.float64), np.shape(like))


def evaluate_cut(expression: str, columns: Mapping[str, np.ndarray],
                 objects: Mapping[str, Mapping] | None = None) -> np.ndarray:
    """Boolean mask of the events that pass expression, evaluated over columns with numpy."""
    n = len(next(iter(columns.values()))) if columns else 0
    result = evaluate(expression, columns, objects)
    if isinstance(result, torch.Tensor):
        result = result.detach().cpu().numpy()
    return np.broadcast_to(np.asarray(result, dtype=bool), (n,)).copy()
