"""A compiled matcher: many patterns, one index, cost per event far below one check per pattern.

Each pattern is expanded into its `$or`-free alternatives. Per alternative, one "anchor" condition
is chosen whose values can be looked up in an index, preferring the values fewest alternatives
share:

- exact values, equals-ignore-case, prefixes and suffixes: hash tables (an affix per length used);
- a wildcard: its literal start or end as a prefix or suffix, else its longest literal part, found
  in the event's value by one multi-pattern search (Aho-Corasick, pyahocorasick) for all of them;
- numeric ranges: their bounds sorted per path, the ranges holding a value found by bisection;
- anything-but a list of strings: every such alternative but those the value names;
- "a value is there" (`exists: true`): the alternatives of each path an event has.

Any other operator (anything-but numbers or a prefix, numeric `=`, cidr) anchors too: the
alternatives that use one same matcher on a path are proposed together when an event's value there
passes it (one test per distinct matcher, not one per rule). Matching looks up the event's values
at the indexed paths to find candidate patterns, then checks only those with the reference
evaluator (patterns.py), so the answers are the reference's by construction. Only alternatives made
of `exists: false` (absence cannot be looked up) are always checked.
"""

from __future__ import annotations

import bisect
import itertools
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import ahocorasick

from postupload.core.patterns import (
    ABSENT,
    Pattern,
    flatten,
    is_number,
    leaves,
    same_value,
    value_matches,
    wildcard_parts,
)

MAX_ALTERNATIVES = 256  # a pattern whose $or expand past this is checked whole, unindexed
# An anchor this many alternatives share (a value many uploads have: `resource_type: image`) lets
# through events most of them do not match: such an alternative is looked up by two of its values
# at once when it has two top-level fields of plain values (at most PAIR_KEYS combinations).
PAIR_FROM = 3
PAIR_KEYS = 16
SCALAR = (str, int, float)  # a tuple: isinstance takes it faster than a union (most values are these)
# (kind, value): kind is "=", "i", "p", "pi", "s", "si", "c" (contains: a wildcard's literal part),
# "e" (any value) or "t" (a matcher to test, as canonical JSON)
Key = tuple[str, Any]


@dataclass
class PathIndex:
    """The alternatives filed under one path, by the kind of their condition there (Key); add()
    them all, then finish() makes `candidates`, the one lookup a value at this path goes through."""

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
    ranges: Ranges = field(default_factory=lambda: Ranges())
    # literal part -> alternatives; searched for all at once by an automaton made in finish()
    contained: dict[str, list[int]] = field(default_factory=dict)
    automaton: Any = None
    # candidates(value, found) adds the alternatives a value here may satisfy: made by finish()
    candidates: Callable[[Any, set[int]], None] = field(default=lambda value, found: None, repr=False)

    def add(self, key: Key, alternative: int) -> None:
        kind, value = key
        self.folds = self.folds or kind.endswith("i")
        matcher = json.loads(value) if kind == "t" else None
        excluded = _excluded_strings(matcher)
        bounds = _bounds(matcher["numeric"]) if isinstance(matcher, dict) and "numeric" in matcher else None
        if kind == "e":
            self.present.append(alternative)
        elif excluded is not None:
            self.but.add(alternative)
            for text in excluded:
                self.but_not.setdefault(text, set()).add(alternative)
        elif bounds is not None and bounds != (None, None):
            self.ranges.add(*bounds, alternative)
        elif kind == "t":
            self.tests.setdefault(value, (compile_test(matcher), []))[1].append(alternative)
        elif kind == "c":
            self.contained.setdefault(value, []).append(alternative)
        elif kind == "=":
            self.exact[value].append(alternative)
        elif kind == "i":
            self.folded[value].append(alternative)
        else:
            table, lengths = self.affixes.setdefault(kind, ({}, set()))
            table.setdefault(value, []).append(alternative)
            lengths.add(len(value))

    def finish(self) -> None:
        """Make the lookup of this path, once every key is added: `candidates(value, found)` runs
        only the lookups some alternative here needs (a path has one or two kinds)."""
        self.ranges.finish()
        lookups: list[Callable[[Any, set[int]], None]] = []
        if self.present:
            lookups.append(lambda value, found: found.update(self.present))
        if self.but:
            lookups.append(self._anything_but)
        if self.ranges.any:
            lookups.append(self._ranges)
        if self.tests:
            lookups.append(self._tests)
        if self.exact:
            exact = dict(self.exact)
            lookups.append(
                lambda value, found: found.update(
                    exact.get(value if type(value) is str else canonical(value), ())  # str: its own key
                )
            )
        if self.contained:
            self.automaton = ahocorasick.Automaton(ahocorasick.STORE_ANY, ahocorasick.KEY_STRING)
            for text, alternatives in self.contained.items():
                self.automaton.add_word(text, alternatives)
            self.automaton.make_automaton()
            lookups.append(self._contains)
        if self.folded or self.affixes:
            lookups.append(self._strings)

        def each(value: Any, found: set[int]) -> None:
            for lookup in lookups:
                lookup(value, found)

        self.candidates = lookups[0] if len(lookups) == 1 else each

    def _anything_but(self, value: Any, found: set[int]) -> None:
        found.update(self.but - self.but_not.get(value, NONE) if isinstance(value, str) else self.but)

    def _ranges(self, value: Any, found: set[int]) -> None:
        if is_number(value):
            self.ranges.holding(float(value), found)

    def _tests(self, value: Any, found: set[int]) -> None:
        for test, alternatives in self.tests.values():
            if test(value):
                found.update(alternatives)

    def _contains(self, value: Any, found: set[int]) -> None:
        if isinstance(value, str):
            for _, alternatives in self.automaton.iter(value):
                found.update(alternatives)

    def _strings(self, value: Any, found: set[int]) -> None:
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
Bound = tuple[float, bool] | None  # (limit, inclusive)


