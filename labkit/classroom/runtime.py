"""Kernel-side code of the grader's injected cells.

The grader never imports this module in the student's kernel: it embeds this file's SOURCE in each
injected cell and executes it into a private dict, so a submission cannot have replaced these
functions beforehand. Only the standard library, IPython and torch are used.

- reset(): custom exception handlers, event callbacks, input/AST transformers, tracers and any
  instance attribute that shadows a method of the shell or kernel go back to their defaults.
- fingerprint(modules): a digest of every function of the scanned modules (code identity), printed by
  the preamble before any student code and by each check: the grader compares the two outside the kernel.
- fresh(name, path, nonce): a new copy of a checker module, loaded from its file under a private name.
- Student(name, fn, refs, trusted): the learner's function, called with the reference functions watched
  (calling one from the learner's own code fails) and its return value reduced to plain values.
"""
import builtins
import dataclasses
import hashlib
import importlib.util
import sys
import types

MARK = "LABKIT-GRADER"


def _shell():
    from IPython.core.getipython import get_ipython
    return get_ipython()


def _unshadow(obj):
    """Drop instance attributes that replace a method of obj's class (e.g. shell.showtraceback = ...)."""
    if obj is None:
        return []
    dropped = []
    for key, value in list(vars(obj).items()):
        meth = getattr(type(obj), key, None)
        if isinstance(meth, types.FunctionType) and not (isinstance(value, types.MethodType) and value.__func__ is meth):
            del obj.__dict__[key]
            dropped.append(key)
    return dropped


def reset():
    """Put the kernel's execution machinery back to its defaults before a check runs."""
    sys.settrace(None)
    sys.setprofile(None)
    sys.excepthook = sys.__excepthook__
    ip = _shell()
    if ip is None:
        return
    ip.set_custom_exc((), None)
    for obj in (ip, getattr(ip, "kernel", None), getattr(ip, "events", None), getattr(ip, "displayhook", None),
                getattr(ip, "display_pub", None), getattr(ip, "compile", None)):
        _unshadow(obj)
    for callbacks in ip.events.callbacks.values():
        callbacks.clear()
    from IPython.core.inputtransformer2 import TransformerManager
    ip.input_transformer_manager = TransformerManager()
    ip.input_transformers_post = []
    ip.ast_transformers = []
    sys.displayhook = ip.displayhook
    if type(sys.stdout).__name__ != "OutStream" or type(sys.stderr).__name__ != "OutStream":
        raise AssertionError("sys.stdout or sys.stderr was replaced in the notebook; the grader needs the kernel's own "
                             "streams. Remove the code that redirects them")


def _functions(modules):
    for name in sorted(modules):
        mod = sys.modules.get(name)
        if mod is None:
            continue
        spaces = [(name, vars(mod))]
        if name == "torch":
            spaces.append(("torch.Tensor", vars(mod.Tensor)))
        for label, space in spaces:
            for key in sorted(k for k in space if isinstance(k, str)):
                value = space[key]
                code = getattr(value, "__code__", None)
                if isinstance(value, (types.FunctionType, types.MethodType)) and code is not None:
                    yield f"{label}.{key}", code
                elif isinstance(value, types.BuiltinFunctionType) or type(value).__name__ in ("builtin_function_or_method",
                                                                                              "method_descriptor"):
                    yield f"{label}.{key}", getattr(value, "__name__", None)
                elif callable(value) and not isinstance(value, type) and label == "builtins":
                    yield f"{label}.{key}", type(value)


def fingerprint(modules, trusted=()):
    """sha256 over (name, code identity) of every function in the given modules (torch also scans
    torch.Tensor). labkit's functions count by exact code (file, line, name, bytecode); the others by
    whether their code comes from a trusted directory (torch re-wraps some of its own functions
    lazily, e.g. manual_seed). A function replaced by notebook code changes the digest."""
    h = hashlib.sha256()
    for key, code in _functions(modules):
        if isinstance(code, types.CodeType) and key.startswith("labkit"):
            ident = (code.co_filename, code.co_firstlineno, code.co_name, hashlib.sha256(code.co_code).hexdigest())
        elif isinstance(code, types.CodeType):
            ident = "library" if _trusted_file(code.co_filename, trusted) else (code.co_filename, code.co_firstlineno)
        else:
            ident = repr(code)
        h.update(repr((key, ident)).encode())
    return h.hexdigest()[:16]


def default_trusted():
    """Library directories of this interpreter: labkit's package, the environment, the standard library."""
    import os
    import sysconfig
    spec = importlib.util.find_spec("labkit")
    dirs = [os.path.dirname(spec.origin)] if spec and spec.origin else []
    dirs += [sys.prefix, sys.base_prefix, sys.exec_prefix, sysconfig.get_paths()["purelib"], os.path.dirname(os.__file__)]
    return [os.path.realpath(d) + "/" for d in dirs] + [d.rstrip("/") + "/" for d in dirs]


def fresh(name, path, nonce):
    """A new module object executed from `path` (None: where `name` is installed), with `name`'s package
    for relative imports; registered in sys.modules only while it runs (dataclasses need that), under a
    private name."""
    if path is None:
        path = importlib.util.find_spec(name).origin
    alias = f"_labkit_fresh_{nonce}_" + name.replace(".", "_")
    spec = importlib.util.spec_from_file_location(alias, path)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = name.rpartition(".")[0] if not path.endswith("__init__.py") else name
    sys.modules[alias] = mod
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop(alias, None)
    return mod


# ----------------------------------------------------------------------------- the learner's function

_LEAVES = (type(None), bool, int, float, complex, str, bytes, slice, range, type(Ellipsis))


