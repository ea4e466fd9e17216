"""A compiled matcher: many patterns, one index, cost per event far below one check per pattern.

Each pattern is expanded into its `$or`-free alternatives. Per alternative, one "anchor" condition
is chosen whose values can be looked up in a hash index (exact values, prefix, suffix,
equals-ignore-case, a wildcard's literal start or end, "a value is there"), preferring the values
fewest alternatives share. Any other operator (numeric, anything-but, cidr) anchors too: the
alternatives that use one same matcher on a path are proposed together when an event's value
there passes it, so a check costs one test per distinct matcher, not one per rule. Matching looks
up the event's values at the indexed paths to find candidate patterns, then checks only those with
the reference evaluator (patterns.py), so the answers are the reference's by construction. Only
alternatives made of `exists: false` (absence cannot be looked up) are always checked.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from postupload.core.patterns import (
    ABSENT,
    Pattern,
    flatten,
    is_number,
    leaves,
    matches,
    same_value,
    value_matches,
)

FEW_PATHS = 24  # up to this many indexed paths, walk each; past it, walk the event's paths once
MAX_ALTERNATIVES = 256  # a pattern whose $or expand past this is checked whole, unindexed
# (kind, value): kind is "=", "i", "p", "pi", "s", "si", "e" (any value) or "t" (a matcher to test,
# as canonical JSON)
Key = tuple[str, Any]


@dataclass
class PathIndex:
    exact: dict[Any, list[int]] = field(default_factory=lambda: defaultdict(list))
    folded: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    # by kind ("p", "pi", "s", "si"): the prefixes (or suffixes) and the lengths they come in
    affixes: dict[str, tuple[dict[str, list[int]], set[int]]] = field(default_factory=dict)
    folds: bool = False  # some key here ignores case
    present: list[int] = field(default_factory=list)  # alternatives that only need a value here
    tests: dict[str, tuple[Test, list[int]]] = field(default_factory=dict)  # matcher -> alternatives
    # anything-but a list of strings, the most common test, looked up backwards: every such
    # alternative is a candidate but those whose list holds the event's string
    but: set[int] = field(default_factory=set)
    but_not: dict[str, set[int]] = field(default_factory=dict)

    def add(self, key: Key, alternative: int) -> None:
        kind, value = key
        self.folds = self.folds or kind.endswith("i")
        excluded = _excluded_strings(json.loads(value)) if kind == "t" else None
        if kind == "e":
            self.present.append(alternative)
        elif excluded is not None:
            self.but.add(alternative)
            for text in excluded:
                self.but_not.setdefault(text, set()).add(alternative)
        elif kind == "t":
            self.tests.setdefault(value, (compile_test(json.loads(value)), []))[1].append(alternative)
        elif kind == "=":
            self.exact[value].append(alternative)
        elif kind == "i":
            self.folded[value].append(alternative)
        else:
            table, lengths = self.affixes.setdefault(kind, ({}, set()))
            table.setdefault(value, []).append(alternative)
            lengths.add(len(value))

    def candidates(self, value: Any, found: set[int]) -> None:
        # Each part is looked at only when some alternative uses it: a path has one or two kinds.
        if self.present:
            found.update(self.present)
        if self.but:
            found.update(self.but - self.but_not.get(value, NONE) if isinstance(value, str) else self.but)
        for test, alternatives in self.tests.values():
            if test(value):
                found.update(alternatives)
        if self.exact:
            found.update(self.exact.get(canonical(value), ()))
        if not isinstance(value, str):
            return
        folded = value.casefold() if self.folds else value
        if self.folded:
            found.update(self.folded.get(folded, ()))
        for kind, (table, lengths) in self.affixes.items():
            text = folded if kind.endswith("i") else value
            if kind[0] == "p":
                for length in lengths:
                    found.update(table.get(text[:length], ()))
            else:
                for length in lengths:
                    if length <= len(text):
                        found.update(table.get(text[len(text) - length :], ()))


Test = Callable[[Any], bool]
NONE: frozenset[int] = frozenset()


def compile_check(pattern: Pattern) -> Callable[[Any], bool]:
    """`matches(pattern, event)` as a function of the event. A pattern of top-level fields only (most
    rules) becomes one test per field, each made once here; any other is the reference's."""
    if any(key == "$or" or isinstance(expected, dict) for key, expected in pattern.items()):
        return lambda event: matches(pattern, event)
    fields = []
    for key, expected in pattern.items():
        matchers = expected if isinstance(expected, list) else [expected]
        exists = tuple(m["exists"] for m in matchers if isinstance(m, dict) and "exists" in m)
        others = [m for m in matchers if not (isinstance(m, dict) and "exists" in m)]
        fields.append((key, _any_of(others), exists))

    def check(event: Any) -> bool:
        if not isinstance(event, dict):
            return matches(pattern, event)
        for key, test, exists in fields:
            value = event.get(key, ABSENT)
            if isinstance(value, str | int | float):  # one value (most fields): no list to make
                if not (test(value) or True in exists):
                    return False
                continue
            values = tuple(leaves(value))
            if not ((exists and bool(values) in exists) or any(map(test, values))):
                return False
        return True

    return check


