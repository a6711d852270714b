"""Service configuration: embedded defaults, then a YAML file, then SCITT_OCI_* environment variables, then flags.

Every setting and its variable is listed in docs/configuration.md. Unknown keys are errors.
Nested settings are reached from the environment with a double underscore:
SCITT_OCI_BATCH__MAX_SIZE=500 sets `batch.max_size`. Lists are given as JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

from scitt_oci.errors import ConfigError, ScittOciError
from scitt_oci.netutil import is_loopback_host

if TYPE_CHECKING:
    from scitt_oci.scitt.x509chain import IssuerBinding

ENV_PREFIX = "SCITT_OCI_"
DEFAULT_PORT = 8700


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BatchConfig(_Section):
    max_size: int = Field(1000, ge=1, le=100_000, description="entries integrated per signed tree head, at most")
    # 5 ms: the longest window that still integrates in the commit that makes entries durable; a batch
    # signs once and syncs the disk once, so under load twice the entries per batch (vs 2 ms) cut the
    # sequencer's CPU per registration by about a quarter.
    max_delay_ms: float = Field(
        5.0, ge=0, le=10_000, description="how long the sequencer waits for more entries once one arrived"
    )
    max_queue: int = Field(50_000, ge=1, description="registrations waiting at once before new ones get 429")


class X509IssuerConfig(_Section):
    """An iss that statements signed with a certificate under registration.x509_roots may claim, and what
    that certificate must show (the same rules as a trust policy issuer's `certificate`)."""

    iss: str = Field(min_length=1, description="the iss this entry allows")
    subject: dict[str, str] = Field(default_factory=dict, description="leaf subject attributes that must all match")
    san: list[str] = Field(default_factory=list, description="leaf SANs (email:, dns:, uri:), any one of them")
    eku: list[str] = Field(default_factory=list, description="EKU OIDs the leaf must all carry")

    @model_validator(mode="after")
    def _bound(self) -> X509IssuerConfig:
        from scitt_oci.scitt import did_x509  # imported here: only X.509 issuers need it
        from scitt_oci.scitt.x509chain import CertificateRule

        if self.iss.startswith("did:x509:"):
            try:
                did_x509.parse(self.iss)
            except ScittOciError as exc:
                raise ValueError(str(exc)) from None
            if not (self.subject or self.san or self.eku):
                return self  # a did:x509 binds itself

        try:
            CertificateRule.parse({"subject": self.subject, "san": self.san, "eku": self.eku})
        except ScittOciError as exc:
            raise ValueError(f"iss {self.iss!r}: certificate rule {exc}") from None
        return self

    def binding(self) -> IssuerBinding:
        from scitt_oci.scitt.x509chain import CertificateRule, IssuerBinding

        rule = (
            CertificateRule.parse({"subject": self.subject, "san": self.san, "eku": self.eku})
            if (self.subject or self.san or self.eku)
            else CertificateRule()
        )
        return IssuerBinding(self.iss, rule)


class RegistrationConfig(_Section):
    open: bool = Field(False, description="accept any statement whose signature verifies with the key it carries")
    issuer_keys: list[Path] = Field(
        default_factory=list, description="files of trusted issuer public keys (PEM, JWKS, COSE Key Set)"
    )
    x509_roots: list[Path] = Field(
        default_factory=list, description="PEM files of roots for statements signed with x5chain"
    )
    x509_issuers: list[X509IssuerConfig] = Field(
        default_factory=list,
        description="iss values certificates under x509_roots may claim, with the certificate rules that bind them",
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512"]
    )
    max_statement_bytes: int = Field(64 * 1024, ge=256, le=16 * 1024 * 1024)
    issuers: list[str] | None = Field(None, description="allowed iss values (globs); none: any trusted issuer")
    subjects: list[str] | None = Field(None, description="allowed sub values (globs); none: any")
    wait_seconds: float = Field(
        3.0, ge=0, le=60, description="how long POST /entries waits for the receipt before answering 202"
    )


class AuthConfig(_Section):
    required: Literal["auto", "always", "never"] = Field(
        "auto", description="bearer tokens for registration: auto = required when listening beyond loopback"
    )
    tokens: list[str] = Field(
        default_factory=list, description="accepted bearer tokens, at least 16 characters each (prefer token_files)"
    )
    token_files: list[Path] = Field(default_factory=list, description="files holding one accepted token each")

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        for i, token in enumerate(value):
            if len(token.strip()) < 16:  # the same floor as token files (keyfiles.token)
                raise ValueError(f"token {i} is shorter than 16 characters; use a long random one (or token_files)")
        return [t.strip() for t in value]


class RateLimitConfig(_Section):
    per_client_per_second: float = Field(5000, ge=0, description="requests per second per client address; 0 = no limit")
    burst: int = Field(10_000, ge=1)


class StorageConfig(_Section):
    backend: Literal["sqlite", "postgres"] = "sqlite"
    postgres_dsn: SecretStr | None = Field(
        None, description="libpq connection string (keep it in a Secret / environment variable)"
    )
    postgres_schema: str = Field(
        "scitt_oci", description="the PostgreSQL schema the log's and the inbox's tables live in"
    )
    sqlite_path: Path | None = Field(None, description="default: <data_dir>/log.db")
    synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL", description="FULL survives power loss; NORMAL survives a process crash"
    )


