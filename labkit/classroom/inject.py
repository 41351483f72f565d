"""What the grader runs in place of each CHECK cell.

The instructor's check cell (hidden tests included) is rewritten before it reaches the student's kernel:

- every name the notebook imported from labkit is replaced by a private alias bound in the same cell:
  functions come from a FRESH copy of the module that defines them (loaded from its file under a private
  name), plain constants are written as literals, classes are read from sys.modules; rebinding
  `check_x = lambda f: None` or patching the checker module changes nothing;
- every name the instructor's solution cells define (the learner's functions) is wrapped by
  runtime.Student: a library function passed off as the learner's own fails, calling the exercise's
  reference from the learner's code fails, and return values are reduced to plain values (an object
  that compares equal to everything fails);
- the cell starts by resetting the kernel (runtime.reset) and ends by printing a marker with the
  fingerprint of labkit's, torch's and the builtins' functions; the grader requires the marker and a
  fingerprint equal to the one the preamble printed before any student code ran.
"""
from __future__ import annotations

import ast
import importlib
import inspect
import types
from dataclasses import dataclass, field
from pathlib import Path

from labkit.classroom.handout import HIDDEN_MARKERS, SOLUTION, check_id

RUNTIME_SOURCE = (Path(__file__).resolve().parent / "runtime.py").read_text()
LABKIT_DIR = str(Path(__file__).resolve().parents[1]) + "/"
NOT_REFERENCES = ("labkit.exercises", "labkit.contracts", "labkit.claims", "labkit.checks", "labkit.classroom",
                  "labkit.viz", "labkit.widgets", "labkit.train", "labkit.models", "labkit.vocab")
ALWAYS_SCANNED = ("builtins", "torch", "torch.nn.functional")
# general-purpose helpers a learner may call in any exercise: never treated as an exercise's reference
GENERAL = {("labkit.batch", "pad"), ("labkit.batch", "collate"), ("labkit.batch", "arange_positions"),
           ("labkit.reduce", "reduce"), ("labkit.reduce", "token_cross_entropy"), ("labkit.memory", "measure_peak_memory")}
# references the checker does not name itself (it compares with fixed values), by CHECK id
EXTRA_REFERENCES = {"00-mask-mat": [("labkit.paradigms.masked", "mask_positions"), ("labkit.paradigms.masked", "random_mask")],
                    "04b-rope": [("labkit.models", "apply_rope")]}


def _parse(source: str) -> ast.Module | None:
    lines = [("pass  # " + ln) if ln.lstrip().startswith(("%", "!")) else ln for ln in source.splitlines()]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def labkit_bindings(nb) -> dict[str, tuple[str, str]]:
    """name -> (module, attribute) for every top-level `from labkit... import x [as y]` of the notebook."""
    out = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        tree = _parse(cell.source)
        for node in (tree.body if tree else []):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "labkit":
                for alias in node.names:
                    if alias.name != "*":
                        out[alias.asname or alias.name] = (node.module, alias.name)
    return out


def solution_names(nb) -> set[str]:
    """Names bound at top level by the instructor's solution cells: the learner's functions and answers."""
    names = set()
    for cell in nb.cells:
        if cell.cell_type != "code" or not SOLUTION.search(cell.source) or check_id(cell.source):
            continue
        tree = _parse(cell.source)
        for node in (tree.body if tree else []):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for t in targets:
                    names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names


def _loaded_names(source: str) -> set[str]:
    tree = _parse(source)
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)} if tree else set()


def _stored_names(tree: ast.AST) -> set[str]:
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and isinstance(n.ctx, (ast.Store, ast.Del)):
            out.add(n.id)
        elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(n.name)
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            out |= {(a.asname or a.name).split(".")[0] for a in n.names}
    return out


