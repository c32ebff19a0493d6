"""Inputs the fuzzing found to end in an exception instead of a clear refusal, pinned one by one."""

from __future__ import annotations

import pytest

from gateways.dicomweb.render import parse_options
from telenet.domain.errors import TelenetError


@pytest.mark.parametrize(
    "query",
    [{"viewport": "1e400,64"}, {"viewport": "inf,inf"}, {"window": "nan,400"}, {"window": "40,inf"}],
)
def test_rendering_options_past_the_floats_are_a_400_not_an_overflow(query: dict[str, str]) -> None:
    """``int(float("1e400"))`` raised OverflowError (a 500); a NaN window reached the renderer."""
    with pytest.raises(TelenetError) as refused:
        parse_options(query, "image/png", thumbnail=False)
    assert refused.value.status == 400 and refused.value.code == "bad-parameter"
