"""gptft uses Lightning (and torch, Hydra) through public names only: a minor release may change any `_name`.

Flags, in every gptft module: reading `obj._name` where `_name` is no private name of gptft's own; a gptft
class that defines or assigns a `_name` that a base class from another package already has (an override of a
private member); `getattr(x, "_name")`-style access; importing a `_name` or from a `_module` of another package.
"""
import ast
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gptft"
MODULES = sorted(PACKAGE.rglob("*.py"))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _own_private_names() -> set[str]:
    """Private names gptft defines itself: functions, classes, module and class variables, self/cls attributes."""
    names = set()
    for path in MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
    return {n for n in names if _private(n)}


def _foreign_bases(cls) -> list[type]:
    return [b for b in cls.__mro__[1:] if b is not object and b.__module__.split(".")[0] != "gptft"]


def _foreign_has(cls, name: str) -> str | None:
    """The foreign base class of `cls` that defines or assigns `name`, if any."""
    for base in _foreign_bases(cls):
        if name in vars(base):
            return base.__qualname__
        try:
            source = inspect.getsource(base)
        except (OSError, TypeError):
            continue
        if re.search(rf"\bself\.{re.escape(name)}\b", source):
            return base.__qualname__
    return None


def _violations(path: Path, own: set[str], module=None) -> list[str]:
    tree = ast.parse(path.read_text())
    module = module or importlib.import_module(_module_name(path))
    where = lambda node: f"{path.name}:{node.lineno}"  # noqa: E731
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and not node.module.startswith("gptft"):
            if any(_private(part) for part in node.module.split(".")):
                found.append(f"{where(node)}: imports from private module {node.module}")
            found += [f"{where(node)}: imports private {node.module}.{a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Import):
            found += [f"{where(node)}: imports private module {a.name}" for a in node.names
                      if any(_private(p) for p in a.name.split("."))]
        elif isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in own:
            found.append(f"{where(node)}: reads {ast.unparse(node)}, a private member of another package")
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id in ("getattr", "setattr", "hasattr", "delattr") and len(node.args) > 1
              and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
              and _private(node.args[1].value) and node.args[1].value not in own):
            found.append(f"{where(node)}: {node.func.id}(..., {node.args[1].value!r}) reaches a private member")
        elif isinstance(node, ast.ClassDef):
            cls = getattr(module, node.name, None)
            if not isinstance(cls, type):
                continue
            defined = {n.name for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            defined |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute) and isinstance(n.ctx, ast.Store)
                        and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls")}
            defined |= {t.id for n in node.body if isinstance(n, (ast.Assign, ast.AnnAssign))
                        for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
            for name in sorted(filter(_private, defined)):
                if base := _foreign_has(cls, name):
                    found.append(f"{where(node)}: {node.name}.{name} overrides a private member of {base}")
    return found


def test_gptft_uses_no_private_member_of_lightning_or_torch():
    own = _own_private_names()
    found = [v for path in MODULES for v in _violations(path, own)]
    assert not found, "\n".join(found)


@pytest.mark.parametrize("snippet, expected", [
    ("import lightning as L\nclass C(L.Callback):\n    def f(self, trainer):\n        return trainer._checkpoint_connector\n",
     "reads trainer._checkpoint_connector"),
    ("from lightning.pytorch.callbacks import ModelCheckpoint\nclass C(ModelCheckpoint):\n"
     "    def _save_last_checkpoint(self, trainer, m):\n        pass\n",
     "C._save_last_checkpoint overrides a private member of ModelCheckpoint"),
    ("from lightning.pytorch.callbacks import ModelCheckpoint\nclass C(ModelCheckpoint):\n"
     "    def f(self):\n        self._last_global_step_saved = 0\n",
     "C._last_global_step_saved overrides a private member of ModelCheckpoint"),
    ("from lightning.fabric.utilities.cloud_io import _atomic_save\n", "imports private"),
    ("def f(t):\n    return getattr(t, '_results')\n", "getattr(..., '_results')"),
])
def test_the_check_catches_private_use(tmp_path, snippet, expected):
    # the check itself, on code that does what gptft must not do
    probe = tmp_path / "probe.py"
    probe.write_text(snippet)
    spec = importlib.util.spec_from_file_location("probe", probe)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    found = _violations(probe, _own_private_names(), module)
    assert any(expected in v for v in found), found