class _Rename(ast.NodeTransformer):
    """Rename free loads of `mapping` keys, respecting names bound locally in functions and lambdas."""

    def __init__(self, mapping: dict[str, str]):
        self.mapping, self.shadow = mapping, [set()]

    def _scoped(self, node, local):
        self.shadow.append(self.shadow[-1] | local)
        self.generic_visit(node)
        self.shadow.pop()
        return node

    def visit_FunctionDef(self, node):
        a = node.args
        params = {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs} | {x.arg for x in (a.vararg, a.kwarg) if x}
        for d in a.defaults + a.kw_defaults:
            if d is not None:
                self.visit(d)
        for dec in node.decorator_list:
            self.visit(dec)
        self.shadow.append(self.shadow[-1] | params | _stored_names(ast.Module(body=node.body, type_ignores=[])))
        node.body = [self.visit(s) for s in node.body]
        self.shadow.pop()
        return node

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node):
        a = node.args
        return self._scoped(node, {x.arg for x in a.posonlyargs + a.args + a.kwonlyargs} |
                            {x.arg for x in (a.vararg, a.kwarg) if x})

    def visit_Name(self, node):
        if isinstance(node.ctx, ast.Load) and node.id in self.mapping and node.id not in self.shadow[-1]:
            return ast.copy_location(ast.Name(id=self.mapping[node.id], ctx=ast.Load()), node)
        return node


def _code_id(fn) -> tuple[str, int, str]:
    c = fn.__code__
    return (c.co_filename, c.co_firstlineno, c.co_name)


def _referenced_functions(fn) -> list:
    """labkit functions named in fn's code (nested code objects included), resolved in its globals."""
    names, stack = set(), [fn.__code__]
    while stack:
        code = stack.pop()
        names |= set(code.co_names)
        stack += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    g = fn.__globals__
    return [g[n] for n in sorted(names) if isinstance(g.get(n), types.FunctionType)
            and (g[n].__module__ or "").startswith("labkit")]


def _is_reference_module(module: str) -> bool:
    return module.startswith("labkit") and not module.startswith(NOT_REFERENCES)


@dataclass
class CheckPlan:
    """How one CHECK cell is rewritten: aliases, fresh modules, the learner's names and the references."""
    id: str
    source: str
    fresh: dict = field(default_factory=dict)        # alias -> (defining module, file, attribute)
    literals: dict = field(default_factory=dict)     # alias -> repr
    classes: dict = field(default_factory=dict)      # alias -> (module, attribute)
    students: dict = field(default_factory=dict)     # alias -> learner's name
    references: list = field(default_factory=list)   # [(filename, line, name)]
    reference_names: list = field(default_factory=list)   # [(module, function)]: the same, portable


@dataclass
class Analysis:
    checks: dict                  # id -> CheckPlan
    scanned: list                 # modules fingerprinted (labkit modules the notebook imports + torch + builtins)
    trusted: list                 # directories whose code is library code, not the learner's


def analyse(nb) -> Analysis:
    """Plan the rewriting of every CHECK cell of an instructor notebook (imports the labkit modules named)."""
    import sys
    import sysconfig

    bindings = labkit_bindings(nb)
    students = solution_names(nb) - set(bindings)
    solution_src = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and SOLUTION.search(c.source))
    allowed = set()
    for name in _loaded_names(solution_src) & set(bindings):
        obj = getattr(importlib.import_module(bindings[name][0]), bindings[name][1], None)
        if isinstance(obj, types.FunctionType):
            allowed.add(_code_id(obj))
    scanned = set(ALWAYS_SCANNED)
    checks = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or not check_id(cell.source):
            continue
        cid = check_id(cell.source)
        source = HIDDEN_MARKERS.sub("", cell.source)
        tree = _parse(source)
        plan = CheckPlan(cid, source)
        if tree is None:
            checks[cid] = plan
            continue
        local = _stored_names(tree)
        used = _loaded_names(source)
        refs, names = set(), {}
        mapping = {}
        for name in sorted((used & set(bindings)) - local):
            module, attr = bindings[name]
            obj = getattr(importlib.import_module(module), attr, None)
            alias = f"__lk_ref_{name}"
            mapping[name] = alias
            if isinstance(obj, types.FunctionType):
                home = importlib.import_module(obj.__module__)
                if getattr(home, obj.__name__, None) is obj:
                    plan.fresh[alias] = (obj.__module__, inspect.getfile(home), obj.__name__)
                else:
                    plan.fresh[alias] = (module, inspect.getfile(importlib.import_module(module)), attr)
                scanned.add(obj.__module__)
                for f in [obj] + _referenced_functions(obj):
                    if _is_reference_module(f.__module__) and not f.__name__.startswith("_") \
                            and (f.__module__, f.__name__) not in GENERAL:
                        refs.add(_code_id(f))
                        names[_code_id(f)] = (f.__module__, f.__name__)
                        scanned.add(f.__module__)
            elif isinstance(obj, (bool, int, float, str, type(None))):
                plan.literals[alias] = repr(obj)
            else:
                plan.classes[alias] = (module, attr)
                scanned.add(module)
        for name in sorted((used & students) - local):
            mapping[name] = f"__lk_stu_{name}"
            plan.students[f"__lk_stu_{name}"] = name
        for module, attr in EXTRA_REFERENCES.get(cid, []):
            f = getattr(importlib.import_module(module), attr, None)
            if isinstance(f, types.FunctionType):
                refs.add(_code_id(f))
                names[_code_id(f)] = (module, attr)
        plan.references = sorted(refs - allowed)
        plan.reference_names = [names[r] for r in plan.references]
        plan.source = ast.unparse(_Rename(mapping).visit(tree))
        checks[cid] = plan
    trusted = sorted({LABKIT_DIR, sys.prefix + "/", sys.base_prefix + "/", sys.exec_prefix + "/",
                      str(Path(sysconfig.get_paths()["purelib"]).resolve()) + "/", str(Path(inspect.getfile(ast)).parent) + "/"})
    return Analysis(checks, sorted(m for m in scanned if m.split(".")[0] in ("labkit", "torch", "builtins")), trusted)


