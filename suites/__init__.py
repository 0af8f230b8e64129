"""The built-in suites: TOML sweeps shipped as this package's data.

A package, not a bare folder, so that a wheel carries them and `harness.spec` finds them with
`importlib.resources` wherever attnbench is installed; this folder stays their one source.
"""
