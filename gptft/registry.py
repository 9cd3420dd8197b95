"""Allow-lists of gptft classes that a checkpoint may name, found by walking gptft's own packages.

A checkpoint is data: it names its task and data module by class name, and only a class defined in
gptft's own package folders (never a module path read from the checkpoint) can be rebuilt from it.
A new task or data module needs no registration: a new module in gptft/tasks or gptft/data is found.
"""
from __future__ import annotations

import importlib
import pkgutil


def _subclasses(base: type) -> list[type]:
    found = []
    for cls in base.__subclasses__():
        found += [cls, *_subclasses(cls)]
    return found


def gptft_subclasses(package: str, base: type) -> dict[str, type]:
    """{class name: class} of every subclass of `base` defined in the modules of gptft's `package`."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):  # file names on disk, not names from a checkpoint
        importlib.import_module(f"{package}.{info.name}")
    classes: dict[str, type] = {}
    for cls in _subclasses(base):
        if cls.__module__.startswith(package + "."):
            if classes.get(cls.__name__, cls) is not cls:
                raise TypeError(f"two classes named {cls.__name__} in {package}; class names must be unique there")
            classes[cls.__name__] = cls
    return classes