def _runtime_line(var: str = "__lk_rt") -> str:
    return f"{var} = {{}}\nexec(compile({RUNTIME_SOURCE!r}, '<labkit-grader>', 'exec'), {var})\n"


def preamble_cell(analysis: Analysis, nonce: str) -> str:
    """The first cell of the graded run: imports the scanned modules and prints the baseline fingerprint."""
    mods = [m for m in analysis.scanned if m != "builtins"]
    return ("# labkit grader: preamble (injected before any student code)\n" + _runtime_line() +
            f"for __lk_m in {mods!r}:\n    __import__('importlib').import_module(__lk_m)\n"
            f"__lk_rt['done']({nonce!r}, {analysis.scanned!r}, {analysis.trusted!r})\ndel __lk_rt, __lk_m\n")


def guard_cell() -> str:
    """A cell run just before each check: resets handlers, callbacks and transformers (runtime.reset)."""
    return "# labkit grader: reset (injected)\n" + _runtime_line("__lk_g") + "__lk_g['reset']()\ndel __lk_g\n"


def check_cell(plan: CheckPlan, analysis: Analysis, nonce: str, portable: bool = False) -> str:
    """The injected source of one CHECK cell. portable=True (nbgrader export): no machine paths (checker
    modules are found where labkit is installed, library directories are the kernel's own), no marker."""
    lines = [f"# CHECK: {plan.id}", "# labkit grader: injected check (fresh checkers, reset kernel, plain values)",
             _runtime_line().rstrip("\n"), "__lk_rt['reset']()"]
    trusted = None if portable else analysis.trusted
    by_module = {}
    for alias, (module, path, attr) in sorted(plan.fresh.items()):
        by_module.setdefault((module, None if portable else path), []).append((alias, attr))
    for k, ((module, path), pairs) in enumerate(sorted(by_module.items())):
        lines.append(f"__lk_mod{k} = __lk_rt['fresh']({module!r}, {path!r}, {nonce!r})")
        lines += [f"{alias} = __lk_mod{k}.{attr}" for alias, attr in pairs]
    lines += [f"{alias} = {value}" for alias, value in sorted(plan.literals.items())]
    lines += [f"{alias} = __import__('sys').modules[{m!r}].{a}" for alias, (m, a) in sorted(plan.classes.items())]
    refs = plan.reference_names if portable else plan.references
    for alias, name in sorted(plan.students.items()):
        lines.append(f"{alias} = __lk_rt['Student']({name!r}, {name}, {refs!r}, {trusted!r}) "
                     f"if callable({name}) else __lk_rt['plain']({name}, {trusted!r}, [])")
    lines.append(plan.source)
    if not portable:
        lines.append(f"__lk_rt['done']({nonce!r}, {analysis.scanned!r}, {analysis.trusted!r})")
    return "\n".join(lines) + "\n"
