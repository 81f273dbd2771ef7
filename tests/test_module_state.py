"""State that used to live in modules now has an owner (issue 13): what each owner keeps, and for how long."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from vlmparity.cli import debug_requested
from vlmparity.cli._help import fix_help_metavars
from vlmparity.data.images import ImageEncoder, LargeImageNotices
from vlmparity.tasks.base import ImageData


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (10, 120, 200)).save(buf, format="PNG")
    return buf.getvalue()


def test_the_help_patch_applies_once_however_often_it_is_called() -> None:
    from typer.core import TyperOption

    fix_help_metavars()
    patched = TyperOption.display_type_rich
    fix_help_metavars()
    fix_help_metavars()
    assert TyperOption.display_type_rich is patched  # not wrapped again


def test_debug_comes_from_the_arguments_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VLMPARITY_DEBUG", raising=False)
    assert debug_requested(["--debug", "run"]) is True
    assert debug_requested(["run", "--tasks", "mme"]) is False
    monkeypatch.setenv("VLMPARITY_DEBUG", "1")
    assert debug_requested(["run"]) is True


def test_large_image_notices_belong_to_their_owner(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 = 1600 px: over the warning limit only
    image = ImageData.from_bytes(_png(40, 40))
    with caplog.at_level("WARNING"):
        ImageEncoder(workers=1).data_url(image, sample_id="a")
        ImageEncoder(workers=1).data_url(image, sample_id="b")  # another owner: it has not said it yet
        shared = LargeImageNotices()
        ImageEncoder(workers=1, notices=shared).data_url(image, sample_id="c")
        ImageEncoder(workers=1, notices=shared).data_url(image, sample_id="d")  # same owner: said already
    samples = [r.getMessage().split(":")[2].strip() for r in caplog.records]
    assert samples == ["sample 'a'", "sample 'b'", "sample 'c'"]
