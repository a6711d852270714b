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
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from scitt_oci import files
from scitt_oci.cose.keys import CoseKey, load_key_file

if TYPE_CHECKING:
    from cryptography import x509

    from scitt_oci.scitt.x509chain import CertificateRule
from scitt_oci.errors import PolicyError, ScittOciError
from scitt_oci.oci.reference import normalize_name
from scitt_oci.signatures import x509path
from scitt_oci.signatures.model import Format

MAX_POLICY_BYTES = 1 << 20
MAX_KEY_FILE_BYTES = 1 << 20


def read_file(path: Path, where: str, limit: int = MAX_KEY_FILE_BYTES) -> bytes:
    """A regular file a trust setting names, read with a size limit (`PolicyError` naming `where` if it cannot
    be): a FIFO or a device named by mistake is refused at once, not waited on or read without end."""
    try:
        return files.read_regular(path, limit)
    except FileNotFoundError as exc:
        raise PolicyError(f"{where}: cannot read {path}: {exc.strerror}") from None
    except files.UnreadableFile as exc:
        raise PolicyError(f"{where}: cannot read {path}: {exc}") from None


class PolicyMode(StrEnum):
    """What a failed decision does: deny (enforce), or only warn (audit)."""

    ENFORCE = "enforce"
    AUDIT = "audit"


@dataclass(frozen=True)
class TrustedService:
    """A transparency service whose receipts the policy counts (not the log we run: `log.service`)."""

    name: str
    keys: tuple[CoseKey, ...]


@dataclass(frozen=True)
class Issuer:
    name: str
    keys: tuple[CoseKey, ...] = ()
    x509_roots: tuple[x509.Certificate, ...] = ()
    iss: str | None = None  # when set, the statement's iss claim must equal it
    certificate: CertificateRule | None = None  # what an x5chain leaf under x509_roots must show to claim `iss`


@dataclass(frozen=True)
class SignatureRequirement:
    """Matched against verified signatures only: statements whose issuer says it verified them (profile v2)."""

    format: Format | None = None  # None: any
    signer: str | None = None  # a glob over the signer identity as verified; None: any
    issuer: str | None = None  # a glob over the OIDC issuer (Sigstore); None: any
    anchor: str | None = None  # the trust anchor that verified it (a name in the watcher's `signatures` config)
    # `signer` read as a Notation identity (`x509.subject: ...`): (OID, value glob) pairs, matched parsed
    subject: tuple[tuple[str, str], ...] | None = None

    def describe(self) -> str:
        parts = [self.format or "any-format"]
        if self.signer:
            parts.append(f"by {self.signer}")
        if self.issuer:
            parts.append(f"from {self.issuer}")
        if self.anchor:
            parts.append(f"under {self.anchor}")
        return " ".join(parts)


@dataclass(frozen=True)
class ReceiptGroup:
    """Receipts from at least `at_least` of the named services (all of them when it equals their number)."""

    services: tuple[str, ...]
    at_least: int

    def describe(self) -> str:
        if self.at_least == len(self.services):
            return "all of " + ", ".join(self.services)
        return f"at least {self.at_least} of " + ", ".join(self.services)


@dataclass(frozen=True)
class Requirements:
    receipts: int = 1  # distinct trusted services
    statements: tuple[str, ...] = ("push",)  # kinds that must be on record for an image
    max_age: float | None = None  # seconds: the push statement may be at most this old
    signatures: tuple[SignatureRequirement, ...] = ()  # each must match a recorded signature
    receipt_groups: tuple[ReceiptGroup, ...] = ()  # each must hold, beside `receipts`


@dataclass(frozen=True)
class Rule:
    match: str  # glob over registry/repository
    requirements: Requirements
    mode: PolicyMode


class RepositoryPolicy(NamedTuple):
    """What the policy asks of one repository, and where that came from."""

    requirements: Requirements
    mode: PolicyMode
    rule: str | None  # the matching rule's pattern; None: the policy's top-level require and mode


@dataclass(frozen=True)
class TrustPolicy:
    services: tuple[TrustedService, ...]
    issuers: tuple[Issuer, ...] | None  # None: any issuer, signature checked with the key the statement carries
    required_receipts: int = 1
    digest: str = ""  # SHA-256 of the policy file and every file it names: changes when anything trusted changes
    requirements: Requirements = Requirements()
    mode: PolicyMode = PolicyMode.ENFORCE
    rules: tuple[Rule, ...] = ()
    files: tuple[Path, ...] = ()  # every key or certificate file it was built from

    def for_repository(self, repository: str) -> RepositoryPolicy:
        """What applies to `registry/repository`: the first rule that matches, both names normalised
        (host case, default port, Docker Hub aliases and `library/`), else the top-level requirements."""
        name = normalize_name(repository)
        for rule in self.rules:
            if fnmatch.fnmatchcase(name, normalize_name(rule.match)):
                return RepositoryPolicy(rule.requirements, rule.mode, rule.match)
        return RepositoryPolicy(self.requirements, self.mode, None)

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


