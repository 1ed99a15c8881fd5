import math

import pytest

from vlmshield.api import ParameterError, eps_note, format_eps, parse_eps, parse_params
from vlmshield.attacks import PGD


@pytest.mark.parametrize("text, expected", [
    ("4/255", 4 / 255), ("0.0157", 0.0157), ("4", 4 / 255), ("1", 1.0), (" 2 / 255 ", 2 / 255),
    ("0.5/255", 0.5 / 255), (8 / 255, 8 / 255), (4, 4 / 255), ("1e-2", 0.01), ("255", 1.0),
])
def test_parse_eps_reads_every_form(text, expected):
    assert math.isclose(parse_eps(text), expected)


@pytest.mark.parametrize("text", ["0", "-1", "-4/255", "300", "300/255", "abc", "4/0", "nan", "inf", "", "4//255",
                                  True])
def test_parse_eps_rejects_in_one_sentence(text):
    with pytest.raises(ParameterError) as error:
        parse_eps(text)
    message = str(error.value)
    assert message.startswith("eps") and message.endswith(".") and "\n" not in message


def test_eps_note_only_for_bare_numbers_read_as_255ths():
    assert eps_note("4") == "eps 4 read as 4/255 = 0.01569"
    assert eps_note("4/255") is None
    assert eps_note("0.0157") is None


def test_format_eps():
    assert format_eps(4 / 255) == "4/255"
    assert format_eps(0.5 / 255) == "0.5/255"
    assert format_eps(0.0157) == "0.0157"


def test_parse_params_converts_by_default_type_and_pixel_rule():
    params = parse_params(PGD, "alpha=2,steps=20,random_start=false,norm=L2,loss=cw", "attack 'pgd'",
                          PGD.pixel_params)
    assert params == {"alpha": 2 / 255, "steps": 20, "random_start": False, "norm": "L2", "loss": "cw"}


@pytest.mark.parametrize("text, fragment", [
    ("alpah=1", "Did you mean 'alpha'"), ("steps=ten", "integer"), ("random_start=maybe", "true or false"),
    ("steps", "key=value"),
])
def test_parse_params_errors(text, fragment):
    with pytest.raises(ParameterError, match=fragment):
        parse_params(PGD, text, "attack 'pgd'", PGD.pixel_params)


def test_number_and_template_checks_are_one_sentence():
    from vlmshield.core import check_number, check_template

    assert check_number("alpha", 0) == 0.0 and check_number("scale", 2, positive=True) == 2.0
    for value, positive in ((-1, False), (0, True), (True, False), ("1", False), (float("nan"), False)):
        with pytest.raises(ParameterError, match=f"alpha must be a {'positive' if positive else 'non-negative'} "
                                                 f"number; got"):
            check_number("alpha", value, positive=positive)
    assert check_template("a photo of a {}.") == "a photo of a {}."
    for template in ("a photo", None):
        with pytest.raises(ParameterError, match=r"the prompt must contain \{\} for the class name"):
            check_template(template)
