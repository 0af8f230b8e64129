"""Adapter discovery: the built-in modules, the entry-point group "attnbench.impls", and
what $ATTNBENCH_PLUGINS names (comma-separated; loaded in every worker too): modules, and torch
functions as MODULE:FUNCTION (impls.torch_function; `--fn` and a suite's `fn` add them there).

A plugin module exposes `ADAPTERS` (a list of Adapter instances); an entry point may also
point straight at an Adapter instance, class, or list of them.
"""
from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os

from harness.spec import FUNCTION_PATH, function_impl
from harness.values import BadValue
from impls.base import Adapter

BUILTIN_MODULES = ("impls.numpy_ref", "impls.torch_naive", "impls.torch_sdpa",
                   "impls.torch_packed", "impls.torch_compiled", "impls.torch_flex",
                   "impls.xformers_fmha", "impls.tf_keras",
                   "impls.encoders", "impls.keras_encoders", "impls.jax_attn",
                   "impls.keras_backends")
ENTRY_POINT_GROUP = "attnbench.impls"
PLUGINS_ENV = "ATTNBENCH_PLUGINS"


class PluginError(BadValue):
    """A plugin module or function that cannot be loaded (not importable, not a function, the
    wrong signature); str() is one line naming where it was given."""


_REGISTRY: dict[str, Adapter] = {}
_LOADED = False


def register(adapter: Adapter) -> Adapter:
    """Add (or replace) an adapter under its name."""
    _REGISTRY[adapter.name] = adapter
    return adapter


def _register_object(obj) -> None:
    if isinstance(obj, type) and issubclass(obj, Adapter):
        obj = obj()
    if isinstance(obj, Adapter):
        register(obj)
        return
    if hasattr(obj, "ADAPTERS"):
        obj = obj.ADAPTERS
    for item in obj:
        _register_object(item)


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in BUILTIN_MODULES:
        _register_object(importlib.import_module(module))
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        _register_object(ep.load())
    for entry in _plugin_entries():
        if ":" in entry:
            register(_function_adapter(entry, f"${PLUGINS_ENV}"))
        else:
            _register_object(_import(entry, f"${PLUGINS_ENV}"))


def _plugin_entries() -> list[str]:
    return [e.strip() for e in os.environ.get(PLUGINS_ENV, "").split(",") if e.strip()]


def _import(module: str, where: str):
    try:
        return importlib.import_module(module)
    except Exception as exc:  # noqa: BLE001 — whatever stops the user's module is the answer
        raise PluginError(f"{where}: cannot import {module!r} ({type(exc).__name__}: {exc}): "
                          "expected an importable module (installed, or its folder on "
                          "PYTHONPATH)") from None


def _function_adapter(path: str, where: str) -> Adapter:
    """The implementation of a torch function MODULE:FUNCTION (impls.torch_function)."""
    from impls.torch_function import TorchFunction

    try:
        FUNCTION_PATH.check(path, where)
    except BadValue as exc:
        raise PluginError(str(exc)) from None
    module, _, qualname = path.partition(":")
    found = _import(module, f"{where} {path}")
    try:
        function = functools.reduce(getattr, qualname.split("."), found)
    except AttributeError:
        raise PluginError(f"{where} {path}: module {module!r} has no {qualname!r}: expected "
                          "MODULE:FUNCTION naming a function in it") from None
    try:
        return TorchFunction(path, function)
    except ValueError as exc:
        raise PluginError(f"{where} {path}: {qualname} {exc}") from None


def use_functions(paths: list[str], where: str) -> None:
    """Load torch functions (MODULE:FUNCTION) as implementations, here and, through
    $ATTNBENCH_PLUGINS, in every worker this process starts from now on (named
    harness.spec.function_impl(path)). PluginError (one line, naming `where`) for one that
    cannot be loaded."""
    _load()
    entries = _plugin_entries()
    for path in paths:
        if function_impl(path) not in _REGISTRY:
            register(_function_adapter(path, where))
        if path not in entries:
            entries.append(path)
            os.environ[PLUGINS_ENV] = ",".join(entries)


def adapters() -> dict[str, Adapter]:
    _load()
    return dict(_REGISTRY)


def get(name: str) -> Adapter:
    _load()
    return _REGISTRY[name]