class Ranges:
    """Numeric ranges on one path, the ones holding a value found by bisection.

    Bounds are sorted as (limit, rank) pairs, the rank placing an inclusive and an exclusive bound
    of one limit so that the bounds a value passes are a prefix (lower bounds) or a suffix (upper
    bounds) of the order: the cost of a lookup is the ranges that hold the value, not all of them.
    A range with both bounds is found by its lower one and kept if its upper one holds too.
    """

    def __init__(self) -> None:
        self.any = False
        self.entries: list[tuple[Bound, Bound, int]] = []
        self.lower: tuple[list[tuple[float, int]], list[int]] = ([], [])  # lower bound only
        self.upper: tuple[list[tuple[float, int]], list[int]] = ([], [])  # upper bound only
        self.both: tuple[list[tuple[float, int]], list[tuple[Bound, int]]] = ([], [])

    def add(self, low: Bound, high: Bound, alternative: int) -> None:
        self.any = True
        self.entries.append((low, high, alternative))

    def finish(self) -> None:
        # A value v passes a lower bound (l, inclusive) when l < v, or l == v and inclusive: with
        # inclusive ranked 0 and exclusive 1, exactly the pairs up to (v, 0). An upper bound
        # (h, inclusive) passes when h > v, or h == v and inclusive: ranked 1 and 0, the pairs
        # from (v, 1) on.
        lower = sorted(  # by bound (and alternative): never by the upper bound, which may be None
            ((low[0], 0 if low[1] else 1, high, n) for low, high, n in self.entries if low),
            key=lambda entry: (entry[0], entry[1], entry[3]),
        )
        upper = sorted((high[0], 1 if high[1] else 0, n) for low, high, n in self.entries if high and not low)
        self.lower = ([(limit, rank) for limit, rank, high, _ in lower if not high], [])
        self.lower[1].extend(n for _, _, high, n in lower if not high)
        self.both = ([(limit, rank) for limit, rank, high, _ in lower if high], [])
        self.both[1].extend((high, n) for _, _, high, n in lower if high)
        self.upper = ([(limit, rank) for limit, rank, _ in upper], [n for _, _, n in upper])
        self.entries = []

    def holding(self, value: float, found: set[int]) -> None:
        keys, alternatives = self.lower
        if keys:
            found.update(alternatives[: bisect.bisect_right(keys, (value, 0))])
        keys, alternatives = self.upper
        if keys:
            found.update(alternatives[bisect.bisect_left(keys, (value, 1)) :])
        keys, bounded = self.both
        if keys:
            for high, alternative in bounded[: bisect.bisect_right(keys, (value, 0))]:
                if _within(value, None, high):
                    found.add(alternative)


