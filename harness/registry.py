"""Adapter discovery: the built-in modules, the entry-point group "attnbench.impls", and
modules named in $ATTNBENCH_PLUGINS (comma-separated; imported in every worker too).

A plugin module exposes `ADAPTERS` (a list of Adapter instances); an entry point may also
point straight at an Adapter instance, class, or list of them.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os

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
    """A plugin module named in $ATTNBENCH_PLUGINS that cannot be imported."""


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
    for module in filter(None, (m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            found = importlib.import_module(module)
        except ImportError as exc:
            raise PluginError(f"${PLUGINS_ENV}: cannot import {module!r} ({exc}): expected "
                              "importable module names, comma-separated") from None
        _register_object(found)


def adapters() -> dict[str, Adapter]:
    _load()
    return dict(_REGISTRY)


def get(name: str) -> Adapter:
    _load()
    return _REGISTRY[name]
