"""Reading parameters the way users write them: eps as ``4/255``, ``0.0157`` or ``4``; ``key=value`` lists.

The eps rule: a fraction is read as written; a bare number above 1 means that many 255ths (``4`` is
4/255); anything that is zero, negative, or above 1 after that reading is an error.
"""

from __future__ import annotations

import inspect
import math
import re
from fractions import Fraction
from typing import ClassVar

from .errors import ParameterError, PluginError, did_you_mean

_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
# ASCII digits only: Python's float() and int() would also take '1_0' and other scripts' digits ('٤').
_PLAIN = re.compile(rf"\s*[-+]?{_NUMBER}\s*", re.ASCII)
_FRACTION = re.compile(rf"\s*([-+]?{_NUMBER})\s*/\s*({_NUMBER})\s*", re.ASCII)
_INTEGER = re.compile(r"\s*[-+]?[0-9]+\s*", re.ASCII)
_NOT_FINITE = re.compile(r"\s*[-+]?(?:nan|inf|infinity)\s*", re.ASCII | re.IGNORECASE)


def _read_number(text: str, what: str) -> tuple[float, bool]:
    """(value, is_fraction) of '4/255' or '0.0157'; ParameterError if neither, or if not finite."""
    match = _FRACTION.fullmatch(text)
    if match:
        numerator, denominator = float(match.group(1)), float(match.group(2))
        if not (math.isfinite(numerator) and math.isfinite(denominator)):
            raise ParameterError(f"{what} must be a finite number; got {text!r}.")
        if denominator == 0:
            raise ParameterError(f"{what} {text!r} divides by zero.")
        value, is_fraction = numerator / denominator, True
    elif _PLAIN.fullmatch(text):
        value, is_fraction = float(text), False
    elif _NOT_FINITE.fullmatch(text):
        raise ParameterError(f"{what} must be a finite number; got {text!r}.")
    else:
        raise ParameterError(f"{what} must be a number such as 4/255, 0.0157 or 4; got {text!r}.")
    if not math.isfinite(value):
        raise ParameterError(f"{what} must be a finite number; got {text!r}.")
    return value, is_fraction


def parse_eps(text: str | float, what: str = "eps") -> float:
    """Read a perturbation budget in pixel units; see the module docstring for the rule."""
    if isinstance(text, bool):
        raise ParameterError(f"{what} must be a number such as 4/255, 0.0157 or 4; got {text!r}.")
    if isinstance(text, (int, float)):
        value, is_fraction = float(text), False
        if not math.isfinite(value):
            raise ParameterError(f"{what} must be a finite number; got {text!r}.")
    else:
        value, is_fraction = _read_number(str(text), what)
    if not is_fraction and value > 1:
        value = value / 255
    if not 0 < value <= 1:
        raise ParameterError(
            f"{what} must be above 0 and at most 1 (pixels are in [0, 1]); got {text!r}, read as {value:g}."
        )
    return value


def eps_note(text: str | float, what: str = "eps") -> str | None:
    """A note for the user when ``text`` was read as 255ths, else None."""
    if isinstance(text, bool):
        return None
    if isinstance(text, str):
        try:
            value, is_fraction = _read_number(text, what)
        except ParameterError:
            return None
        if is_fraction:
            return None
    elif isinstance(text, (int, float)):
        value = float(text)
    else:
        return None
    if value > 1:
        return f"{what} {text} read as {format_eps(value / 255)} = {value / 255:.5f}"
    return None


def format_eps(value: float) -> str:
    """'4/255' when value is a whole number of 255ths (to float precision), else '%g'."""
    if not math.isfinite(value):
        return f"{value:g}"
    fraction = Fraction(value * 255).limit_denominator(8)
    if fraction and abs(float(fraction) - value * 255) < 1e-6:  # a tiny eps is not '0/255'
        num = fraction.numerator if fraction.denominator == 1 else f"{float(fraction):g}"
        return f"{num}/255"
    return f"{value:g}"