def _any_of(matchers: list[Any]) -> Test:
    """One test for a field's matchers (any may match): the strings it equals in one set lookup."""
    strings = frozenset(m for m in matchers if isinstance(m, str))
    tests = [compile_test(m) for m in matchers if not isinstance(m, str)]
    if not tests:
        return lambda value: isinstance(value, str) and value in strings
    if not strings and len(tests) == 1:
        return tests[0]
    return lambda value: (isinstance(value, str) and value in strings) or any(t(value) for t in tests)


def compile_test(matcher: Any) -> Test:
    """`value_matches(matcher, value)` as a function of the value, made fast for what rules use most
    (a value, a prefix or suffix, anything-but a few strings or numbers, one numeric range); any
    other matcher is the reference's."""
    if not isinstance(matcher, dict):
        if isinstance(matcher, str):
            return lambda value: isinstance(value, str) and value == matcher
        return lambda value: same_value(matcher, value)
    ((name, operand),) = matcher.items()
    if name == "prefix" and isinstance(operand, str):
        return lambda value: isinstance(value, str) and value.startswith(operand)
    if name == "suffix" and isinstance(operand, str):
        return lambda value: isinstance(value, str) and value.endswith(operand)
    if name == "anything-but" and not isinstance(operand, dict):
        excluded = operand if isinstance(operand, list) else [operand]
        if all(isinstance(item, str) for item in excluded):
            strings = frozenset(excluded)
            return lambda value: not (isinstance(value, str) and value in strings)
        if all(is_number(item) for item in excluded):
            numbers = frozenset(float(item) for item in excluded)
            return lambda value: not (is_number(value) and float(value) in numbers)
    if name == "numeric":
        low, high = _bounds(operand)
        if low is not None or high is not None:
            return lambda value: is_number(value) and _within(float(value), low, high)
    return lambda value: value_matches(matcher, value)


def _excluded_strings(matcher: Any) -> list[str] | None:
    """The strings of an anything-but that names only strings (one, or a list), else None."""
    operand = matcher.get("anything-but") if isinstance(matcher, dict) else None
    excluded = operand if isinstance(operand, list) else [operand]
    if operand is None or not all(isinstance(text, str) for text in excluded):
        return None
    return [str(text) for text in excluded]


Bound = tuple[float, bool] | None  # (limit, inclusive)


def _bounds(operand: list[Any]) -> tuple[Bound, Bound]:
    """A numeric operand as its lower and upper bounds; (None, None) when it is not only those
    (an "=" comparison, or two bounds on one side): the reference evaluates it then."""
    low: Bound = None
    high: Bound = None
    for op, limit in zip(operand[0::2], operand[1::2], strict=True):
        if op in (">", ">=") and low is None:
            low = (float(limit), op == ">=")
        elif op in ("<", "<=") and high is None:
            high = (float(limit), op == "<=")
        else:
            return None, None
    return low, high


def _within(value: float, low: Bound, high: Bound) -> bool:
    if low is not None and not (value > low[0] or (low[1] and value == low[0])):
        return False
    return high is None or value < high[0] or (high[1] and value == high[0])


