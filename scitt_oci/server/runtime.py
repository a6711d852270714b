"""Assemble the running service from its configuration: keys, store, policy, app."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from starlette.applications import Starlette

from scitt_oci import keyfiles
from scitt_oci.config import Config
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import PolicyError
from scitt_oci.log.policy import RegistrationPolicy
from scitt_oci.log.service import TransparencyService
from scitt_oci.log.sqlite_store import SqliteStore
from scitt_oci.server.app import Metrics, RateLimiter, Settings, create_app


@dataclass
class Runtime:
    config: Config
    service: TransparencyService
    app: Starlette
    metrics: Metrics
    created_key: bool
    issuer_key: CoseKey
    token_file: Path | None


def _roots(paths: list[Path]) -> list[x509.Certificate]:
    out: list[x509.Certificate] = []
    for p in paths:
        try:
            out.extend(x509.load_pem_x509_certificates(p.read_bytes()))
        except OSError as exc:
            raise PolicyError(f"cannot read X.509 roots {p}: {exc.strerror}") from None
        except ValueError as exc:
            raise PolicyError(f"{p} holds no PEM certificates: {exc}") from None
    return out


def build(config: Config, *, run_sequencer: bool = False) -> Runtime:
    """Everything the service needs; with `run_sequencer` the app starts and stops the sequencer itself."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = config.ts_key or config.data_dir / "keys" / "ts.pem"
    key, created = keyfiles.private_key(key_path, create_alg="ES256" if config.ts_key is None else None)
    # The operator's own issuer key (the registry watcher signs with it) is always trusted here.
    issuer_key, _ = keyfiles.private_key(config.data_dir / "keys" / "issuer.pem")
    reg = config.registration
    policy = RegistrationPolicy.build(
        issuer_keys=[CoseKey.from_key(issuer_key.public), *keyfiles.public_keys(reg.issuer_keys)],
        x509_roots=_roots(reg.x509_roots),
        open_registration=reg.open,
        algorithm_names=reg.algorithms,
        max_statement_bytes=reg.max_statement_bytes,
        issuers=reg.issuers,
        subjects=reg.subjects,
    )
    tokens = list(config.auth.tokens) + [keyfiles.token(p) for p in config.auth.token_files]
    token_file = None
    if config.auth_required and not tokens:
        token_file = config.data_dir / "registration-token"
        tokens.append(keyfiles.token(token_file, create=True))
    metrics = Metrics()
    store = SqliteStore(config.database, synchronous=config.storage.synchronous)
    service = TransparencyService(
        store,
        key,
        policy,
        identity=config.identity or config.url,
        log_id=config.log_id,
        max_batch=config.batch.max_size,
        max_delay=config.batch.max_delay_ms / 1000,
        max_queue=config.batch.max_queue,
        observer=metrics.observe_batch,
    )
    metrics.tree_size.set(store.size())
    settings = Settings(
        tokens=tuple(tokens),
        auth_required=config.auth_required or bool(tokens),
        wait_seconds=reg.wait_seconds,
        max_body=reg.max_statement_bytes,
        rate_limiter=RateLimiter(config.rate_limit.per_client_per_second, config.rate_limit.burst),
    )
    app = create_app(service, settings, metrics, run_sequencer=run_sequencer)
    return Runtime(config, service, app, metrics, created, issuer_key, token_file)