def _parse_bool(text: str, what: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ParameterError(f"{what} must be true or false; got {text!r}.")


def signature_defaults(cls) -> dict[str, object]:
    """name -> default of every parameter of ``cls.__init__`` (registered classes must default all)."""
    params = inspect.signature(cls.__init__).parameters
    return {name: p.default for name, p in params.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def check_param_names(cls, params: dict, what: str) -> None:
    """ParameterError naming the first parameter ``cls`` does not take, with suggestions."""
    known = signature_defaults(cls)
    for name in params:
        if name not in known:
            raise ParameterError(
                f"{what} has no parameter {name!r}.{did_you_mean(name, known)}"
                f" Its parameters: {', '.join(known) or 'none'}."
            )


def parse_params(cls, text: str | None, what: str, pixel_params: frozenset[str] = frozenset()) -> dict:
    """Read 'key=value,key=value' for ``cls``, converting each value to the type of its default.

    Parameters named in ``pixel_params`` (eps, step sizes) follow the eps rule; a parameter that takes
    a number or a word (TTC's ``tau_thres=auto``) lists its words in the class's ``keywords``.
    """
    if not text:
        return {}
    defaults = signature_defaults(cls)
    keywords = getattr(cls, "keywords", {})
    params: dict[str, object] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        key, sep, raw = item.partition("=")
        key, raw = key.strip().replace("-", "_"), raw.strip()
        if not sep or not key:
            raise ParameterError(f"{what} parameters must be written key=value; got {item.strip()!r}.")
        check_param_names(cls, {key: raw}, what)
        if key in params:
            raise ParameterError(f"{what} parameter {key!r} is given twice; give it once.")
        if raw.lower() in keywords.get(key, ()):
            params[key] = raw.lower()
            continue
        params[key] = convert_value(raw, defaults[key], f"{what} parameter {key!r}",
                                    pixel=key in pixel_params)
    return params


def convert_value(raw: str, default: object, what: str, pixel: bool = False) -> object:
    """Convert the string ``raw`` to the type of ``default``."""
    if pixel:
        return parse_eps(raw, what)
    if raw.lower() == "none":
        return None
    if isinstance(default, bool):
        return _parse_bool(raw, what)
    if isinstance(default, int):
        if not _INTEGER.fullmatch(raw):
            raise ParameterError(f"{what} must be an integer; got {raw!r}.")
        return _read_integer(raw, what)
    if default is None and _INTEGER.fullmatch(raw):
        return _read_integer(raw, what)  # a parameter without a typed default (n_target_classes=3) stays whole
    if isinstance(default, float) or default is None:
        try:
            return _read_number(raw, what)[0]
        except ParameterError:
            if default is not None:
                raise
    return raw


def _read_integer(raw: str, what: str) -> int:
    try:
        return int(raw)
    except ValueError:  # more digits than Python converts (sys.get_int_max_str_digits)
        raise ParameterError(f"{what} must be an integer of at most a few thousand digits; got {len(raw.strip())} "
                             f"characters.") from None


def check_number(name: str, value: object, *, positive: bool = False) -> float:
    """``value`` as a float if it is a number >= 0 (> 0 with ``positive``); else one clear sentence."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0 \
            or (positive and value == 0):
        raise ParameterError(f"{name} must be a {'positive' if positive else 'non-negative'} number; got {value!r}.")
    return float(value)


def check_template(template: object) -> str:
    """A prompt template: a string with ``{}`` where the class name goes; else one clear sentence."""
    if not isinstance(template, str) or "{}" not in template:
        raise ParameterError(f"the prompt must contain {{}} for the class name; got {template!r}.")
    return template


class Configurable:
    """Parameters given to ``__init__`` become attributes and ``self.params``; every one has a default."""

    kind: ClassVar[str] = ""
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""

    def __init__(self, **params):
        self.params = dict(params)
        for key, value in params.items():
            setattr(self, key, value)

    @classmethod
    def create(cls, **params):
        """Instantiate, with a clear error for a parameter the class does not take."""
        check_param_names(cls, params, f"{cls.kind} {cls.name!r}")
        return cls(**params)

    @classmethod
    def check_class(cls) -> None:
        """PluginError unless the class can be registered: concrete, named, all parameters defaulted."""
        if inspect.isabstract(cls):
            missing = ", ".join(sorted(cls.__abstractmethods__))
            raise PluginError(f"{cls.kind} class {cls.__qualname__} does not implement {missing}")
        if not cls.name:
            raise PluginError(f"{cls.kind} class {cls.__qualname__} has no name")
        params = inspect.signature(cls.__init__).parameters
        undefaulted = [n for n, p in params.items() if n != "self" and p.default is p.empty
                       and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        if undefaulted:
            raise PluginError(f"{cls.kind} {cls.name!r}: parameters without a default: {', '.join(undefaulted)}")

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={format_eps(v)}" if k in ("eps", "alpha") and isinstance(v, float) else f"{k}={v!r}"
                          for k, v in self.params.items() if not callable(v))
        return f"{type(self).__name__}({shown})"

    def config(self) -> dict:
        """A JSON-able description: name and parameters (callables by their name)."""
        return {"name": self.name, "params": {
            k: (getattr(v, "__name__", type(v).__name__) if callable(v) else v) for k, v in self.params.items()}}