def compile_check(pattern: Pattern) -> Callable[[Any], bool]:
    """`matches(pattern, event)` as a function of the event, each field's test made once here.

    As the reference does, an array where an object is expected matches when one of its objects
    matches the whole object pattern, and a leaf or absence there is an empty object."""
    fits = _object_test(pattern)

    def check(event: Any) -> bool:
        if isinstance(event, dict):
            return fits(event)
        if isinstance(event, list):
            objects = [item for item in flatten(event) if isinstance(item, dict)] or [{}]
            return any(map(fits, objects))
        return fits({})

    return check


def _object_test(pattern: Pattern) -> Callable[[dict[str, Any]], bool]:
    fields = []  # a field's matchers: any may match, or its exists
    parts: list[Callable[[dict[str, Any]], bool]] = []  # nested objects and $or, tested after
    for key, expected in pattern.items():
        if key == "$or":
            parts.append(_any_object([_object_test(alternative) for alternative in expected]))
        elif isinstance(expected, dict):
            parts.append(_field_object(key, compile_check(expected)))
        else:
            matchers = expected if isinstance(expected, list) else [expected]
            exists = tuple(m["exists"] for m in matchers if isinstance(m, dict) and "exists" in m)
            others = [m for m in matchers if not (isinstance(m, dict) and "exists" in m)]
            fields.append((key, _any_of(others), exists))

    def fits(event: dict[str, Any]) -> bool:
        for key, test, exists in fields:
            value = event.get(key, ABSENT)
            if isinstance(value, SCALAR):  # one value (most fields): no list to make
                if not (test(value) or True in exists):
                    return False
                continue
            values = tuple(leaves(value))
            if not ((exists and bool(values) in exists) or any(map(test, values))):
                return False
        return all(part(event) for part in parts)

    return fits


def _any_object(alternatives: list[Callable[[dict[str, Any]], bool]]) -> Callable[[dict[str, Any]], bool]:
    return lambda event: any(alternative(event) for alternative in alternatives)


def _field_object(key: str, inner: Callable[[Any], bool]) -> Callable[[dict[str, Any]], bool]:
    return lambda event: inner(event.get(key))  # absent or null: as an empty object


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
    if type(value) is str:  # the most common, first
        return value
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
        # (field, field) -> (value, value) -> alternatives: the two-value lookups (PAIR_FROM)
        self.pairs: dict[tuple[str, str], dict[tuple[Any, Any], list[int]]] = {}
        conditions: list[list[tuple[tuple[str, ...], list[Key]]]] = []
        for position, pattern in enumerate(self.patterns):
            expanded = expand_or(pattern)
            if len(expanded) > MAX_ALTERNATIVES:
                expanded = [pattern]
            for alternative in expanded:
                self.owner.append(position)
                conditions.append(list(_anchorable(alternative)))
        shared = Counter(key for options in conditions for _, keys in options for key in set(keys))
        # each alternative's two-value keys, and how many alternatives share each (PAIR_FROM): an
        # alternative is filed under them only if fewer alternatives share them than its anchor
        pairs = [_pair(options, shared) for options in conditions]
        pair_shared = Counter(key for pair in pairs if pair for key in pair)
        for number, options in enumerate(conditions):
            if not options:
                self.unanchored.append(number)
                continue
            path, keys = min(options, key=lambda option: _cost(option[1], shared))
            pair = pairs[number]
            if (
                pair is not None
                and _cost(keys, shared) >= PAIR_FROM
                and sum(pair_shared[key] for key in pair) < sum(shared[key] for key in set(keys))
            ):
                for first, second, one, other in pair:
                    self.pairs.setdefault((first, second), {}).setdefault((one, other), []).append(number)
                continue
            index = self.paths.setdefault(path, PathIndex())
            for key in set(keys):
                index.add(key, number)
        for index in self.paths.values():
            index.finish()
        # the indexed paths as a tree: what a walk of an event goes into
        self.tree: dict[str, Step] = {}
        for path, index in self.paths.items():
            steps = self.tree
            for name in path[:-1]:
                steps = steps.setdefault(name, Step()).children
            steps.setdefault(path[-1], Step()).lookup = index.candidates

    def match(self, event: dict[str, Any]) -> list[int]:
        """Indices of the patterns that match, ascending."""
        candidates: set[int] = set(self.unanchored)
        if isinstance(event, dict):
            _walk(self.tree, event, candidates)
            for (first, second), table in self.pairs.items():
                if first in event and second in event:
                    for one in _scalars(event[first]):
                        for other in _scalars(event[second]):
                            candidates.update(table.get((canonical(one), canonical(other)), ()))
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
    """What every string a wildcard matches has, as a key: the string itself when there is no star,
    else its literal start as a prefix, or its literal end as a suffix, or its longest literal part
    as a part it contains. None for a wildcard of stars only (it matches any string)."""
    parts = wildcard_parts(operand)
    if len(parts) == 1:
        return ("=", parts[0])
    if parts[0]:
        return ("p", parts[0])
    if parts[-1]:
        return ("s", parts[-1])
    longest = max(parts, key=len)
    return ("c", longest) if longest else None


