"""Register PLACE with transformers' Auto classes in every program that uses them, import or not.

A pip-installed PLACE puts this module and `place_autoregister.pth` in site-packages. Python runs the .pth's one
`import` line at start-up; all that does is put a finder on `sys.meta_path` (no torch or transformers import).
When a program imports transformers' Auto models (`AutoModel…`, `pipeline()`), the finder lets that module load,
then imports `modeling_place`, whose `__init__` registers every PLACE class. So
`pipeline("zero-shot-image-classification", model="org/place-cxr")` runs the installed code and never stops to
ask whether to trust the repository's copy. `PLACE_AUTOREGISTER=0` turns it off; an editable install
(`pip install -e`) gets no .pth from setuptools, so there `import modeling_place` first.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys
import warnings
from importlib.machinery import ModuleSpec
from types import ModuleType

#: transformers' Auto model mappings: every `from_pretrained` path and `pipeline()` imports it.
TRIGGER = "transformers.models.auto.modeling_auto"


class PlaceAutoRegister(importlib.abc.MetaPathFinder):
    """Finds nothing itself; when `TRIGGER` is imported, it registers PLACE right after that module has run."""

    def find_spec(self, name: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != TRIGGER:
            return None
        sys.meta_path.remove(self)  # once, and modeling_place's own imports must not come back here
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisteringLoader(spec.loader)
        return spec


class _RegisteringLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        try:
            import modeling_place  # noqa: F401  (its __init__ registers PLACE with the Auto classes)
        except Exception as error:  # a broken install must not break transformers for everything else
            warnings.warn(f"PLACE could not register with transformers' Auto classes: {error!r}", stacklevel=2)


def install() -> None:
    """Put the finder in place (what `place_autoregister.pth` runs), unless PLACE_AUTOREGISTER=0."""
    if os.environ.get("PLACE_AUTOREGISTER", "1") == "0" or TRIGGER in sys.modules:
        return
    if not any(isinstance(finder, PlaceAutoRegister) for finder in sys.meta_path):
        sys.meta_path.insert(0, PlaceAutoRegister())