def _issuer_binding(
    where: str, iss: str | None, roots: tuple[x509.Certificate, ...], certificate: object
) -> CertificateRule | None:
    """Check how an issuer entry ties `iss` to certificates under its roots; the entry's certificate rule.

    With x509_roots, any certificate under them could otherwise claim any iss: the entry must name a
    did:x509 iss, an iss with certificate rules, or no iss (statements must then carry a did:x509
    iss their chain proves)."""
    if iss is not None and iss.startswith("did:x509:"):
        from scitt_oci.scitt import did_x509  # imported here: only policies with did:x509 issuers need it

        try:
            did_x509.parse(iss)
        except ScittOciError as exc:
            raise PolicyError(f"{where}.iss: {exc}") from None
    rule = None
    if certificate is not None:
        if not roots:
            raise PolicyError(f"{where}.certificate: certificate rules need x509_roots to validate the chain against")
        from scitt_oci.scitt.x509chain import CertificateRule

        try:
            rule = CertificateRule.parse(certificate)
        except ScittOciError as exc:
            raise PolicyError(f"{where}.certificate: {exc}") from None
    if roots and iss is not None and not iss.startswith("did:x509:") and rule is None:
        raise PolicyError(
            f"{where}: iss {iss!r} is not bound to the certificates under x509_roots, so any of them could claim it: "
            "add certificate rules (subject, san or eku) the signing certificate must match, or use a did:x509 iss"
        )
    return rule


class _Loader:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.hasher = hashlib.sha256()
        self.files: list[Path] = []

    def read(self, where: str, entry: object, allowed: frozenset[str] = frozenset({"path"})) -> tuple[Path, bytes]:
        item = _mapping(where, entry)
        _check_keys(where, item, set(allowed), {"path"})
        if not isinstance(item["path"], str):
            raise PolicyError(f"{where}: path must be a string")
        path = (self.base / item["path"]).resolve()
        data = read_file(path, where)
        self.hasher.update(str(path).encode() + b"\0" + hashlib.sha256(data).digest())
        self.files.append(path)
        return path, data

    def keys(self, where: str, entries: object) -> tuple[CoseKey, ...]:
        out: list[CoseKey] = []
        for i, entry in enumerate(_list(where, entries)):
            path, data = self.read(f"{where}[{i}]", entry, frozenset({"path", "kid"}))
            try:
                loaded = load_key_file(data)
            except ScittOciError as exc:
                raise PolicyError(f"{where}[{i}]: {path}: {exc}") from None
            kid = _mapping(where, entry).get("kid")
            if kid is not None:
                # A text kid the signer puts in its messages (as UTF-8 bytes), e.g. pyscitt's or transmute's.
                if not isinstance(kid, str) or not kid:
                    raise PolicyError(f"{where}[{i}].kid: must be a non-empty string (the kid as text)")
                self.hasher.update(b"kid\0" + kid.encode("utf-8", "replace"))
                loaded = [k.named(kid.encode("utf-8", "replace")) for k in loaded]
            out.extend(loaded)
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
        # `tlog` (the service's note key and witnesses) is read by `log audit` and `mirror` (tlog/policy.py)
        _check_keys(where, item, {"name", "keys", "tlog"}, {"name", "keys"})
        keys = loader.keys(f"{where}.keys", item["keys"])
        if not keys:
            raise PolicyError(f"{where}: names no keys")
        services.append(TrustedService(_name(where, item["name"]), keys))
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
            _check_keys(where, item, {"name", "keys", "x509_roots", "iss", "certificate"}, {"name"})
            keys = loader.keys(f"{where}.keys", item.get("keys", []))
            roots = loader.roots(f"{where}.x509_roots", item.get("x509_roots", []))
            if not keys and not roots:
                raise PolicyError(f"{where}: needs keys, x509_roots, or both")
            iss = item.get("iss")
            if iss is not None and not isinstance(iss, str):
                raise PolicyError(f"{where}.iss: must be a string")
            certificate = _issuer_binding(where, iss, roots, item.get("certificate"))
            parsed.append(Issuer(_name(where, item["name"]), keys, roots, iss, certificate))
        issuers = tuple(parsed)
    requirements = _requirements("require", root.get("require"), len(services), Requirements(), names=tuple(names))
    mode = _mode("mode", root.get("mode", PolicyMode.ENFORCE))
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
                _requirements(f"{where}.require", item.get("require"), len(services), requirements, names=tuple(names)),
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