class RegistryConfig(_Section):
    url: str = Field(description="host[:port] or http(s)://host[:port]; plain http only for loopback registries")
    insecure: bool = Field(False, description="talk plain HTTP (allowed for loopback registries only)")
    username: str | None = None
    password_file: Path | None = Field(None, description="file holding the password or token for `username`")
    docker_config: Path | None = Field(None, description="a docker config.json to take credentials from")
    ca_file: Path | None = Field(None, description="PEM bundle to verify the registry's TLS certificate")
    auth_hosts: list[str] = Field(default_factory=list, description="token-service hosts besides the registry itself")


class WatchConfig(_Section):
    registries: list[RegistryConfig] = Field(
        default_factory=list, description="the registries it may contact and watch"
    )
    webhook_secret_file: Path | None = Field(
        None,
        description="shared secret expected as `Authorization: Bearer` (default: <data_dir>/webhook-secret, made once)",
    )
    workers: int = Field(8, ge=1, le=64, description="events processed at once")
    max_attempts: int = Field(8, ge=1, le=100, description="tries before an event is dead-lettered")
    lease_seconds: float = Field(
        30, gt=0, description="an event whose worker died is taken up again after this long (live workers renew it)"
    )
    poll_interval_seconds: float = Field(
        0, ge=0, description="reconcile catalog and tags this often; 0 = only webhooks"
    )
    reattach_interval_seconds: float = Field(
        60,
        ge=0,
        description="check this often that what is on record is still attached, and list again what a "
        "concurrent writer dropped from a referrers index; 0 = off",
    )
    reattach_settle_seconds: float = Field(
        30, ge=0, description="attachments younger than this are left to their writer by that check"
    )
    issuer: str | None = Field(None, description="the iss of the statements it signs; default: the service identity")
    transparency_service: str | None = Field(
        None, description="a remote SCRAPI service to register with; default: the embedded log"
    )
    ts_token_file: Path | None = Field(None, description="bearer token for the remote transparency service")


# ---- Listeners (engineer B): the admission listener and its client authentication, admission bounds,
# ---- request read timeouts. Kept together so parallel changes to the sections above merge cleanly.


def _check_listen(value: str | None) -> str | None:
    if value is None:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8700 or [::1]:8700")
    return value


class AdmissionListenerSettings(_Section):
    """Where admission is served, how its clients authenticate, and how much one review may cost."""

    listen: str | None = Field(
        None,
        description="HOST:PORT of the admission listener (TLS); when set, /admission/* and /gatekeeper/verify "
        "are served there only, not on the main listener",
    )
    tls_cert: Path | None = Field(None, description="the admission listener's PEM certificate (required with listen)")
    tls_key: Path | None = Field(None, description="its private key (PEM)")
    client_ca: Path | None = Field(
        None, description="PEM CA bundle: clients presenting a certificate it signed are authenticated (the API server)"
    )
    token_files: list[Path] = Field(
        default_factory=list, description="files each holding a bearer token that authenticates a client"
    )
    trust_self: bool = Field(
        False,
        description="without trust_policy: trust this instance's own receipt and issuer keys (made on first start)",
    )
    max_images: int = Field(256, ge=1, le=10_000, description="image references per review; more are denied")
    max_registry_requests: int = Field(
        512, ge=1, le=100_000, description="registry reads per review; past it the remaining images are denied"
    )

    @field_validator("listen")
    @classmethod
    def _admission_listen(cls, value: str | None) -> str | None:
        return _check_listen(value)