PairKey = tuple[str, str, Any, Any]  # (field, field, value, value), the fields in order


def _pair(options: list[tuple[tuple[str, ...], list[Key]]], shared: Counter[Key]) -> list[PairKey] | None:
    """The two-value keys of the two top-level fields of plain values fewest alternatives share;
    None when there are not two, or their values make more than PAIR_KEYS combinations."""
    plain = [(path, keys) for path, keys in options if len(path) == 1 and all(key[0] == "=" for key in keys)]
    if len(plain) < 2:
        return None
    first, second = sorted(sorted(plain, key=lambda option: _cost(option[1], shared))[:2])
    combinations = list(itertools.product({key[1] for key in first[1]}, {key[1] for key in second[1]}))
    if len(combinations) > PAIR_KEYS:
        return None
    return [(first[0][0], second[0][0], one, other) for one, other in combinations]


def _scalars(value: Any) -> Iterator[Any]:
    if isinstance(value, SCALAR):
        yield value
    else:
        yield from leaves(value)


def _cost(keys: list[Key], shared: Counter[Key]) -> float:
    # Exact values are the surest filter; a short prefix may let many events through; a matcher to
    # test costs a call per event; "a value is there" lets through every event that has one.
    weight = {"=": 1, "i": 1, "c": 3, "t": 3, "e": 50}
    return sum(shared[key] * weight.get(key[0], 2) for key in keys)


@dataclass
class Step:
    """A key of the indexed paths: the lookup of the path ending here (None if none does), and the
    keys below (empty if none)."""

    lookup: Callable[[Any, set[int]], None] | None = None
    children: dict[str, Step] = field(default_factory=dict)


def _walk(steps: dict[str, Step], node: dict[str, Any], found: set[int]) -> None:
    """Look up the event's values at every indexed path under `node`, arrays crushed out at every
    level (as event-ruler does). Only the keys both the event and some path have are visited, found
    from the fewer of the two."""
    if len(steps) < len(node):
        pairs = [(step, node[key]) for key, step in steps.items() if key in node]
    else:
        pairs = [(steps[key], value) for key, value in node.items() if key in steps]
    for step, value in pairs:
        lookup = step.lookup
        if lookup is not None:
            if isinstance(value, SCALAR):  # one value (most fields): no generator
                lookup(value, found)
            elif isinstance(value, list):
                for item in value:
                    if isinstance(item, SCALAR):
                        lookup(item, found)
                    else:
                        for leaf in leaves(item):
                            lookup(leaf, found)
            else:
                for leaf in leaves(value):
                    lookup(leaf, found)
        if step.children:
            for item in flatten(value) if isinstance(value, list) else (value,):
                if isinstance(item, dict):
                    _walk(step.children, item, found)
