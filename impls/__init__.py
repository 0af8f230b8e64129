"""Adapters: one small module per framework family. See impls/base.py for the protocol."""