class HttpConfig(_Section):
    header_timeout_seconds: float = Field(
        10, gt=0, le=600, description="a request's line and headers must arrive within this long (then 408)"
    )
    body_timeout_seconds: float = Field(
        60, gt=0, le=3600, description="a request's body must arrive within this long after its headers"
    )
    allow_plain_http_credentials: bool = Field(
        False,
        description="accept bearer tokens and webhook secrets over plain HTTP beyond loopback "
        "(only behind a TLS-terminating proxy or mesh)",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="addresses or networks (CIDR) of proxies whose X-Forwarded-For and X-Forwarded-Proto are "
        "believed; empty: the client address is the connection's peer and those headers are ignored",
    )

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_network(item.strip(), strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return [item.strip() for item in value]


# ---- end of the listeners block


class AdmissionConfig(AdmissionListenerSettings):
    trust_policy: Path | None = Field(
        None, description="the trust policy; setting it serves /admission/* and /gatekeeper/verify"
    )
    deadline_seconds: float = Field(
        2.5, gt=0, le=29, description="per-request deadline, under the webhook's timeoutSeconds"
    )
    exclude_namespaces: list[str] = Field(
        default_factory=lambda: ["kube-system"], description="namespaces always admitted"
    )
    cache_seconds: float = Field(300, ge=0, description="how long an admitted image's verdict is reused")
    negative_cache_seconds: float = Field(10, ge=0, description="how long a rejected image's verdict is reused")
    deploy_log: bool = Field(
        False, description="record each admitted image as a deploy statement (needs watch.registries)"
    )
    cluster: str = Field("default", description="the cluster name written into deploy statements")


# ----- replication: C2SP tiles, witnessing (docs/replication.md) -----
class TlogConfig(_Section):
    enabled: bool = Field(True, description="serve the log as C2SP tiles under /tlog/ (entries capped at 65,535 bytes)")
    origin: str | None = Field(
        None, description="the checkpoint origin and note key name; default: the identity or URL without scheme + /tlog"
    )
    note_key: Path | None = Field(
        None,
        description="Ed25519 key that signs checkpoints (PEM); default: <data_dir>/keys/note.pem, made on first start",
    )


class WitnessedLog(_Section):
    vkey: str = Field(description="the log's note verifier key (name+id+key); its name is the log's origin")
    origin: str | None = Field(None, description="the origin, when it differs from the key name")


class WitnessConfig(_Section):
    logs: list[WitnessedLog] = Field(
        default_factory=list, description="logs to witness at POST /tlog/witness/add-checkpoint; none: no witness"
    )
    name: str | None = Field(None, description="the cosigner name; default: the origin with /witness")
    key: Path | None = Field(
        None, description="Ed25519 cosigning key (PEM); default: <data_dir>/keys/witness.pem, made on first start"
    )


class WitnessPeer(_Section):
    url: str = Field(description="the witness service's base URL (/tlog/witness/add-checkpoint is appended)")
    vkey: str = Field(description="the witness's cosignature/v1 verifier key")


class NotationTrustStoreConfig(_Section):
    name: str = Field(min_length=1, description="this trust store's name, recorded as the trust anchor")
    ca: list[Path] = Field(default_factory=list, description="PEM files of CA roots (signing scheme notary.x509)")
    signing_authority: list[Path] = Field(
        default_factory=list, description="PEM files of signing-authority roots (notary.x509.signingAuthority)"
    )
    tsa: list[Path] = Field(
        default_factory=list, description="PEM or DER files of timestamping roots for RFC 3161 countersignatures"
    )
    trusted_identities: list[str] = Field(
        min_length=1,
        description="leaf subjects it trusts, as Notation writes them: 'x509.subject: C=US, ST=WA, O=Acme', or '*'",
    )


class CosignKeyConfig(_Section):
    name: str = Field(min_length=1, description="this key's name, recorded as the trust anchor")
    key: Path = Field(description="a PEM public key (EC, RSA or Ed25519)")


class SigstoreIdentityConfig(_Section):
    san: str = Field(min_length=1, description="the certificate's identity (e-mail or URI); a glob")
    issuer: str = Field(min_length=1, description="the OIDC issuer that certified it, exactly")


class SigstoreTrustConfig(_Section):
    name: str = Field(min_length=1, description="this trusted root's name, recorded as the trust anchor")
    trusted_root: str = Field(
        description="'public-good' (the trusted_root.json the sigstore package ships) or a trusted_root.json file"
    )
    identities: list[SigstoreIdentityConfig] = Field(min_length=1, description="the signers it trusts")


class SignaturesConfig(_Section):
    """Whose signatures the watcher verifies before it records them as verified. Nothing else is trusted."""

    notation: list[NotationTrustStoreConfig] = Field(default_factory=list)
    cosign_keys: list[CosignKeyConfig] = Field(default_factory=list)
    sigstore: list[SigstoreTrustConfig] = Field(default_factory=list)


class Config(_Section):
    data_dir: Path = Field(Path("data"), description="keys and the embedded database live here")
    listen: str = Field(f"127.0.0.1:{DEFAULT_PORT}", description="HOST:PORT to serve on")
    identity: str | None = Field(None, description="the service's identity (receipt iss); default: its URL")
    log_id: str = Field("scitt-oci/log", description="the log's name (receipt sub)")
    ts_key: Path | None = Field(
        None, description="the service's signing key (PEM); default: <data_dir>/keys/ts.pem, made on first start"
    )
    issuer_key: Path | None = Field(
        None,
        description="the issuer key the watcher signs with (PEM); default: <data_dir>/keys/issuer.pem, made on first start",
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    workers: int = Field(1, ge=1, le=64, description="server processes; they share the log through SQLite's write lock")
    batch: BatchConfig = Field(default_factory=BatchConfig)
    registration: RegistrationConfig = Field(default_factory=RegistrationConfig)
    auth: AuthConfig = Field(default_factory=AuthConfig)
    rate_limit: RateLimitConfig = Field(default_factory=RateLimitConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    watch: WatchConfig = Field(default_factory=WatchConfig)
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    signatures: SignaturesConfig = Field(default_factory=SignaturesConfig)
    tls_cert: Path | None = Field(
        None, description="PEM certificate to serve HTTPS (required for admission beyond loopback)"
    )
    tls_key: Path | None = Field(None, description="its private key (PEM)")
    # replication (docs/replication.md)
    tlog: TlogConfig = Field(default_factory=TlogConfig)
    witness: WitnessConfig = Field(default_factory=WitnessConfig)
    witnesses: list[WitnessPeer] = Field(default_factory=list, description="witnesses to send each new checkpoint to")
    witness_quorum: int = Field(0, ge=0, description="publish a checkpoint at /tlog/checkpoint once this many cosigned")

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _check_listen(value)
        return value

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def loopback_only(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls_cert else 'http'}://{host}:{self.port}"

    @property
    def auth_required(self) -> bool:
        return self.auth.required == "always" or (self.auth.required == "auto" and not self.loopback_only)

    @property
    def database(self) -> Path:
        return self.storage.sqlite_path or self.data_dir / "log.db"


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        value: Any = raw
        if raw[:1] in "[{":
            try:
                value = json.loads(raw)
            except ValueError:
                raise ConfigError(f"environment variable {name} is not valid JSON") from None
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return out


def _describe(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        problems.append(f"{where}: {err['msg']}")
    return f"invalid configuration ({source}): " + "; ".join(problems)


def load(
    path: Path | None = None, *, environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Config:
    """Defaults < `path` (or $SCITT_OCI_CONFIG) < SCITT_OCI_* variables < `overrides` (flags)."""
    env = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    file = path or (Path(env[ENV_PREFIX + "CONFIG"]) if env.get(ENV_PREFIX + "CONFIG") else None)
    sources = ["defaults"]
    if file is not None:
        try:
            doc = yaml.safe_load(file.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read configuration {file}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"configuration {file} is not valid YAML: {exc}") from None
        if doc is not None and not isinstance(doc, dict):
            raise ConfigError(f"configuration {file} must be a mapping")
        data = _merge(data, _resolve_signature_paths(_resolve_paths(doc or {}, file.parent), file.parent))
        sources.append(str(file))
    from_env = _from_env(env)
    if from_env:
        data = _merge(data, from_env)
        sources.append("environment")
    if overrides:
        data = _merge(data, overrides)
        sources.append("flags")
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, " < ".join(sources))) from None
    return config


def _is_path(annotation: Any) -> bool:
    return annotation is Path or any(_is_path(a) for a in get_args(annotation))


def _section(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section(arg)
        if found is not None:
            return found
    return None


def _resolve_paths(doc: Mapping[str, Any], base: Path, model: type[BaseModel] = Config) -> dict[str, Any]:
    """Relative paths written in a config file resolve against the file's folder: every field of `model`
    typed Path (or Path | None, list[Path]), in nested sections and in lists of them, found from the model."""

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not Path(value).is_absolute():
            return str(base / value)
        if isinstance(value, list):
            return [fix(v) for v in value]
        return value

    out = dict(doc)
    for name, field in model.model_fields.items():
        if name not in out:
            continue
        annotation = field.annotation
        section = _section(annotation)
        if section is not None:
            value = out[name]
            if isinstance(value, Mapping):
                out[name] = _resolve_paths(value, base, section)
            elif isinstance(value, list):
                out[name] = [_resolve_paths(v, base, section) if isinstance(v, Mapping) else v for v in value]
        elif _is_path(annotation):
            out[name] = fix(out[name])
    return out


def _resolve_signature_paths(doc: dict[str, Any], base: Path) -> dict[str, Any]:
    """`signatures.sigstore[].trusted_root` names a file or `public-good`, so it is text, not a `Path` that
    `_resolve_paths` finds in the model: a relative file name resolves against the config's folder too."""
    block = doc.get("signatures")
    entries = block.get("sigstore") if isinstance(block, dict) else None
    if not isinstance(block, dict) or not isinstance(entries, list):
        return doc

    def fix(entry: Any) -> Any:
        root = entry.get("trusted_root") if isinstance(entry, dict) else None
        if isinstance(root, str) and root and root != "public-good" and not Path(root).is_absolute():
            return {**entry, "trusted_root": str(base / root)}
        return entry

    return {**doc, "signatures": {**block, "sigstore": [fix(e) for e in entries]}}
