"""Matching speed: our compiled matcher against moto's EventBridge matcher, same rules, same events.

Run with `make bench` or `.venv/bin/python bench/match.py`. Figures are ratios measured in one
process (machines here are noisy): notifications/s for each rule-set size, our speed over moto's,
and our cost per notification at each size over our cost at 100 rules.
"""

from __future__ import annotations

import random
import time
from typing import Any

from moto.events.models import EventPattern

from postupload.core.matcher import Matcher
from postupload.core.patterns import matches

FORMATS = ["jpg", "png", "webp", "gif", "mp4", "pdf"]
SIZES = [10, 100, 1_000, 10_000]


def make_rules(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Realistic rules: folders, tags, formats, sizes, context; operators mixed as ops write them."""
    rules = []
    for index in range(count):
        pattern: dict[str, Any] = {"notification_type": ["upload"]}
        kind = index % 6
        if kind == 0:
            pattern["public_id"] = [{"prefix": f"folder{index}/"}]
            pattern["format"] = rng.sample(FORMATS, 2)
        elif kind == 1:
            pattern["tags"] = [f"tag{index}"]
            pattern["width"] = [{"numeric": [">=", rng.choice([400, 800, 1200])]}]
        elif kind == 2:
            pattern["resource_type"] = ["image"]
            pattern["context"] = {"custom": {"sku": [f"SKU-{index}"]}}
        elif kind == 3:
            pattern["original_filename"] = [{"suffix": f"-{index}"}]
            pattern["bytes"] = [{"numeric": [">", 0, "<=", 5_000_000]}]
        elif kind == 4:
            pattern["asset_folder"] = [{"equals-ignore-case": f"Campaign{index}"}]
            pattern["type"] = [{"anything-but": ["private", "authenticated"]}]
        else:
            pattern["public_id"] = [{"prefix": f"users/{index}/"}, {"prefix": f"team/{index}/"}]
            pattern["resource_type"] = ["video"]
        rules.append(pattern)
    return rules


def make_notifications(count: int, rules: int, rng: random.Random) -> list[dict[str, Any]]:
    """Upload notifications, a share of them aimed at some rule's folder, tag, sku or name."""
    notifications = []
    for number in range(count):
        target = rng.randrange(rules)
        notification = {
            "notification_type": rng.choice(["upload"] * 9 + ["eager"]),
            "public_id": rng.choice(
                [f"folder{target}/img{number}", f"users/{target}/clip{number}", f"misc/{number}"]
            ),
            "resource_type": rng.choice(["image", "image", "video", "raw"]),
            "type": rng.choice(["upload", "upload", "private"]),
            "format": rng.choice(FORMATS),
            "width": rng.choice([320, 640, 1024, 2048]),
            "height": 480,
            "bytes": rng.randrange(1, 8_000_000),
            "tags": rng.sample([f"tag{target}", "summer", "product", f"tag{rng.randrange(rules)}"], 2),
            "original_filename": f"IMG-{rng.choice([target, number])}",
            "asset_folder": f"campaign{rng.choice([target, number])}",
            "asset_id": f"{number:032x}",
            "version": 1_700_000_000 + number,
            "url": f"http://res.cloudinary.com/demo/image/upload/v1/{number}.jpg",
        }
        if rng.random() < 0.3:
            notification["context"] = {"custom": {"sku": f"SKU-{target}", "alt": "a shoe"}}
        notifications.append(notification)
    return notifications


def make_mixed_rules(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """make_rules with about 15% of the rules having no exact, prefix or suffix condition beside
    the notification_type every rule shares: only a wildcard, an exists, a numeric or an anything-but
    test (what the index used to leave to be checked on every notification)."""
    rules = make_rules(count, rng)
    for index in range(0, count, 7):
        upload: dict[str, Any] = {"notification_type": ["upload"]}
        kind = (index // 7) % 4
        if kind == 0:
            rules[index] = {**upload, "public_id": [{"wildcard": f"campaign{index}/*.jpg"}]}
        elif kind == 1:
            rules[index] = {**upload, "context": {"custom": {f"flag{index}": [{"exists": True}]}}}
        elif kind == 2:  # sizes ops care about: a few thresholds, shared by many rules
            low = rng.choice([1000, 2000, 4000, 8000])
            rules[index] = {
                **upload,
                "width": [{"numeric": [">=", low]}],
                "height": [{"numeric": [">=", 600]}],
            }
        else:
            rules[index] = {**upload, "format": [{"anything-but": rng.sample(FORMATS, 3)}]}
    return rules


def mixed(rng: random.Random) -> None:
    """Our speed on the mixed rules, checked against the reference evaluator on a sample."""
    print("\nmixed rules (15% wildcard-, exists-, numeric- or anything-but-only):")
    base = None
    for size in (100, 1_000, 10_000):
        rules = make_mixed_rules(size, rng)
        notifications = make_notifications(2_000, size, rng)
        for notification in notifications[::5]:
            notification["public_id"] = f"campaign{rng.randrange(size)}/x.jpg"
        matcher = Matcher(rules)
        ours, answers = rate(matcher.match, notifications)
        sample = notifications[:50]
        reference = [[i for i, rule in enumerate(rules) if matches(rule, event)] for event in sample]
        base = base or ours
        same = answers[: len(sample)] == reference
        cost = base / ours
        print(f"{size:>7} rules: {ours:>10,.0f} notifications/s, cost {cost:.1f}x that at 100, same: {same}")
        if not same:
            raise SystemExit("the matcher and the reference evaluator disagree")


# The realistic mix (issue #24): each shape at its share of the rule set, in percent.
REALISTIC_SHARES = {
    "tenant prefix": 14,
    "tag": 10,
    "sku prefix in context": 10,
    "folder equals-ignore-case": 10,
    "$or across three fields": 8,
    "metadata": 7,
    "filename suffix": 7,
    "eager": 8,
    "shared values": 10,  # anchored only on values many uploads share
    "wildcard, literal in the middle": 10,
    "numeric threshold of its own": 2,
    "anything-but of its own": 2,
    "exists on a key of its own": 2,
}


def realistic_rule(shape: str, index: int, rng: random.Random) -> dict[str, Any]:
    upload: dict[str, Any] = {"notification_type": ["upload"]}
    if shape == "tenant prefix":
        return {**upload, "public_id": [{"prefix": f"tenants/t{index}/"}], "resource_type": ["image"]}
    if shape == "tag":
        return {**upload, "tags": [f"tag{index}"]}
    if shape == "sku prefix in context":
        return {**upload, "context": {"custom": {"sku": [{"prefix": f"SKU-{index}-"}]}}}
    if shape == "folder equals-ignore-case":
        return {**upload, "asset_folder": [{"equals-ignore-case": f"Campaigns/Spring{index}"}]}
    if shape == "$or across three fields":
        return {
            **upload,
            "$or": [
                {"tags": [f"promo{index}"]},
                {"public_id": [{"prefix": f"promos/{index}/"}]},
                {"context": {"custom": {"campaign": [f"c{index}"]}}},
            ],
        }
    if shape == "metadata":
        return {**upload, "metadata": {"category": [f"cat-{index}"]}}
    if shape == "filename suffix":
        return {**upload, "original_filename": [{"suffix": f"_v{index}"}]}
    if shape == "eager":
        return {"notification_type": ["eager"], "public_id": [{"prefix": f"tenants/t{index}/"}]}
    if shape == "shared values":
        return {
            **upload,
            "resource_type": [rng.choice(["image", "video"])],
            "format": [rng.choice(FORMATS)],
            "tags": [rng.choice(["product", "summer", "banner"])],
        }
    if shape == "wildcard, literal in the middle":
        return {**upload, "public_id": [{"wildcard": f"*/hero-{index}/*"}]}
    if shape == "numeric threshold of its own":
        return {**upload, "width": [{"numeric": [">=", 4000 + index]}]}
    if shape == "anything-but of its own":
        return {**upload, "context": {"custom": {f"status{index}": [{"anything-but": ["draft", "hidden"]}]}}}
    return {**upload, "context": {"custom": {f"flag{index}": [{"exists": True}]}}}


def make_realistic_rules(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """`count` rules, each shape of REALISTIC_SHARES at its share, in a shuffled order."""
    shapes = [shape for shape, share in REALISTIC_SHARES.items() for _ in range(share)]
    rules = [realistic_rule(shapes[index % len(shapes)], index, rng) for index in range(count)]
    rng.shuffle(rules)
    return rules


def make_realistic_notifications(count: int, rules: int, rng: random.Random) -> list[dict[str, Any]]:
    """Uploads (one in ten an eager notification) with values aimed at some rule of each shape, and
    values no rule names."""

    def some() -> int:
        return rng.randrange(rules)

    notifications = []
    for number in range(count):
        context: dict[str, Any] = {"sku": f"SKU-{some()}-{number}"}
        if rng.random() < 0.3:
            context[rng.choice(["campaign", f"flag{some()}", f"status{some()}"])] = f"c{some()}"
        notification = {
            "notification_type": "eager" if rng.random() < 0.1 else "upload",
            "public_id": rng.choice(
                [
                    f"tenants/t{some()}/products/hero-{some()}/img{number}",
                    f"promos/{some()}/banner{number}",
                    f"uploads/{number}",
                ]
            ),
            "resource_type": rng.choice(["image", "image", "video", "raw"]),
            "type": "upload",
            "format": rng.choice(FORMATS),
            "width": rng.choice([640, 1024, 2048, 3000, 4000 + rng.randrange(rules // 20 + 1)]),
            "height": 480,
            "bytes": rng.randrange(1, 8_000_000),
            "tags": rng.sample([f"tag{some()}", f"promo{some()}", "product", "summer", "banner"], 2),
            "original_filename": f"IMG_{number}_v{rng.choice([some(), number])}",
            "asset_folder": rng.choice([f"campaigns/spring{some()}", f"CAMPAIGNS/SPRING{some()}", "misc"]),
            "asset_id": f"{number:032x}",
            "version": 1_700_000_000 + number,
            "context": {"custom": context},
            "metadata": {"category": f"cat-{some()}"},
        }
        notifications.append(notification)
    return notifications


def realistic(rng: random.Random) -> None:
    """Our speed on the realistic mix, checked against the reference evaluator on a sample."""
    print(
        "\nrealistic mix ("
        + ", ".join(f"{share}% {shape}" for shape, share in REALISTIC_SHARES.items())
        + "):"
    )
    for size in (100, 1_000, 10_000):
        rules = make_realistic_rules(size, rng)
        notifications = make_realistic_notifications(2_000, size, rng)
        matcher = Matcher(rules)
        ours, answers = rate(matcher.match, notifications)
        sample = notifications[:50]
        reference = [[i for i, rule in enumerate(rules) if matches(rule, event)] for event in sample]
        same = answers[: len(sample)] == reference
        average = sum(map(len, answers)) / len(answers)
        print(
            f"{size:>7} rules: {ours:>10,.0f} notifications/s, {average:.1f} rules matched a notification, "
            f"same: {same}"
        )
        if not same:
            raise SystemExit("the matcher and the reference evaluator disagree")


def rate(function: Any, items: list[Any], minimum: float = 0.5, rounds: int = 3) -> tuple[float, list[Any]]:
    """Items per second: the best of `rounds` rounds, each repeating the pass until at least `minimum`
    seconds have gone by (the best, as timeit takes: what the machine's other load took is noise)."""
    answers: list[Any] = []
    best = 0.0
    for _ in range(rounds):
        passes, started = 0, time.perf_counter()
        while True:
            answers = [function(item) for item in items]
            passes += 1
            elapsed = time.perf_counter() - started
            if elapsed >= minimum:
                break
        best = max(best, passes * len(items) / elapsed)
    return best, answers


def moto_match(patterns: list[EventPattern], event: dict[str, Any]) -> list[int]:
    return [index for index, pattern in enumerate(patterns) if pattern.matches_event(event)]  # type: ignore[arg-type]


def main() -> None:
    rng = random.Random(7)
    print(
        f"{'rules':>7} {'compile s':>10} {'ours n/s':>10} {'moto n/s':>10} {'ours/moto':>10} "
        f"{'cost vs 100':>12} {'same answers':>13}"
    )
    cost_at_100 = None
    for size in SIZES:
        rules = make_rules(size, rng)
        notifications = make_notifications(2_000, size, rng)
        started = time.perf_counter()
        matcher = Matcher(rules)
        compile_seconds = time.perf_counter() - started
        ours, our_answers = rate(matcher.match, notifications)
        moto_rules = [EventPattern(None, rule) for rule in rules]
        sample = notifications[: max(5, 20_000 // size)]
        theirs, moto_answers = rate(lambda event, peer=moto_rules: moto_match(peer, event), sample, 0.3)
        same = our_answers[: len(sample)] == moto_answers
        cost = 1 / ours
        cost_at_100 = cost if size == 100 else cost_at_100
        relative = f"{cost / cost_at_100:.2f}x" if cost_at_100 else "-"
        print(
            f"{size:>7} {compile_seconds:>10.3f} {ours:>10,.0f} {theirs:>10,.0f} {ours / theirs:>9,.0f}x "
            f"{relative:>12} {same!s:>13}"
        )
        matched = sum(1 for answer in our_answers if answer)
        print(f"{'':>7} ({matched} of {len(notifications)} notifications match at least one rule)")
        if not same:
            raise SystemExit("the matchers disagree: see the generated rules and notifications")
    mixed(rng)
    realistic(rng)


if __name__ == "__main__":
    main()
