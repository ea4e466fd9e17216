"""The EventBridge pattern language: every operator against documented examples and edge cases,
and the compiled matcher against the reference evaluator on random patterns and events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postupload.core.matcher import Matcher
from postupload.core.patterns import check_pattern, first_mismatch, matches

# The event of aws/event-ruler's README, "Ruler by Example", plus edge cases of our own.
EVENT: dict[str, Any] = {
    "version": "0",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "time": "2017-10-02T16:24:49Z",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-000000aaaaaa00000"],
    "detail": {
        "c-count": 5,
        "d-count": 3,
        "x-limit": 301.8,
        "source-ip": "10.0.0.33",
        "state": "running",
        "ipv6": "2001:db8::1",
        "empty": "",
        "nothing": None,
        "flag": True,
        "big": 3.0e2,
        "neg": -12.5,
        "unicode": "Ünïcödé/文件.png",
        "star": "a*b",
        "list": [],
        "obj": {"c1": 100},
    },
    "employees": [
        {"firstName": "John", "lastName": "Doe"},
        {"firstName": "Anna", "lastName": "Smith"},
        {"firstName": "Peter", "lastName": "Jones"},
    ],
    "nested": [[{"k": 1}], [{"k": 2}]],
    "tags": ["product", "summer"],
}

CASES: list[tuple[str, dict[str, Any], bool]] = [
    # exact values, lists as OR, AND across fields, presence
    ("exact", {"source": ["aws.ec2"]}, True),
    ("exact-or", {"detail": {"state": ["initializing", "running"]}}, True),
    ("exact-and", {"source": ["aws.ec2"], "detail": {"state": ["stopped"]}}, False),
    ("bare-scalar", {"source": "aws.ec2"}, True),
    ("absent-field", {"region": ["us-east-1"]}, False),
    ("array-any", {"tags": ["summer"]}, True),
    ("array-none", {"tags": ["winter"]}, False),
    ("number-exact", {"detail": {"c-count": [5]}}, True),
    ("number-float-equal", {"detail": {"c-count": [5.0]}}, True),
    ("scientific", {"detail": {"big": [300]}}, True),
    ("negative", {"detail": {"neg": [-12.5]}}, True),
    ("string-is-not-number", {"detail": {"c-count": ["5"]}}, False),
    ("number-is-not-string", {"version": [0]}, False),
    ("true-is-not-1", {"detail": {"flag": [1]}}, False),
    ("true", {"detail": {"flag": [True]}}, True),
    ("null", {"detail": {"nothing": [None]}}, True),
    ("null-is-not-empty", {"detail": {"nothing": [""]}}, False),
    ("empty-is-not-null", {"detail": {"empty": [None]}}, False),
    ("empty", {"detail": {"empty": [""]}}, True),
    ("unicode", {"detail": {"unicode": ["Ünïcödé/文件.png"]}}, True),
    # prefix / suffix / equals-ignore-case
    ("prefix", {"time": [{"prefix": "2017-10-02"}]}, True),
    ("prefix-no", {"time": [{"prefix": "2018"}]}, False),
    ("prefix-on-number", {"detail": {"c-count": [{"prefix": "5"}]}}, False),
    ("prefix-ignore-case", {"detail-type": [{"prefix": {"equals-ignore-case": "ec2 INSTANCE"}}]}, True),
    ("suffix", {"source": [{"suffix": "ec2"}]}, True),
    ("suffix-unicode", {"detail": {"unicode": [{"suffix": "件.png"}]}}, True),
    ("suffix-ignore-case", {"source": [{"suffix": {"equals-ignore-case": "EC2"}}]}, True),
    ("equals-ignore-case", {"source": [{"equals-ignore-case": "AWS.EC2"}]}, True),
    ("equals-ignore-case-no", {"source": [{"equals-ignore-case": "aws.ec"}]}, False),
    # anything-but
    ("anything-but", {"detail": {"state": [{"anything-but": "initializing"}]}}, True),
    ("anything-but-same", {"detail": {"state": [{"anything-but": "running"}]}}, False),
    ("anything-but-number", {"detail": {"x-limit": [{"anything-but": 123}]}}, True),
    ("anything-but-list", {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}, True),
    ("anything-but-list-hit", {"detail": {"state": [{"anything-but": ["stopped", "running"]}]}}, False),
    ("anything-but-numbers", {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}, True),
    ("anything-but-numbers-hit", {"detail": {"big": [{"anything-but": [100, 200, 300]}]}}, False),
    ("anything-but-prefix", {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}, True),
    ("anything-but-prefix-hit", {"detail": {"state": [{"anything-but": {"prefix": "run"}}]}}, False),
    ("anything-but-suffix", {"detail": {"unicode": [{"anything-but": {"suffix": ".jpg"}}]}}, True),
    (
        "anything-but-ignore-case",
        {"detail": {"state": [{"anything-but": {"equals-ignore-case": "RUNNING"}}]}},
        False,
    ),
    (
        "anything-but-ignore-case-list",
        {"detail": {"state": [{"anything-but": {"equals-ignore-case": ["A", "B"]}}]}},
        True,
    ),
    ("anything-but-wildcard", {"detail": {"unicode": [{"anything-but": {"wildcard": "*/lib/*"}}]}}, True),
    ("anything-but-wildcard-hit", {"detail": {"unicode": [{"anything-but": {"wildcard": "*.png"}}]}}, False),
    ("anything-but-absent", {"region": [{"anything-but": "x"}]}, False),
    ("anything-but-array-one-left", {"tags": [{"anything-but": ["product"]}]}, True),
    ("anything-but-array-all-out", {"tags": [{"anything-but": ["product", "summer"]}]}, False),
    # numeric
    ("numeric-range", {"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}, True),
    ("numeric-below", {"detail": {"d-count": [{"numeric": ["<", 10]}]}}, True),
    ("numeric-equal-sci", {"detail": {"x-limit": [{"numeric": ["=", 3.018e2]}]}}, True),
    ("numeric-open", {"detail": {"c-count": [{"numeric": [">", 5]}]}}, False),
    ("numeric-negative", {"detail": {"neg": [{"numeric": [">=", -13, "<", -12]}]}}, True),
    ("numeric-on-string", {"version": [{"numeric": [">=", 0]}]}, False),
    ("numeric-on-bool", {"detail": {"flag": [{"numeric": [">=", 0]}]}}, False),
    # exists
    ("exists", {"detail": {"c-count": [{"exists": True}]}}, True),
    ("exists-absent", {"detail": {"c-count": [{"exists": False}]}}, False),
    ("exists-false", {"detail": {"missing": [{"exists": False}]}}, True),
    ("exists-false-whole-branch", {"nowhere": {"deep": [{"exists": False}]}}, True),
    ("exists-null-is-present", {"detail": {"nothing": [{"exists": True}]}}, True),
    ("exists-not-on-objects", {"detail": {"obj": [{"exists": True}]}}, False),
    ("exists-false-on-objects", {"detail": {"obj": [{"exists": False}]}}, True),
    ("exists-empty-array", {"detail": {"list": [{"exists": True}]}}, False),
    # cidr
    ("cidr", {"detail": {"source-ip": [{"cidr": "10.0.0.0/24"}]}}, True),
    ("cidr-out", {"detail": {"source-ip": [{"cidr": "10.0.1.0/24"}]}}, False),
    ("cidr-ipv6", {"detail": {"ipv6": [{"cidr": "2001:db8::/32"}]}}, True),
    ("cidr-not-an-ip", {"source": [{"cidr": "10.0.0.0/8"}]}, False),
    # wildcard
    ("wildcard", {"detail-type": [{"wildcard": "EC2*Notification"}]}, True),
    ("wildcard-whole-string", {"detail-type": [{"wildcard": "EC2*State"}]}, False),
    ("wildcard-escaped-star", {"detail": {"star": [{"wildcard": "a\\*b"}]}}, True),
    ("wildcard-escaped-star-literal", {"detail": {"state": [{"wildcard": "r\\*"}]}}, False),
    ("wildcard-unicode", {"detail": {"unicode": [{"wildcard": "Ü*/*.png"}]}}, True),
    # arrays of objects: one element must satisfy the object
    ("array-objects", {"employees": {"firstName": ["Anna"]}}, True),
    ("array-objects-same-element", {"employees": {"firstName": ["Anna"], "lastName": ["Smith"]}}, True),
    ("array-objects-across-elements", {"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}}, False),
    ("nested-arrays", {"nested": {"k": [2]}}, True),
    # $or, also nested
    ("or", {"$or": [{"source": ["x"]}, {"detail": {"state": ["running"]}}]}, True),
    ("or-none", {"$or": [{"source": ["x"]}, {"detail": {"state": ["y"]}}]}, False),
    (
        "or-nested",
        {
            "source": ["aws.ec2"],
            "detail": {"$or": [{"c-count": [1]}, {"$or": [{"d-count": [9]}, {"state": ["running"]}]}]},
        },
        True,
    ),
    ("multiple-matchers", {"detail": {"state": [{"prefix": "x"}, "running"]}}, True),
]


@pytest.mark.parametrize(("name", "pattern", "expected"), CASES, ids=[case[0] for case in CASES])
def test_operator(name: str, pattern: dict[str, Any], expected: bool) -> None:
    assert check_pattern(pattern) == [], name
    assert matches(pattern, EVENT) is expected
    assert (Matcher([pattern]).match(EVENT) == [0]) is expected  # the compiled matcher agrees
    if not expected:
        assert first_mismatch(pattern, EVENT)  # and explain has a reason


def test_all_cases_in_one_matcher_give_each_answer() -> None:
    matcher = Matcher([pattern for _, pattern, _ in CASES])
    assert matcher.match(EVENT) == [index for index, (_, _, expected) in enumerate(CASES) if expected]


INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({"a": [{"prefixx": "x"}]}, "E301", "unknown operator 'prefixx'"),
    ({"a": [{"prefix": 1}]}, "E302", "prefix takes a string"),
    ({"a": [{"numeric": [">", "1"]}]}, "E304", "numbers only"),
    ({"a": [{"numeric": ["~", 1]}]}, "E304", "one or two comparisons"),
    ({"a": [{"numeric": ["<", 5, ">", 1]}]}, "E304", "lower bound"),
    ({"a": [{"numeric": [">", 5, "<", 1]}]}, "E304", "is empty"),
    ({"a": [{"numeric": [">", 6e9]}]}, "E304", "-5e9 and 5e9"),
    ({"a": [{"cidr": "10.0.0.0/33"}]}, "E305", "cidr"),
    ({"a": [{"cidr": "banana"}]}, "E305", "IPv4 or IPv6"),
    ({"a": [{"wildcard": "a**b"}]}, "E306", "consecutive"),
    ({"a": [{"wildcard": "a\\b"}]}, "E306", "backslash"),
    ({"a": [{"exists": "yes"}]}, "E302", "true or false"),
    ({"a": [{"anything-but": ["a", 1]}]}, "E302", "list of strings or of numbers"),
    ({"a": [{"anything-but": {"numeric": [">", 1]}}]}, "E302", "anything-but takes"),
    ({"a": [{"equals-ignore-case": ["a"]}]}, "E302", "takes a string"),
    ({"a": []}, "E303", "empty list"),
    ({"$or": []}, "E307", "at least two"),
    ({"$or": [{"a": [1]}]}, "E307", "at least two"),
    ({"$or": [{"a": [1]}, {}]}, "E307", "non-empty object"),
    ({"a": {"prefix": "x"}}, "E308", "put it in a list"),
    ({"a": [[1]]}, "E302", "do not nest"),
    ({"a": [{"prefix": "x", "suffix": "y"}]}, "E301", "exactly one key"),
]


@pytest.mark.parametrize(("pattern", "code", "says"), INVALID, ids=[case[2] + case[1] for case in INVALID])
def test_invalid_patterns_say_what_is_allowed(pattern: dict[str, Any], code: str, says: str) -> None:
    problems = check_pattern(pattern)
    assert [problem.code for problem in problems] == [code]
    assert says in problems[0].message


# --- property: the compiled matcher agrees with the reference evaluator ---------------------------

FIELDS = ["a", "b", "c"]
STRINGS = st.sampled_from(["", "x", "xy", "Xy", "yx", "10.0.0.1", "a*b", "ü", "5"])
LEAVES = st.one_of(STRINGS, st.integers(-3, 3), st.sampled_from([0.5, -1.5, 1e3]), st.booleans(), st.none())
MATCHERS = st.one_of(
    LEAVES,
    st.builds(lambda s: {"prefix": s}, STRINGS),
    st.builds(lambda s: {"suffix": s}, STRINGS),
    st.builds(lambda s: {"prefix": {"equals-ignore-case": s}}, STRINGS),
    st.builds(lambda s: {"equals-ignore-case": s}, STRINGS),
    st.builds(lambda s: {"anything-but": s}, STRINGS),
    st.builds(lambda v: {"anything-but": v}, st.lists(st.integers(-3, 3), min_size=1, max_size=3)),
    st.builds(lambda s: {"anything-but": {"prefix": s}}, STRINGS),
    st.builds(lambda n: {"numeric": [">=", n]}, st.integers(-3, 3)),
    st.builds(lambda n: {"numeric": [">", n, "<=", n + 2]}, st.integers(-3, 3)),
    # every bound the range index sorts: each side, inclusive or not, alone or with the other
    st.builds(
        lambda low, high, n, width: _numeric(low, high, n, width),
        st.sampled_from([None, ">", ">="]),
        st.sampled_from([None, "<", "<="]),
        st.sampled_from([-1, 0, 0.5, 1, 2]),
        st.sampled_from([0, 1, 2.5]),
    ),
    st.builds(lambda b: {"exists": b}, st.booleans()),
    st.just({"cidr": "10.0.0.0/24"}),
    st.builds(lambda s: {"wildcard": s}, st.sampled_from(["*", "x*", "*y", "x*y", "a\\*b", "xy", "x*y*"])),
    # literal parts anywhere, escapes included: indexed by their start, end or longest part
    st.builds(lambda s: {"wildcard": s}, st.text(st.sampled_from("xy*\\"), min_size=1, max_size=6)),
)


def _numeric(low: str | None, high: str | None, limit: float, width: float) -> dict[str, Any]:
    operand: list[Any] = []
    if low:
        operand += [low, limit]
    if high:
        operand += [high, limit + width]
    return {"numeric": operand or ["=", limit]}


def patterns(depth: int = 2) -> st.SearchStrategy[dict[str, Any]]:
    leaf_condition = st.lists(MATCHERS, min_size=1, max_size=3)
    if depth == 0:
        return st.dictionaries(st.sampled_from(FIELDS), leaf_condition, min_size=1, max_size=2)
    inner = patterns(depth - 1)
    value = st.one_of(leaf_condition, inner)
    plain = st.dictionaries(st.sampled_from(FIELDS), value, min_size=1, max_size=3)
    with_or = st.builds(
        lambda p, alternatives: {**p, "$or": alternatives}, plain, st.lists(inner, min_size=2, max_size=3)
    )
    return st.one_of(plain, with_or)


VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), inner, max_size=3),
    max_leaves=8,
)
# An event is an object; drawn as one (not filtered out of any JSON value, which rejects most draws).
EVENTS = st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3)


@settings(max_examples=100, deadline=None)
@given(st.lists(patterns(), min_size=1, max_size=8), st.lists(EVENTS, min_size=1, max_size=5))
def test_compiled_matcher_agrees_with_reference(
    pattern_list: list[dict[str, Any]], events: list[Any]
) -> None:
    valid = [pattern for pattern in pattern_list if not check_pattern(pattern)]
    matcher = Matcher(valid)
    for event in events:
        expected = [index for index, pattern in enumerate(valid) if matches(pattern, event)]
        assert matcher.match(event) == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(patterns(), min_size=1, max_size=8), st.lists(EVENTS, min_size=1, max_size=5))
def test_compiled_matcher_agrees_with_reference_looking_up_value_pairs(
    pattern_list: list[dict[str, Any]], events: list[Any]
) -> None:
    """The same, with every pattern that has two fields of plain values looked up by both at once
    (what a rule set does for values many rules share: PAIR_FROM)."""
    from unittest import mock

    import postupload.core.matcher

    with mock.patch.object(postupload.core.matcher, "PAIR_FROM", 0):
        test_compiled_matcher_agrees_with_reference.hypothesis.inner_test(pattern_list, events)  # type: ignore[attr-defined]


def _wildcard_by_regex(pattern: str, value: str) -> bool:
    """What a wildcard means, said as a regular expression (fine for short values)."""
    import re

    from postupload.core.patterns import wildcard_parts

    return (
        re.fullmatch(".*".join(re.escape(part) for part in wildcard_parts(pattern)), value, re.DOTALL)
        is not None
    )


@settings(max_examples=500, deadline=None)
@given(
    pattern=st.text(st.sampled_from("ab-*\\"), max_size=8).filter(lambda p: "**" not in p),
    value=st.text(st.sampled_from("ab-*\\"), max_size=10),
)
def test_wildcards_match_as_their_regular_expression_would(pattern: str, value: str) -> None:
    assert matches({"f": [{"wildcard": pattern}]}, {"f": value}) == _wildcard_by_regex(pattern, value)


def test_a_wildcard_cannot_stall_matching_whatever_the_value() -> None:
    """The probe: `*-*-*-*-*z*x` against a public id of 280 dashes and `x` took 10.3 s in a worker
    (a backtracking regular expression: 6 stars x 130 characters 6.0 s). Matched left to right,
    it is linear in the value: measured 0.003 ms for 6 stars on 10,000 characters; the bound here
    is loose (50 ms) and a backtracking matcher would take hours."""
    import time

    from postupload.core.ruleset import Rule, RuleSet

    patterns = ["*-*-*-*-*z*x", "*-*-*-*-*-*z", "*a*a*a*a*a*a*b"]
    rules = [Rule(f"r{n}", {"public_id": [{"wildcard": p}]}, [], "a.yaml") for n, p in enumerate(patterns)]
    ruleset = RuleSet(rules)
    for value in ("-" * 10_000 + "x", "a" * 10_000, "-" * 280 + "x"):
        started = time.perf_counter()
        assert ruleset.match({"notification_type": "upload", "public_id": value}) == []
        assert time.perf_counter() - started < 0.05


# --- the index: what a notification makes a candidate, at 1,000 rules ----------------------------

Shape = tuple[Callable[[int], dict[str, Any]], dict[str, Any], int]
SHAPES: dict[str, Shape] = {
    # name: (the rule numbered i, a notification aimed at rule 7, how many patterns it may check)
    "wildcard, literal in the middle": (
        lambda i: {"public_id": [{"wildcard": f"*/hero-{i}/*"}]},
        {"public_id": "shop/hero-7/front"},
        1,
    ),
    "numeric threshold of its own": (
        lambda i: {"width": [{"numeric": [">=", 4000 + i]}]},
        {"width": 4007},
        8,
    ),
    "numeric upper bound of its own": (lambda i: {"height": [{"numeric": ["<", i]}]}, {"height": 993}, 6),
    "numeric range of its own": (
        lambda i: {"bytes": [{"numeric": [">", i * 10, "<=", i * 10 + 10]}]},
        {"bytes": 75},
        1,
    ),
    "anything-but on a key of its own": (
        lambda i: {"context": {"custom": {f"status{i}": [{"anything-but": ["draft"]}]}}},
        {"context": {"custom": {"status7": "live"}}},
        1,
    ),
    "exists on a key of its own": (
        lambda i: {"context": {"custom": {f"flag{i}": [{"exists": True}]}}},
        {"context": {"custom": {"flag7": "x"}}},
        1,
    ),
    "$or across fields": (
        lambda i: {"$or": [{"tags": [f"t{i}"]}, {"public_id": [{"prefix": f"p{i}/"}]}]},
        {"tags": ["t7", "summer"], "public_id": "misc/7"},
        1,
    ),
    "values many rules share": (
        lambda i: {
            "resource_type": [["image", "video"][i % 2]],
            "format": [["jpg", "png", "gif", "webp", "mp4", "pdf"][i // 2 % 6]],
            "tags": [["a", "b", "c", "d", "e"][i // 12 % 5]],
        },
        {"resource_type": "image", "format": "jpg", "tags": ["a"]},
        2,  # image and video: found by format and tags together, not by format alone (10)
    ),
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_notification_checks_only_the_rules_its_values_may_meet(shape: str) -> None:
    """Each shape the index files a rule under: among 1,000 such rules, a notification makes only
    the few its values may meet candidates, and tests no matcher per rule (what keeps matching flat
    as rules are added). Counted: the patterns checked in full (the matcher compiles a pattern's
    check when it is first a candidate) and the calls to every matcher test made."""
    from unittest import mock

    import postupload.core.matcher

    tested = 0
    compile_test = postupload.core.matcher.compile_test

    def counted(matcher: Any) -> Any:
        test = compile_test(matcher)

        def count(value: Any) -> bool:
            nonlocal tested
            tested += 1
            return test(value)

        return count

    rule, event, most = SHAPES[shape]
    patterns = [rule(i) for i in range(1000)]
    with mock.patch.object(postupload.core.matcher, "compile_test", counted):
        matcher = Matcher(patterns)
        found = matcher.match(event)
    assert found == [index for index, pattern in enumerate(patterns) if matches(pattern, event)] != []
    assert sum(check is not None for check in matcher.checks) <= most
    assert tested <= 4 * most  # a candidate's fields: not a test per rule (1,000)


def test_ranges_sharing_a_lower_bound_with_and_without_an_upper_one() -> None:
    """Found by the property test: sorting the bounds compared a range's missing upper bound."""
    patterns = [{"a": [{"numeric": [">", 1, "<=", 3]}]}, {"a": [{"numeric": [">", 1]}]}]
    matcher = Matcher(patterns)
    assert [matcher.match({"a": value}) for value in (1, 2, 5)] == [[], [0, 1], [1]]
