"""The trust policy: which transparency services' receipts count, which issuers are trusted, how many receipts are needed.

A YAML file (docs/trust-policy.md). Paths resolve against the policy file's folder; unknown keys
are errors, so a typo never silently weakens a policy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509

from scitt_oci.cose.keys import CoseKey, load_key_file
from scitt_oci.errors import PolicyError, ScittOciError

MAX_POLICY_BYTES = 1 << 20
MAX_KEY_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class TransparencyService:
    name: str
    keys: tuple[CoseKey, ...]


@dataclass(frozen=True)
class Issuer:
    name: str
    keys: tuple[CoseKey, ...] = ()
    x509_roots: tuple[x509.Certificate, ...] = ()
    iss: str | None = None  # when set, the statement's iss claim must equal it


@dataclass(frozen=True)
class TrustPolicy:
    services: tuple[TransparencyService, ...]
    issuers: tuple[Issuer, ...] | None  # None: any issuer, signature checked with the key the statement carries
    required_receipts: int = 1
    digest: str = ""  # SHA-256 of the policy file and every file it names: changes when anything trusted changes

    @property
    def service_keys(self) -> tuple[CoseKey, ...]:
        return tuple(k for s in self.services for k in s.keys)

    def service_of(self, key: CoseKey) -> str:
        for service in self.services:
            if any(k is key for k in service.keys):
                return service.name
        raise KeyError(key.kid.hex())


def _check_keys(
    where: str, value: Mapping[str, Any], allowed: set[str], required: frozenset[str] | set[str] = frozenset()
) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise PolicyError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(sorted(allowed))})"
        )
    missing = sorted(required - set(value))
    if missing:
        raise PolicyError(f"{where}: missing {', '.join(map(repr, missing))}")


def _mapping(where: str, value: object) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _list(where: str, value: object) -> list[Any]:
    if not isinstance(value, list):
        raise PolicyError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _name(where: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PolicyError(f"{where}: name must be a non-empty string")
    return value


class _Loader:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.hasher = hashlib.sha256()

    def read(self, where: str, entry: object) -> tuple[Path, bytes]:
        item = _mapping(where, entry)
        _check_keys(where, item, {"path"}, {"path"})
        if not isinstance(item["path"], str):
            raise PolicyError(f"{where}: path must be a string")
        path = (self.base / item["path"]).resolve()
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_KEY_FILE_BYTES + 1)
        except OSError as exc:
            raise PolicyError(f"{where}: cannot read {path}: {exc.strerror}") from None
        if len(data) > MAX_KEY_FILE_BYTES:
            raise PolicyError(f"{where}: {path} is larger than {MAX_KEY_FILE_BYTES} bytes")
        self.hasher.update(str(path).encode() + b"\0" + hashlib.sha256(data).digest())
        return path, data

    def keys(self, where: str, entries: object) -> tuple[CoseKey, ...]:
        out: list[CoseKey] = []
        for i, entry in enumerate(_list(where, entries)):
            path, data = self.read(f"{where}[{i}]", entry)
            try:
                out.extend(load_key_file(data))
            except ScittOciError as exc:
                raise PolicyError(f"{where}[{i}]: {path}: {exc}") from None
        return tuple(out)

    def roots(self, where: str, entries: object) -> tuple[x509.Certificate, ...]:
        out: list[x509.Certificate] = []
        for i, entry in enumerate(_list(where, entries)):
            path, data = self.read(f"{where}[{i}]", entry)
            try:
                out.extend(x509.load_pem_x509_certificates(data))
            except ValueError as exc:
                raise PolicyError(f"{where}[{i}]: {path} holds no PEM certificates: {exc}") from None
        return tuple(out)


def parse_policy(text: bytes, base: Path) -> TrustPolicy:
    """Parse a trust policy document; `base` is the folder relative paths resolve against."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"trust policy is not valid YAML: {exc}") from None
    root = _mapping("trust policy", doc)
    _check_keys("trust policy", root, {"transparency_services", "issuers", "require"}, {"transparency_services"})
    loader = _Loader(base)
    loader.hasher.update(hashlib.sha256(text).digest())
    services = []
    for i, entry in enumerate(_list("transparency_services", root["transparency_services"])):
        where = f"transparency_services[{i}]"
        item = _mapping(where, entry)
        _check_keys(where, item, {"name", "keys"}, {"name", "keys"})
        keys = loader.keys(f"{where}.keys", item["keys"])
        if not keys:
            raise PolicyError(f"{where}: names no keys")
        services.append(TransparencyService(_name(where, item["name"]), keys))
    if not services:
        raise PolicyError("transparency_services: at least one service is needed")
    names = [s.name for s in services]
    if len(set(names)) != len(names):
        raise PolicyError("transparency_services: names must be unique")
    issuers: tuple[Issuer, ...] | None = None
    if root.get("issuers") is not None:
        parsed = []
        for i, entry in enumerate(_list("issuers", root["issuers"])):
            where = f"issuers[{i}]"
            item = _mapping(where, entry)
            _check_keys(where, item, {"name", "keys", "x509_roots", "iss"}, {"name"})
            keys = loader.keys(f"{where}.keys", item.get("keys", []))
            roots = loader.roots(f"{where}.x509_roots", item.get("x509_roots", []))
            if not keys and not roots:
                raise PolicyError(f"{where}: needs keys, x509_roots, or both")
            iss = item.get("iss")
            if iss is not None and not isinstance(iss, str):
                raise PolicyError(f"{where}.iss: must be a string")
            parsed.append(Issuer(_name(where, item["name"]), keys, roots, iss))
        issuers = tuple(parsed)
    required = 1
    if root.get("require") is not None:
        req = _mapping("require", root["require"])
        _check_keys("require", req, {"receipts"})
        required = req.get("receipts", 1)
        if isinstance(required, bool) or not isinstance(required, int) or not 1 <= required <= len(services):
            raise PolicyError(
                f"require.receipts: must be an integer from 1 to the number of services ({len(services)})"
            )
    return TrustPolicy(tuple(services), issuers, required, loader.hasher.hexdigest())


def load_policy(path: str | Path) -> TrustPolicy:
    """Load a trust policy file and every key file it names."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            text = fh.read(MAX_POLICY_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read trust policy {p}: {exc.strerror}") from None
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(f"trust policy {p} is larger than {MAX_POLICY_BYTES} bytes")
    return parse_policy(text, p.resolve().parent)
