"""What a wheel declares and carries: the Python floor is in the metadata (pip refuses an older
interpreter before anything is imported), the built-in suites are package data, the licence is
named. The metadata is built by setuptools exactly as `pip wheel` builds it."""
from __future__ import annotations

import email.parser
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from harness import spec

ROOT = Path(__file__).resolve().parent.parent
BUILD_METADATA = ("import sys; from setuptools import build_meta; "
                  "print(build_meta.prepare_metadata_for_build_wheel(sys.argv[1]))")


@pytest.fixture(scope="module")
def metadata_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("metadata")
    done = subprocess.run([sys.executable, "-c", BUILD_METADATA, str(out)], check=False,
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def metadata(metadata_dir):
    return email.parser.Parser().parsestr((metadata_dir / "METADATA").read_text())


def test_the_metadata_refuses_python_3_10_and_admits_3_11(metadata):
    floor = SpecifierSet(metadata["Requires-Python"])
    assert "3.10.14" not in floor and "3.10" not in floor
    assert "3.11.0" in floor and "3.12" in floor and "3.13" in floor


def test_the_licence_is_bsd_3_clause_and_travels_with_the_wheel(metadata, metadata_dir):
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert (metadata_dir / "licenses" / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()
    assert "BSD 3-Clause" in (ROOT / "LICENSE").read_text()


def test_the_suites_are_a_package_of_the_wheel(metadata_dir):
    top_level = (metadata_dir / "top_level.txt").read_text().split()
    assert "suites" in top_level
    sources = (metadata_dir.parent / "attnbench.egg-info" / "SOURCES.txt").read_text().split()
    on_disk = sorted(f"suites/{p.name}" for p in (ROOT / "suites").glob("*.toml"))
    assert on_disk and not set(on_disk) - set(sources), "a suite is not package data"


def test_the_harness_reads_the_suites_as_package_resources():
    """A bare name resolves inside the `suites` package, wherever it is installed; the checkout's
    folder is that package here."""
    assert Path(str(spec.SUITES_DIR)) == ROOT / "suites"
    assert spec.resolve_suite_path("smoke") == ROOT / "suites" / "smoke.toml"
    assert spec.builtin_suite_names() == sorted(p.stem for p in (ROOT / "suites").glob("*.toml"))
