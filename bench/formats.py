"""Formats benchmark: statements signed/s, statements verified/s, receipts verified/s, beside raw ES256.

Run: .venv/bin/python bench/formats.py [--seconds 8]

Every figure cycles through 256 distinct inputs (statements about different images, receipts from
different tree heads, raw signatures over different messages), so no cache or branch predictor
sees the same input twice in a row, and each is printed with its ratio to the raw `cryptography`
ES256 verification rate measured in the same run. Goals (issue #2): statement verification >= 80%
of that floor, receipt verification >= 70%.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from scitt_oci.cose import algorithms, keys
from scitt_oci.oci.reference import Reference
from scitt_oci.scitt import merkle, profile, receipt, statement

DISTINCT = 256


def _rate_once(fn: Callable[[], object], seconds: float) -> float:
    n, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(100):
            fn()
        n += 100
        now = time.perf_counter()
        if now >= deadline:
            return n / (now - start)


def rates(fns: dict[str, Callable[[], object]], seconds: float, rounds: int = 4) -> dict[str, float]:
    """Calls per second of each function: best of `rounds` interleaved rounds, so that the floor and
    the figures compared with it see the same machine (this one is shared and noisy)."""
    for fn in fns.values():
        for _ in range(DISTINCT):
            fn()
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for name, fn in fns.items():
            best[name] = max(best[name], _rate_once(fn, seconds / rounds / len(fns)))
    return best


def cycle(items: list[object], fn: Callable[[object], object]) -> Callable[[], object]:
    it = itertools.cycle(items)
    return lambda: fn(next(it))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="total measuring time")
    args = parser.parse_args()

    issuer = keys.generate(algorithms.by_name("ES256"))
    ts_key = keys.generate(algorithms.by_name("ES256"))
    events = [
        profile.make_event(
            profile.Kind.PUSH,
            Reference.parse(f"registry.example/net-monitor@sha256:{i:064x}"),
            media_type="application/vnd.oci.image.manifest.v1+json",
            tag=f"v{i}",
        )
        for i in range(DISTINCT)
    ]
    signed = [
        profile.build(issuer, "https://wabbit-networks.example", e, iat=1_764_028_306 + i) for i, e in enumerate(events)
    ]
    encoded = [s.encode() for s in signed]
    parsed = [statement.parse(e) for e in encoded]

    # Floor: raw ES256 verifications of distinct signatures over messages the size of our Sig_structures.
    raw_key = ec.generate_private_key(ec.SECP256R1())
    raw_public = raw_key.public_key()
    ecdsa = ec.ECDSA(hashes.SHA256())
    raw = []
    for s in signed:
        message = s.message.to_be_signed()
        raw.append((raw_key.sign(message, ecdsa), message))

    # Each receipt comes from its own tree head of a 100,000-entry log: a 17-hash path, one signature each.
    size = 100_000
    leaves = [merkle.leaf_hash(i.to_bytes(8, "big")) for i in range(size)]
    receipts = []
    for i, s in enumerate(parsed):
        index = (i * 389) % size
        leaves[index] = merkle.leaf_hash(s.entry())
    root = merkle.root_of(leaves)
    hasher = merkle.list_hasher(leaves)
    for i, _s in enumerate(parsed):
        index = (i * 389) % size
        sth = receipt.sign_tree_head(
            ts_key, issuer="https://ts.example", subject="log", tree_size=size, root=root, iat=i
        )
        receipts.append((receipt.inclusion_receipt(sth, index, merkle.inclusion_path(index, size, hasher)), parsed[i]))

    event_iter = itertools.count()
    measured = rates(
        {
            "floor": cycle(raw, lambda p: raw_public.verify(p[0], p[1], ecdsa)),  # type: ignore[index]
            "sign": lambda: profile.build(
                issuer, "https://wabbit-networks.example", events[next(event_iter) % DISTINCT]
            ),
            "statement": cycle(encoded, lambda e: statement.verify(statement.parse(e), keys=[issuer])),  # type: ignore[arg-type]
            # A verifier parses a statement once, then checks each of its receipts.
            "receipt": cycle(receipts, lambda p: receipt.verify_receipt(p[0], p[1], [ts_key])),  # type: ignore[index]
        },
        args.seconds,
    )
    floor = measured["floor"]
    rows = [
        ("statements signed/s", measured["sign"], None),
        ("statements verified/s (parse + ES256)", measured["statement"], 0.80),
        ("receipts verified/s (decode + 17-hash path + ES256)", measured["receipt"], 0.70),
    ]
    print(f"{'raw cryptography ES256 verify/s (floor)':<56} {floor:>9,.0f}")
    for name, value, goal in rows:
        ratio = value / floor
        verdict = "" if goal is None else (f"  goal >= {goal:.0%}: " + ("met" if ratio >= goal else "NOT met"))
        print(f"{name:<56} {value:>9,.0f}  {ratio:6.1%} of floor{verdict}")


if __name__ == "__main__":
    main()
