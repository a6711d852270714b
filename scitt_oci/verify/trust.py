"""The trust policy: which transparency services' receipts count, which issuers are trusted, how many receipts are needed.

A YAML file (docs/trust-policy.md). Paths resolve against the policy file's folder; unknown keys
are errors, so a typo never silently weakens a policy.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from scitt_oci.cose.keys import CoseKey, load_key_file

if TYPE_CHECKING:
    from cryptography import x509
from scitt_oci.errors import PolicyError, ScittOciError
from scitt_oci.oci.reference import normalize_name

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
class SignatureRequirement:
    format: str | None = None  # cosign, cosign-bundle, notation; None: any
    signer: str | None = None  # a glob over the recorded signer identity; None: any


@dataclass(frozen=True)
class Requirements:
    receipts: int = 1  # distinct trusted services
    statements: tuple[str, ...] = ("push",)  # kinds that must be on record for an image
    max_age: float | None = None  # seconds: the push statement may be at most this old
    signatures: tuple[SignatureRequirement, ...] = ()  # each must match a recorded signature


@dataclass(frozen=True)
class Rule:
    match: str  # glob over registry/repository
    requirements: Requirements
    mode: str


@dataclass(frozen=True)
class TrustPolicy:
    services: tuple[TransparencyService, ...]
    issuers: tuple[Issuer, ...] | None  # None: any issuer, signature checked with the key the statement carries
    required_receipts: int = 1
    digest: str = ""  # SHA-256 of the policy file and every file it names: changes when anything trusted changes
    requirements: Requirements = Requirements()
    mode: str = "enforce"  # or "audit": decide, but only warn
    rules: tuple[Rule, ...] = ()
    files: tuple[Path, ...] = ()  # every key or certificate file it was built from

    def for_repository(self, repository: str) -> tuple[Requirements, str, str | None]:
        """(requirements, mode, the rule's pattern or None) for `registry/repository`: the first rule that
        matches, both names normalised (host case, default port, Docker Hub aliases and `library/`)."""
        name = normalize_name(repository)
        for rule in self.rules:
            if fnmatch.fnmatchcase(name, normalize_name(rule.match)):
                return rule.requirements, rule.mode, rule.match
        return self.requirements, self.mode, None

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
        self.files: list[Path] = []

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
        self.files.append(path)
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
                from cryptography import x509  # imported here: only policies with roots need it

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
    _check_keys(
        "trust policy",
        root,
        {"transparency_services", "issuers", "require", "mode", "rules"},
        {"transparency_services"},
    )
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
    requirements = _requirements("require", root.get("require"), len(services), Requirements())
    mode = _mode("mode", root.get("mode", "enforce"))
    rules = []
    for i, entry in enumerate(_list("rules", root.get("rules") or [])):
        where = f"rules[{i}]"
        item = _mapping(where, entry)
        _check_keys(where, item, {"match", "require", "mode"}, {"match"})
        pattern = item["match"]
        if not isinstance(pattern, str) or "/" not in pattern:
            raise PolicyError(f"{where}.match: must be a glob over registry/repository, e.g. registry.example/team/*")
        rules.append(
            Rule(
                pattern,
                _requirements(f"{where}.require", item.get("require"), len(services), requirements),
                _mode(f"{where}.mode", item.get("mode", mode)),
            )
        )
    return TrustPolicy(
        tuple(services),
        issuers,
        requirements.receipts,
        loader.hasher.hexdigest(),
        requirements,
        mode,
        tuple(rules),
        tuple(loader.files),
    )


_KINDS = ("push", "signature", "delete", "deploy")
_FORMATS = ("cosign", "cosign-bundle", "notation")
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _mode(where: str, value: object) -> str:
    if value not in ("enforce", "audit"):
        raise PolicyError(f"{where}: must be enforce or audit")
    return str(value)


def _duration(where: str, value: object) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise PolicyError(f"{where}: must be a duration such as 90s, 30m, 12h, 30d or 2w")
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def _requirements(where: str, value: object, services: int, base: Requirements) -> Requirements:
    if value is None:
        return base
    req = _mapping(where, value)
    _check_keys(where, req, {"receipts", "statements", "max_age", "signatures"})
    receipts = req.get("receipts", base.receipts)
    if isinstance(receipts, bool) or not isinstance(receipts, int) or not 1 <= receipts <= services:
        raise PolicyError(f"{where}.receipts: must be an integer from 1 to the number of services ({services})")
    statements = req.get("statements", list(base.statements))
    if not isinstance(statements, list) or not all(k in _KINDS for k in statements):
        raise PolicyError(f"{where}.statements: must be a list of {', '.join(_KINDS)}")
    max_age = _duration(f"{where}.max_age", req["max_age"]) if req.get("max_age") is not None else base.max_age
    signatures = list(base.signatures)
    if "signatures" in req:
        signatures = []
        for i, sig in enumerate(_list(f"{where}.signatures", req["signatures"])):
            item = _mapping(f"{where}.signatures[{i}]", sig)
            _check_keys(f"{where}.signatures[{i}]", item, {"format", "signer"})
            fmt, signer = item.get("format"), item.get("signer")
            if fmt is not None and fmt not in _FORMATS:
                raise PolicyError(f"{where}.signatures[{i}].format: must be one of {', '.join(_FORMATS)}")
            if signer is not None and not isinstance(signer, str):
                raise PolicyError(f"{where}.signatures[{i}].signer: must be a string (a glob)")
            signatures.append(SignatureRequirement(fmt, signer))
    return Requirements(receipts, tuple(statements), max_age, tuple(signatures))


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
