"""Settings read from the environment: the compression defaults of issue 13."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from imgbatch import imaging
from imgbatch.config import Settings


def settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(f"IMGBATCH_{name.upper()}", value)
    return Settings(_env_file=None)  # type: ignore[call-arg]


def test_default_quality_is_an_integer_or_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings(monkeypatch).default_quality == 50
    assert settings(monkeypatch, default_quality="72").default_quality == 72
    assert settings(monkeypatch, default_quality=" Auto ").default_quality == "auto"
    for bad in ("0", "101", "best", "7.5", "+50", "5_0", "\u0665\u0660"):
        with pytest.raises(ValidationError, match="1 to 100, or auto"):
            settings(monkeypatch, default_quality=bad)


def test_default_box_and_auto_target(monkeypatch: pytest.MonkeyPatch) -> None:
    plain = settings(monkeypatch)
    assert plain.default_max_width is None and plain.default_max_height is None
    assert plain.auto_quality_target == imaging.DEFAULT_AUTO_TARGET  # one default, two layers
    boxed = settings(monkeypatch, default_max_width="1600", default_max_height="16384")
    assert (boxed.default_max_width, boxed.default_max_height) == (1600, imaging.MAX_SIDE)
    for name, bad in (("default_max_width", "0"), ("default_max_height", "16385")):
        with monkeypatch.context() as scoped, pytest.raises(ValidationError):
            settings(scoped, **{name: bad})
    for bad in ("1", "0.2"):
        with monkeypatch.context() as scoped, pytest.raises(ValidationError):
            settings(scoped, auto_quality_target=bad)
    assert settings(monkeypatch, auto_quality_target="0.985").auto_quality_target == 0.985


def test_embedded_defaults_keep_their_file_names(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Data written by earlier versions stays where they wrote it: renaming a default file
    would start an upgraded embedded deployment on an empty ledger."""
    monkeypatch.delenv("IMGBATCH_DATABASE_URL", raising=False)
    monkeypatch.delenv("DB_CONNECTION_STRING", raising=False)
    plain = settings(monkeypatch, data_dir=str(tmp_path))
    assert plain.resolved_database_url == f"sqlite:///{tmp_path.resolve() / 'imgbatch.db'}"
