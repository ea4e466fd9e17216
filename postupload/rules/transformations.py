"""Eager transformations as the SDK puts them on the wire, made once when rules load, and checked
against the SDK's own parameter tables: a parameter it does not know, or a value no transformation
takes, is refused before it ships (Cloudinary answers such a transformation 400, and the SDK silently
drops a map key it does not know, so the crop would vanish from the call)."""

from __future__ import annotations

import difflib
import functools
import inspect
import re
from typing import Any

# Parameters whose value is a number, an expression (`iw_div_2`), a variable (`$w`) or one of these
# words: a value such as `w_abc` is not one.
NUMERIC = frozenset({"w", "h", "x", "y", "z", "o", "dpr"})
NUMERIC_WORDS = frozenset({"auto", "iw", "ih", "ow", "oh", "iar", "ar", "fw", "fh", "w", "h", "max", "min"})
PLACEHOLDER = re.compile(r"\$\{[^}]*\}")


def eager_text(value: Any) -> str:
    """`eager` (a string, a map, or a list of them) as the SDK sends it: `a,b|c_crop,w_200/webp`."""
    # Late import: importing the SDK parses CLOUDINARY_URL, which our config must check first.
    from cloudinary.utils import build_eager

    text: str = build_eager(value)
    return text


@functools.cache
def sdk_tables() -> tuple[frozenset[str], frozenset[str]]:
    """(the option names a transformation map may use, the short parameter names a transformation
    string may use), read from the SDK's `generate_transformation_string` and its table of simple
    parameters: what the SDK serialises is what Cloudinary's URL grammar has."""
    from cloudinary import utils

    source = inspect.getsource(utils.generate_transformation_string)
    simple: dict[str, str] = utils._SIMPLE_TRANSFORMATION_PARAMS
    names = set(re.findall(r"options\.(?:pop|get)\(\s*[\"'](\w+)[\"']", source)) | set(simple.values())
    names.add("format")  # build_eager's `/ext` suffix
    table = source[source.index("params = {") : source.index("}", source.index("params = {"))]
    short = set(re.findall(r"[\"'](\w+)[\"']\s*:", table)) | set(simple) | {"if"}
    return frozenset(names), frozenset(short)


def unknown_transformation_keys(item: dict[str, Any]) -> list[str]:
    """A transformation map's keys the SDK does not know (it would drop them), each with the nearest
    known one when there is one."""
    names, _ = sdk_tables()
    found = []
    for key in item:
        if key in names or str(key).startswith("$"):
            continue
        near = difflib.get_close_matches(str(key), sorted(names), n=1)
        found.append(f"{key!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
    return found


def text_problems(text: str) -> list[str]:
    """What in a transformation string (`c_scale,w_200|e_sepia/webp`) Cloudinary would refuse: a
    space, an empty component, a parameter it does not have, a number that is not one. A value that
    is a `${placeholder}` is checked when it is filled, not here."""
    _, short = sdk_tables()
    problems = []
    for transformation in text.split("|"):
        if not transformation or any(character.isspace() for character in transformation):
            problems.append(f"{transformation!r}: a transformation holds no spaces and is not empty")
            continue
        chain = transformation.split("/")
        for position, step in enumerate(chain):
            if position == len(chain) - 1 and position > 0 and re.fullmatch(r"[a-z0-9]+", step):
                continue  # a format suffix: `/webp`
            for component in step.split(","):
                problem = _component_problem(component, short)
                if problem:
                    problems.append(problem)
    return problems


def _component_problem(component: str, short: frozenset[str]) -> str | None:
    if component.startswith("${"):  # filled whole: checked as a value when filled
        return None
    name, _, value = component.partition("_")
    if component.startswith("$"):  # a variable: `$w_200`
        return None if value else f"{component!r}: a variable needs a value ($name_value)"
    if name not in short:
        near = difflib.get_close_matches(name, sorted(short), n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        return f"{component!r}: {name!r} is not a transformation parameter{hint}"
    if not value:
        return f"{component!r}: {name}_ needs a value"
    if name in NUMERIC and not PLACEHOLDER.search(value) and not _numeric(value):
        return f"{component!r}: {name} takes a number, an expression or a variable, not {value!r}"
    return None


def _numeric(value: str) -> bool:
    return (
        bool(re.fullmatch(r"-?\d*\.?\d+(:.*)?", value))
        or value.startswith("$")
        or value.split(":")[0] in NUMERIC_WORDS
        or "_" in value  # an expression: iw_div_2, ih_mul_0.5
    )
