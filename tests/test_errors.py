"""The shared one-line flag checks of tfface.core.errors."""
import math

import pytest

from tfface.core.errors import UserError, check_unit_interval


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_unit_interval_accepts_its_closed_ends(value):
    assert check_unit_interval(value, "--rate") == value


@pytest.mark.parametrize("value", [-0.01, 1.01, math.nan])
def test_unit_interval_names_the_flag_and_the_value(value):
    with pytest.raises(UserError, match=rf"^--rate: expected a probability in \[0, 1\], got {value}$"):
        check_unit_interval(value, "--rate", "a probability")
    with pytest.raises(UserError, match=r"^--rate: expected a value in \[0, 1\]"):
        check_unit_interval(value, "--rate")
