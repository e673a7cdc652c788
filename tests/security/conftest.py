"""Fixtures of the security tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A file root with a ``sub`` directory, beside an ``outside`` directory of the same shape."""
    (tmp_path / "root" / "sub").mkdir(parents=True)
    (tmp_path / "outside" / "sub").mkdir(parents=True)
    return tmp_path / "root"