# The statement kinds (`profile.Kind`, held equal by a test), as text: loading a policy does not import
# the statement profile, for start-up time.
_KINDS = ("push", "signature", "attestation", "delete", "deploy", "import")
_FORMATS = tuple(Format)
_DURATION = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _mode(where: str, value: object) -> PolicyMode:
    if not isinstance(value, str) or value not in tuple(PolicyMode):
        raise PolicyError(f"{where}: must be enforce or audit")
    return PolicyMode(value)


def _duration(where: str, value: object) -> float:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _DURATION.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise PolicyError(f"{where}: must be a duration such as 90s, 30m, 12h, 30d or 2w")
    return float(int(match.group(1)) * _UNITS[match.group(2)])


def _receipt_group(where: str, value: object, names: tuple[str, ...]) -> ReceiptGroup:
    item = _mapping(where, value)
    if "all" in item:
        _check_keys(where, item, {"all"})
        listed = _list(f"{where}.all", item["all"])
    else:
        _check_keys(where, item, {"at_least", "of"}, {"at_least", "of"})
        listed = _list(f"{where}.of", item["of"])
    if not listed or not all(isinstance(n, str) for n in listed) or len(set(listed)) != len(listed):
        raise PolicyError(f"{where}: must name one or more distinct transparency services")
    unknown = [n for n in listed if n not in names]
    if unknown:
        raise PolicyError(
            f"{where}: {', '.join(map(repr, unknown))} is not a transparency service of this policy "
            f"(known: {', '.join(names)})"
        )
    at_least = item.get("at_least", len(listed))
    if isinstance(at_least, bool) or not isinstance(at_least, int) or not 1 <= at_least <= len(listed):
        raise PolicyError(f"{where}.at_least: must be an integer from 1 to the {len(listed)} services named")
    return ReceiptGroup(tuple(listed), at_least)


def _receipt_rule(
    where: str, value: object, services: int, names: tuple[str, ...]
) -> tuple[int, tuple[ReceiptGroup, ...]]:
    """`receipts`: k distinct trusted services; or {all: [names]}; or {at_least: k, of: [names]}; or a list of those."""
    if isinstance(value, dict):
        return 1, (_receipt_group(where, value, names),)
    if isinstance(value, list):
        if not value:
            raise PolicyError(f"{where}: an empty list requires nothing; give a number or groups")
        return 1, tuple(_receipt_group(f"{where}[{i}]", v, names) for i, v in enumerate(value))
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= services:
        raise PolicyError(
            f"{where}: must be an integer from 1 to the number of services ({services}), "
            "{all: [service, ...]}, {at_least: k, of: [service, ...]}, or a list of those"
        )
    return value, ()


def _requirements(
    where: str, value: object, services: int, base: Requirements, *, names: tuple[str, ...] = ()
) -> Requirements:
    if value is None:
        return base
    req = _mapping(where, value)
    _check_keys(where, req, {"receipts", "statements", "max_age", "signatures"})
    receipts, groups = base.receipts, base.receipt_groups
    if "receipts" in req:
        receipts, groups = _receipt_rule(f"{where}.receipts", req["receipts"], services, names)
    statements = req.get("statements", list(base.statements))
    if not isinstance(statements, list) or not all(k in _KINDS for k in statements):
        raise PolicyError(f"{where}.statements: must be a list of {', '.join(_KINDS)}")
    max_age = _duration(f"{where}.max_age", req["max_age"]) if req.get("max_age") is not None else base.max_age
    signatures = list(base.signatures)
    if "signatures" in req:
        signatures = []
        for i, sig in enumerate(_list(f"{where}.signatures", req["signatures"])):
            item = _mapping(f"{where}.signatures[{i}]", sig)
            _check_keys(f"{where}.signatures[{i}]", item, {"format", "signer", "issuer", "anchor"})
            fmt = item.get("format")
            if fmt is not None and fmt not in _FORMATS:
                raise PolicyError(f"{where}.signatures[{i}].format: must be one of {', '.join(_FORMATS)}")
            for name in ("signer", "issuer", "anchor"):
                if item.get(name) is not None and (not isinstance(item[name], str) or not item[name]):
                    raise PolicyError(f"{where}.signatures[{i}].{name}: must be a non-empty string")
            signer, subject = item.get("signer"), None
            if signer is not None and (fmt == Format.NOTATION or signer.lstrip().startswith("x509.subject")):
                try:
                    subject = x509path.signer_pattern(signer)
                except ValueError as exc:
                    raise PolicyError(f"{where}.signatures[{i}].signer: {exc}") from None
            signatures.append(
                SignatureRequirement(
                    Format(fmt) if fmt is not None else None, signer, item.get("issuer"), item.get("anchor"), subject
                )
            )
    return Requirements(receipts, tuple(statements), max_age, tuple(signatures), groups)


def load_policy(path: str | Path) -> TrustPolicy:
    """Load a trust policy file and every key file it names."""
    p = Path(path)
    return parse_policy(read_file(p, "trust policy", MAX_POLICY_BYTES), p.resolve().parent)