def canonical(value: Any) -> Any:
    """A hash key with JSON equality: 1 and 1.0 are one key, true and 1 and "1" are three."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return float(value)
    return value


class Matcher:
    """Which of `patterns` match an event, as indices in the order given.

    Identical patterns (many rules may test the same thing, each with its own actions) are indexed
    and checked once, however many rules share them."""

    def __init__(self, patterns: list[Pattern]) -> None:
        distinct: dict[str, int] = {}
        self.positions: list[list[int]] = []  # distinct pattern -> the positions that have it
        self.patterns: list[Pattern] = []  # the distinct patterns
        for position, pattern in enumerate(patterns):
            number = distinct.setdefault(_canonical_json(pattern), len(distinct))
            if number == len(self.patterns):
                self.patterns.append(pattern)
                self.positions.append([])
            self.positions[number].append(position)
        # each pattern's check is made when it is first a candidate: off the rule set's load
        self.checks: list[Callable[[Any], bool] | None] = [None] * len(self.patterns)
        self.owner: list[int] = []  # alternative -> its distinct pattern
        self.unanchored: list[int] = []
        self.paths: dict[tuple[str, ...], PathIndex] = {}
        conditions: list[list[tuple[tuple[str, ...], list[Key]]]] = []
        for position, pattern in enumerate(self.patterns):
            expanded = expand_or(pattern)
            if len(expanded) > MAX_ALTERNATIVES:
                expanded = [pattern]
            for alternative in expanded:
                self.owner.append(position)
                conditions.append(list(_anchorable(alternative)))
        shared = Counter(key for options in conditions for _, keys in options for key in set(keys))
        for number, options in enumerate(conditions):
            if not options:
                self.unanchored.append(number)
                continue
            path, keys = min(options, key=lambda option: _cost(option[1], shared))
            index = self.paths.setdefault(path, PathIndex())
            for key in set(keys):
                index.add(key, number)
        # the indexed paths and every path leading to one: what a walk of an event goes into, as
        # the keys to look up under each path walked
        self.walked: dict[tuple[str, ...], set[str]] = {}
        for path in self.paths:
            for length in range(len(path)):
                self.walked.setdefault(path[:length], set()).add(path[length])

    def match(self, event: dict[str, Any]) -> list[int]:
        """Indices of the patterns that match, ascending."""
        candidates: set[int] = set(self.unanchored)
        if len(self.paths) <= FEW_PATHS:
            for path, index in self.paths.items():
                for value in _values_at(event, path):
                    index.candidates(value, candidates)
        else:  # many indexed paths (rules that test many fields): walk the event's own paths once
            for path, nodes in _nodes_by_path(event, self.walked).items():
                found = self.paths.get(path)
                if found is not None:
                    for node in nodes:
                        for value in leaves(node):
                            found.candidates(value, candidates)
        # Check whole patterns: an alternative only proposes its pattern (see expand_or).
        owners = {self.owner[n] for n in candidates}
        matched = [self.positions[n] for n in owners if self._check(n)(event)]
        return sorted(position for positions in matched for position in positions)

    def _check(self, number: int) -> Callable[[Any], bool]:
        check = self.checks[number]
        if check is None:
            check = self.checks[number] = compile_check(self.patterns[number])
        return check


def expand_or(pattern: Pattern) -> list[Pattern]:
    """`$or`-free alternatives, one of which an event matching the pattern always matches.

    Where an alternative names one field twice (a field both beside and inside a `$or`), the
    merge keeps one of the two conditions: each is necessary, so it is still a sound anchor, and
    candidates are checked against the whole pattern.
    """
    choices: list[list[Pattern]] = []
    for key, value in pattern.items():
        if key == "$or":
            choices.append([alt for alternative in value for alt in expand_or(alternative)])
        elif isinstance(value, dict):
            choices.append([{key: alt} for alt in expand_or(value)])
        else:
            choices.append([{key: value}])
    expanded = []
    for combination in itertools.islice(itertools.product(*choices), MAX_ALTERNATIVES + 1):
        merged: Pattern = {}
        for part in combination:
            _merge(merged, part)
        expanded.append(merged)
    return expanded


def _merge(into: Pattern, part: Pattern) -> None:
    for key, value in part.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif isinstance(value, dict):
            into[key] = dict(value)
        else:
            into[key] = value


def _anchorable(pattern: Pattern, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[Key]]]:
    """The conditions of an $or-free pattern whose every matcher can be looked up by value."""
    for key, value in pattern.items():
        here = (*path, key)
        if isinstance(value, dict):
            yield from _anchorable(value, here)
            continue
        keys = [_key(matcher) for matcher in (value if isinstance(value, list) else [value])]
        if all(key is not None for key in keys):
            # "A value is there" is as selective as the path is rare: count it per path.
            yield here, [("e", here) if key[0] == "e" else key for key in keys if key is not None]


def _key(matcher: Any) -> Key | None:
    if not isinstance(matcher, dict):
        return ("=", canonical(matcher))
    ((name, operand),) = matcher.items()
    if name == "equals-ignore-case":
        return ("i", operand.casefold())
    if name in ("prefix", "suffix"):
        if isinstance(operand, dict):
            return (name[0] + "i", operand["equals-ignore-case"].casefold())
        return (name[0], operand)
    if name == "wildcard" and isinstance(operand, str) and wildcard_key(operand):
        return wildcard_key(operand)
    if name == "exists":
        # a value must be there: events without one are no candidates; absence cannot be looked up
        return ("e", None) if operand is True else None
    return ("t", _canonical_json(matcher))  # numeric, anything-but, cidr, escaped wildcards


def _canonical_json(value: Any) -> str:
    """One text for equal patterns or matchers: keys sorted, and lists (alternatives, or the
    values anything-but excludes: sets both) in one order. The numeric operator's list is a
    sequence, kept as given."""
    return json.dumps(_canonical(value), sort_keys=True)


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: item if key == "numeric" else _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_canonical(item) for item in value]
        if len(items) < 2:
            return items
        if all(item is None or isinstance(item, str | int | float) for item in items):
            return sorted(items, key=lambda item: (type(item).__name__, repr(item)))
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return value


def wildcard_key(operand: str) -> Key | None:
    """A wildcard's literal start (or, failing that, its literal end) as a prefix (or suffix) key:
    every string the wildcard matches has it. Escapes are left unindexed, to stay exact."""
    if "\\" in operand:
        return None
    start, _, rest = operand.partition("*")
    if not rest and not operand.endswith("*"):
        return ("=", operand)  # no star: the wildcard is this very string
    if start:
        return ("p", start)
    end = operand.rsplit("*", 1)[1]
    return ("s", end) if end else None


def _cost(keys: list[Key], shared: Counter[Key]) -> float:
    # Exact values are the surest filter; a short prefix may let many events through; a matcher to
    # test costs a call per event; "a value is there" lets through every event that has one.
    weight = {"=": 1, "i": 1, "t": 3, "e": 50}
    return sum(shared[key] * weight.get(key[0], 2) for key in keys)


def _nodes_by_path(
    event: Any, walk: Mapping[tuple[str, ...], Collection[str]]
) -> dict[tuple[str, ...], list[Any]]:
    """The values found at each path that `walk` goes into (path -> the keys to look up there; a
    path it does not hold is a leaf), arrays crushed out at every level, as _values_at walks one
    path: {("context", "custom", "sku"): ["SKU-1"], ...}. An event's other keys are not looked at."""
    found: dict[tuple[str, ...], list[Any]] = {}
    frontier: list[tuple[tuple[str, ...], list[Any]]] = [((), [event])]
    while frontier:
        path, nodes = frontier.pop()
        wanted = walk.get(path)
        if not wanted:
            continue
        children: dict[str, list[Any]] = {}
        for node in nodes:
            for item in flatten(node) if isinstance(node, list) else (node,):
                if not isinstance(item, dict):
                    continue
                # look up the fewer: the keys wanted here, or the keys the event has here
                if len(wanted) < len(item):
                    keys = [key for key in wanted if key in item]
                else:
                    keys = [key for key in item if key in wanted]
                for key in keys:
                    children.setdefault(key, []).append(item[key])
        for key, values in children.items():
            child = (*path, key)
            found[child] = values
            frontier.append((child, values))
    return found


def _values_at(event: Any, path: tuple[str, ...]) -> Iterator[Any]:
    """The leaf values at a path, arrays crushed out at every level (as event-ruler does)."""
    nodes = [event]
    for key in path:
        following = []
        for node in nodes:
            for item in flatten(node) if isinstance(node, list) else [node]:
                if isinstance(item, dict) and key in item:
                    following.append(item[key])
        if not following:
            return
        nodes = following
    for node in nodes:
        yield from leaves(node)
