"""A compiled matcher: many patterns, one index, cost per event far below one check per pattern.

Each pattern is expanded into its `$or`-free alternatives. Per alternative, one "anchor" condition
is chosen whose values can be looked up in a hash index (exact values, prefix, suffix,
equals-ignore-case), preferring the values fewest alternatives share. Matching looks up the
event's values at the indexed paths to find candidate patterns, then checks only those with
the reference evaluator (patterns.py), so the answers are the reference's by construction.
Alternatives with no indexable condition (only numeric, anything-but, exists, ...) are always checked.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from postupload.patterns import Pattern, flatten, leaves, matches

FEW_PATHS = 24  # up to this many indexed paths, walk each; past it, walk the event's paths once
MAX_ALTERNATIVES = 256  # a pattern whose $or expand past this is checked whole, unindexed
Key = tuple[str, Any]  # (kind, value): kind is "=", "i", "p", "pi", "s", "si", "e" (any value)


@dataclass
class PathIndex:
    exact: dict[Any, list[int]] = field(default_factory=lambda: defaultdict(list))
    folded: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    prefix: dict[tuple[bool, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    suffix: dict[tuple[bool, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    prefix_lengths: set[tuple[bool, int]] = field(default_factory=set)
    suffix_lengths: set[tuple[bool, int]] = field(default_factory=set)
    folds: bool = False  # some key here ignores case
    present: list[int] = field(default_factory=list)  # alternatives that only need a value here

    def add(self, key: Key, alternative: int) -> None:
        kind, value = key
        self.folds = self.folds or kind.endswith("i")
        if kind == "e":
            self.present.append(alternative)
        elif kind == "=":
            self.exact[value].append(alternative)
        elif kind == "i":
            self.folded[value].append(alternative)
        else:
            folded = kind.endswith("i")
            table, lengths = (
                (self.prefix, self.prefix_lengths) if kind[0] == "p" else (self.suffix, self.suffix_lengths)
            )
            table[(folded, value)].append(alternative)
            lengths.add((folded, len(value)))

    def candidates(self, value: Any, found: set[int]) -> None:
        found.update(self.present)
        found.update(self.exact.get(canonical(value), ()))
        if not isinstance(value, str):
            return
        folded = value.casefold() if self.folds else value
        found.update(self.folded.get(folded, ()))
        for ignore_case, length in self.prefix_lengths:
            text = folded if ignore_case else value
            found.update(self.prefix.get((ignore_case, text[:length]), ()))
        for ignore_case, length in self.suffix_lengths:
            text = folded if ignore_case else value
            if length <= len(text):
                found.update(self.suffix.get((ignore_case, text[len(text) - length :]), ()))


def canonical(value: Any) -> Any:
    """A hash key with JSON equality: 1 and 1.0 are one key, true and 1 and "1" are three."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, int | float):
        return float(value)
    return value


class Matcher:
    """Which of `patterns` match an event, as indices in the order given."""

    def __init__(self, patterns: list[Pattern]) -> None:
        self.patterns = patterns
        self.owner: list[int] = []  # alternative -> its pattern's position
        self.unanchored: list[int] = []
        self.paths: dict[tuple[str, ...], PathIndex] = {}
        conditions: list[list[tuple[tuple[str, ...], list[Key]]]] = []
        for position, pattern in enumerate(patterns):
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

    def match(self, event: dict[str, Any]) -> list[int]:
        """Indices of the patterns that match, ascending."""
        candidates: set[int] = set(self.unanchored)
        if len(self.paths) <= FEW_PATHS:
            for path, index in self.paths.items():
                for value in _values_at(event, path):
                    index.candidates(value, candidates)
        else:  # many indexed paths (rules that test many fields): walk the event's own paths once
            for path, nodes in _nodes_by_path(event).items():
                found = self.paths.get(path)
                if found is not None:
                    for node in nodes:
                        for value in leaves(node):
                            found.candidates(value, candidates)
        # Check whole patterns: an alternative only proposes its pattern (see expand_or).
        owners = sorted({self.owner[n] for n in candidates})
        return [position for position in owners if matches(self.patterns[position], event)]


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
    if name == "wildcard" and isinstance(operand, str):
        return _wildcard_key(operand)
    if name == "exists" and operand is True:
        return ("e", None)  # a value must be there: events without one are no candidates
    return None


def _wildcard_key(operand: str) -> Key | None:
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
    # Exact values are the surest filter; a short prefix may let many events through; "a value is
    # there" lets through every event that has one.
    weight = {"=": 1, "i": 1, "e": 50}
    return sum(shared[key] * weight.get(key[0], 2) for key in keys)


def _nodes_by_path(event: Any) -> dict[tuple[str, ...], list[Any]]:
    """Every path of the event with the values found there, arrays crushed out at every level, as
    _values_at walks one path: {("context", "custom", "sku"): ["SKU-1"], ...}."""
    found: dict[tuple[str, ...], list[Any]] = {}
    frontier: list[tuple[tuple[str, ...], list[Any]]] = [((), [event])]
    while frontier:
        path, nodes = frontier.pop()
        children: dict[str, list[Any]] = {}
        for node in nodes:
            for item in flatten(node) if isinstance(node, list) else [node]:
                if isinstance(item, dict):
                    for key, value in item.items():
                        children.setdefault(key, []).append(value)
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