def plain(value, trusted=None, refs=(), depth=0):
    """value reduced to plain data: numbers, strings, torch tensors and numpy arrays of their exact base
    types, lists / tuples / dicts of those, dataclasses defined in trusted files, and callables (wrapped
    like the learner's function). Anything else (an object with its own __eq__, a tensor subclass) fails."""
    if trusted is None:
        trusted = default_trusted()
    if depth > 50:
        raise AssertionError("the returned value nests deeper than 50 levels")
    t = type(value)
    if t in _LEAVES:
        return value
    for base in (bool, int, float, complex, str, bytes):
        if isinstance(value, base):
            return base(value) if base is not bool else bool(int(value))
    torch = sys.modules.get("torch")
    if torch is not None:
        if t in (torch.Tensor, torch.nn.Parameter, torch.Size, torch.dtype, torch.device, torch.Generator):
            return value
        if isinstance(value, torch.Tensor):
            raise AssertionError(f"your function returned a {t.__name__}, a tensor subclass; return a plain torch.Tensor")
    np = sys.modules.get("numpy")
    if np is not None:
        if t is np.ndarray or (isinstance(value, np.generic) and t.__module__ == "numpy"):
            return value
    if t in (list, tuple, set, frozenset):
        return t(plain(v, trusted, refs, depth + 1) for v in value)
    if isinstance(value, tuple) and hasattr(t, "_fields") and _trusted_file(getattr(sys.modules.get(t.__module__), "__file__", None), trusted):
        return t(*(plain(v, trusted, refs, depth + 1) for v in value))
    if isinstance(value, (list, tuple)):
        return (list if isinstance(value, list) else tuple)(plain(v, trusted, refs, depth + 1) for v in value)
    if isinstance(value, dict) or (hasattr(value, "keys") and hasattr(value, "__getitem__") and
                                   _trusted_file(getattr(sys.modules.get(t.__module__), "__file__", None), trusted)):
        return {plain(k, trusted, refs, depth + 1): plain(value[k], trusted, refs, depth + 1) for k in list(value.keys())}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        mod = sys.modules.get(t.__module__)
        if getattr(mod, t.__name__, None) is t and _trusted_file(getattr(mod, "__file__", None), trusted):
            fields = {f.name: plain(getattr(value, f.name), trusted, refs, depth + 1)
                      for f in dataclasses.fields(value) if f.init}
            return dataclasses.replace(value, **fields)
    if callable(value) and not isinstance(value, type):
        return Student("the function your function returned", value, refs, trusted)
    raise AssertionError(f"your function returned a {t.__module__}.{t.__name__}; the grader compares plain values only "
                         "(numbers, strings, torch tensors, lists, tuples, dicts). Return those")


def _trusted_file(filename, trusted):
    return bool(filename) and any(filename.startswith(d) for d in trusted)


class Student:
    """The learner's callable as the checks see it.

    Refuses a library function passed as the learner's own (co_filename in a trusted directory); while
    it runs, a profiler watches for calls from the learner's code into `refs` (the reference functions
    of this exercise: (filename, first line, name) of their code); its return value goes through plain()."""

    def __init__(self, name, fn, refs, trusted=None):
        trusted = default_trusted() if trusted is None else trusted
        resolved = set()
        for r in refs:                 # (filename, line, name), or (module, function) resolved here
            if len(r) == 2:
                f = getattr(sys.modules.get(r[0]) or importlib.import_module(r[0]), r[1], None)
                c = getattr(f, "__code__", None)
                if c is not None:
                    resolved.add((c.co_filename, c.co_firstlineno, c.co_name))
            else:
                resolved.add(tuple(r))
        self.name, self.fn, self.refs, self.trusted = name, fn, resolved, tuple(trusted)
        target = fn
        while isinstance(target, __import__("functools").partial):
            target = target.func
        target = getattr(target, "__func__", target)
        code = getattr(target, "__code__", None)
        if code is not None and _trusted_file(code.co_filename, self.trusted):
            raise AssertionError(f"`{name}` is {getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}, "
                                 "a library function: the exercise asks you to write it yourself")
        if code is not None and (code.co_filename, code.co_firstlineno, code.co_name) in self.refs:
            raise AssertionError(f"`{name}` is the reference implementation; write your own")

    def _profile(self, frame, event, arg):
        if event != "call" or self.called is not None:
            return
        code = frame.f_code
        if (code.co_filename, code.co_firstlineno, code.co_name) in self.refs:
            caller = frame.f_back
            while caller is not None and caller.f_code.co_filename.startswith("<frozen"):
                caller = caller.f_back
            if caller is not None and not _trusted_file(caller.f_code.co_filename, self.trusted):
                self.called = code.co_name

    def __call__(self, *args, **kwargs):
        self.called = None
        previous = sys.getprofile()
        sys.setprofile(self._profile)
        try:
            out = self.fn(*args, **kwargs)
        finally:
            still = sys.getprofile()
            sys.setprofile(previous)
        if still is not self._profile and getattr(still, "__self__", None) is not self:
            raise AssertionError(f"`{self.name}` changed the interpreter's profiler while the grader was watching it")
        if self.called:
            raise AssertionError(f"`{self.name}` calls `{self.called}`, the reference the grader compares with: "
                                 "write the computation yourself")
        return plain(out, self.trusted, self.refs)

    def __repr__(self):
        return f"<your {self.name}>"


def done(nonce, modules, trusted=()):
    """The last line of an injected cell: the marker the grader requires, with the fingerprint."""
    builtins.print(f"{MARK} {nonce} {fingerprint(modules, trusted)}")
