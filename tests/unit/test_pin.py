"""Pinning into a trust policy: merge rules, fingerprints, expected-fingerprint checks (pure functions)."""

from __future__ import annotations

from typing import Any

import pytest

from scitt_oci.cose import keys
from scitt_oci.errors import PolicyError
from scitt_oci.verify import pin
from tests.helpers import key


def test_fingerprint_is_the_thumbprint_of_the_key_not_its_stated_kid() -> None:
    k = key(slot=11)
    relabelled = keys.CoseKey.from_key(k.public, kid=b"another kid")
    assert pin.fingerprint(relabelled) == pin.fingerprint(k) == keys.thumbprint(k.public).hex()


def test_parse_fingerprint() -> None:
    assert pin.parse_fingerprint(" " + "AB" * 32 + "\n") == "ab" * 32
    for bad in ("ab" * 31, "zz" * 32, "sha256:" + "ab" * 32):
        with pytest.raises(PolicyError, match="64 hexadecimal"):
            pin.parse_fingerprint(bad)


def test_unexpected_names_stray_keys_and_unmatched_fingerprints() -> None:
    a, b = key(slot=12), key(slot=13)
    assert pin.unexpected([a, b], [pin.fingerprint(a), pin.fingerprint(b)]) == ([], [])
    stray, unmatched = pin.unexpected([a, b], [pin.fingerprint(a), "cd" * 32])
    assert stray == [b] and unmatched == ["cd" * 32]
    relabelled = keys.CoseKey.from_key(b.public, kid=bytes.fromhex("ef" * 32))
    assert pin.unexpected([relabelled], ["ef" * 32]) == ([], [])  # the hex kid as published is accepted too


def test_merge_keys_keeps_old_keys_and_adds_new_ones_once() -> None:
    a, b = key(slot=14), key(slot=15)
    merged = pin.merge_keys([a], [b, a, b])
    assert merged.keys == (a, b) and merged.added == (b,)


def test_merge_policy_adds_without_dropping_anything() -> None:
    doc: dict[str, Any] = {  # a policy document, as merge_policy takes it
        "transparency_services": [
            {"name": "other", "keys": [{"path": "o.pem"}]},
            {"name": "w", "keys": [{"path": "old.pem"}]},
        ],
        "issuers": [{"name": "w", "keys": [{"path": "i.pem"}], "iss": "https://old.example"}],
        "mode": "audit",
    }
    out = pin.merge_policy(doc, "w", "w.ts-keys.cbor", [pin.IssuerPin("w", "w.issuer-keys.cbor", "https://w.example")])
    assert out["mode"] == "audit" and out["transparency_services"][0] == doc["transparency_services"][0]
    assert out["transparency_services"][1]["keys"] == [{"path": "old.pem"}, {"path": "w.ts-keys.cbor"}]
    assert out["issuers"] == [
        {"name": "w", "keys": [{"path": "i.pem"}, {"path": "w.issuer-keys.cbor"}], "iss": "https://w.example"}
    ]
    assert doc["issuers"][0]["iss"] == "https://old.example"  # the input is not changed
    assert (
        pin.merge_policy(out, "w", "w.ts-keys.cbor", [pin.IssuerPin("w", "w.issuer-keys.cbor", "https://w.example")])
        == out
    )
    fresh = pin.merge_policy(None, "s", "s.cbor", [])
    assert fresh == {"transparency_services": [{"name": "s", "keys": [{"path": "s.cbor"}]}]}
    with pytest.raises(PolicyError, match="issuers: expected a list"):
        pin.merge_policy(
            {"transparency_services": [], "issuers": {"x": 1}}, "s", "s.cbor", [pin.IssuerPin("s", "i", "x")]
        )


def test_slug() -> None:
    assert pin.slug("127.0.0.1:8700") == "127.0.0.1-8700"
    assert pin.slug("[::1]:8700") == "1-8700" and pin.slug("::") == "service"
