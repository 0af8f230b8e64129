"""attnbench's engine: suites, runner, measurement, storage. No framework imports at top level."""

__version__ = "0.1.0"
