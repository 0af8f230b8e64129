"""The executors by name, for `attnbench run --executor NAME`: each builds from its options."""
from __future__ import annotations

from typing import Callable

from harness.run.executor import Executor, LocalExecutor


def local_executor(**options) -> Executor:
    return LocalExecutor()


def dask_executor(workers: int | None = None, scheduler: str | None = None) -> Executor:
    from harness.run.dask_executor import DaskExecutor  # Dask only when it is asked for

    return DaskExecutor.from_options(workers=workers, scheduler=scheduler)


EXECUTORS: dict[str, Callable[..., Executor]] = {"local": local_executor, "dask": dask_executor}


def make_executor(name: str, **options) -> Executor:
    """The executor called `name`, built from its options (dask: workers or scheduler)."""
    return EXECUTORS[name](**options)
