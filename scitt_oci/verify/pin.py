"""Pinning a transparency service into a trust policy: its receipt keys, and the issuers it publishes.

Pure functions over the policy document and key sets; the CLI fetches and writes. What is pinned is
merged into what a policy already holds (keys are added, never dropped: a rotated-out key still
verifies old receipts), and every key is shown by its fingerprint, the hex RFC 9679 thumbprint,
the same text `scitt-oci serve` prints as a kid, so an operator can compare them out of band.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from scitt_oci.cose.keys import CoseKey, thumbprint
from scitt_oci.errors import PolicyError

_HEX = frozenset(string.hexdigits)


def fingerprint(key: CoseKey) -> str:
    """The key's RFC 9679 thumbprint (SHA-256) as hex: computed from the key material, not its stated kid."""
    return thumbprint(key.public).hex()


def parse_fingerprint(text: str) -> str:
    """A fingerprint as given on the command line: 64 hex characters (any case); `PolicyError` otherwise."""
    value = text.strip().lower()
    if len(value) != 64 or not set(value) <= _HEX:
        raise PolicyError(
            f"fingerprint {text[:80]!r} is not 64 hexadecimal characters (the kid `scitt-oci serve` prints)"
        )
    return value


def unexpected(keys: Iterable[CoseKey], expected: Sequence[str]) -> tuple[list[CoseKey], list[str]]:
    """(keys whose fingerprint or hex kid is not expected, expected fingerprints that match no key)."""
    wanted = set(expected)
    keys = list(keys)
    names = {id(k): {fingerprint(k), k.kid.hex()} for k in keys}
    stray = [k for k in keys if not names[id(k)] & wanted]
    seen = set().union(*names.values()) if names else set()
    return stray, sorted(wanted - seen)


@dataclass(frozen=True)
class KeyMerge:
    keys: tuple[CoseKey, ...]  # what the file holds afterwards
    added: tuple[CoseKey, ...]  # of those, the ones it did not hold before


def merge_keys(existing: Sequence[CoseKey], fetched: Sequence[CoseKey]) -> KeyMerge:
    """Keys already pinned stay; fetched keys not among them (by fingerprint) are added."""
    have = {fingerprint(k) for k in existing}
    added: list[CoseKey] = []
    for k in fetched:
        if fingerprint(k) not in have:
            have.add(fingerprint(k))
            added.append(k)
    return KeyMerge((*existing, *added), tuple(added))


def slug(text: str) -> str:
    """A name usable in a file name and a policy, from a URL's host[:port]."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "service"


@dataclass(frozen=True)
class IssuerPin:
    name: str
    key_file: str  # relative to the policy's folder
    iss: str


def _entries(doc: dict[str, Any], section: str) -> list[Any]:
    value = doc.get(section)
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"{section}: expected a list, got {type(value).__name__}")
    return list(value)


def _upsert(entries: list[Any], name: str, key_file: str, section: str) -> dict[str, Any]:
    """The entry named `name` (made when absent), naming `key_file` among its keys."""
    for i, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("name") == name:
            found = dict(entry)
            keys = found.get("keys") or []
            if not isinstance(keys, list):
                raise PolicyError(f"{section}[{i}].keys: expected a list")
            if not any(isinstance(k, dict) and k.get("path") == key_file for k in keys):
                keys = [*keys, {"path": key_file}]
            found["keys"] = keys
            entries[i] = found
            return found
    entry = {"name": name, "keys": [{"path": key_file}]}
    entries.append(entry)
    return entry


def merge_policy(
    doc: dict[str, Any] | None, service: str, service_key_file: str, issuers: Sequence[IssuerPin]
) -> dict[str, Any]:
    """The policy `doc` (or a new one) trusting the service named `service` with the keys in
    `service_key_file`, and each issuer in `issuers` with its keys and its `iss`. Everything else is kept."""
    out = dict(doc or {})
    services = _entries(out, "transparency_services")
    _upsert(services, service, service_key_file, "transparency_services")
    out["transparency_services"] = services
    if issuers:
        entries = _entries(out, "issuers")
        for pin in issuers:
            entry = _upsert(entries, pin.name, pin.key_file, "issuers")
            entry["iss"] = pin.iss
        out["issuers"] = entries
    return out
