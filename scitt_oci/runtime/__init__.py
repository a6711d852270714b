"""The composition root: the running service assembled from its configuration (keys, store, policy,
watcher, admission, replication, app), for `serve`, the CLI and `serve --workers N`'s worker processes."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from scitt_oci import keyfiles
from scitt_oci.config import Config
from scitt_oci.cose.keys import CoseKey, dump_cose_key_set
from scitt_oci.errors import ClientError, ConfigError, PolicyError, ScittOciError
from scitt_oci.log.policy import RegistrationPolicy
from scitt_oci.log.postgres_store import PostgresStore
from scitt_oci.log.service import TransparencyService
from scitt_oci.log.sqlite_store import SqliteStore
from scitt_oci.log.store import LogStore
from scitt_oci.netutil import registry_url
from scitt_oci.oci.client import RegistryClient, RegistrySettings, docker_credentials
from scitt_oci.oci.reference import Reference
from scitt_oci.runtime import replication
from scitt_oci.runtime.replication import Replication
from scitt_oci.scrapi.client import ScrapiClient
from scitt_oci.server.admission import Admission, ClientAuth, admission_app, admission_routes
from scitt_oci.server.app import Issuer, Metrics, RateLimiter, Settings, create_app
from scitt_oci.server.plaintext import RefusePlainCredentials
from scitt_oci.server.webhooks import webhook_routes
from scitt_oci.watch import signature_trust
from scitt_oci.watch.events import DEPLOY, RegistryEvent
from scitt_oci.watch.inbox import STATES as INBOX_STATES
from scitt_oci.watch.inbox import Inbox, PostgresInbox
from scitt_oci.watch.reconcile import Reconciler
from scitt_oci.watch.worker import EmbeddedRegistrar, Registrar, RemoteRegistrar, Watcher


@dataclass
class Runtime:
    config: Config
    service: TransparencyService
    metrics: Metrics
    created_key: bool
    issuer_key: CoseKey
    token_file: Path | None
    watcher: Watcher[RegistryClient] | None = None
    reconciler: Reconciler | None = None
    webhook_secret_file: Path | None = None
    admission_app: Starlette | None = None  # the admission listener's app, when admission.listen is set
    admission_policy: Path | None = None  # the policy admission decides with (made by trust_self, or given)
    replication: Replication | None = None  # C2SP tiles, witness, witness client
    app: Starlette = field(init=False)  # made last: its lifespan hooks are this runtime's start and stop

    def start(self) -> None:
        self.service.start()
        if self.watcher:
            self.watcher.start()
        if self.reconciler:
            self.reconciler.start()
        if self.replication:
            self.replication.start()

    def stop(self) -> None:
        if self.replication:
            self.replication.stop()
        if self.reconciler:
            self.reconciler.stop()
        if self.watcher:
            self.watcher.stop()
        self.service.stop()

    def readiness(self) -> str | None:
        """What is not ready beyond the log (None: all is)."""
        if self.watcher and self.watcher.crashed:
            return "the registry watcher has stopped"
        if self.watcher and self.watcher.inbox_trouble:
            return f"the registry watcher cannot read its inbox ({self.watcher.inbox_trouble})"
        return None

    def scrape(self) -> None:
        """Refresh the inbox gauges before /metrics answers (a state with no events left reads 0)."""
        if self.watcher:
            counts = self.watcher.inbox.counts()
            for state in {*INBOX_STATES, *counts}:
                self.metrics.inbox.labels(state).set(counts.get(state, 0))


def _registry_clients(config: Config) -> dict[str, RegistryClient]:
    clients: dict[str, RegistryClient] = {}
    for r in config.watch.registries:
        settings = RegistrySettings.for_url(registry_url(r.url, insecure=r.insecure))
        username, password = r.username, None
        if r.password_file:
            try:
                password = keyfiles.password(r.password_file)
            except ConfigError as exc:
                raise ConfigError(f"registry {r.url}: {exc}") from None
        elif r.docker_config:
            creds = docker_credentials(r.docker_config, settings.name)
            if creds:
                username, password = creds
        settings = RegistrySettings(
            settings.name,
            settings.url,
            username,
            password,
            str(r.ca_file) if r.ca_file else None,
            auth_hosts=tuple(r.auth_hosts),
        )
        if settings.name in clients:
            raise ConfigError(f"registry {settings.name} is configured twice")
        clients[settings.name] = RegistryClient(settings)
    return clients


def build(config: Config, *, run_sequencer: bool = False) -> Runtime:
    """Everything the service needs; with `run_sequencer` the app starts and stops the sequencer itself."""
    config.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = config.ts_key or config.data_dir / "keys" / "ts.pem"
    key, created = keyfiles.private_key(key_path, create_alg="ES256" if config.ts_key is None else None)
    # The operator's own issuer key (the registry watcher signs with it) is always trusted here.
    issuer_key, _ = keyfiles.private_key(
        config.issuer_key or config.data_dir / "keys" / "issuer.pem",
        create_alg="ES256" if config.issuer_key is None else None,
    )
    policy = _registration_policy(config, issuer_key)
    tokens, token_file = _tokens(config)
    metrics = Metrics()
    store = _store(config)
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
    rt = Runtime(config, service, metrics, created, issuer_key, token_file)
    issuer = config.watch.issuer or service.identity  # the iss of every statement the watcher signs
    routes: list[BaseRoute] = [*_watch(rt, issuer), *_admission(rt, issuer)]
    # ----- replication (runtime/replication.py, docs/replication.md) -----
    rt.replication = replication.setup(config, service)
    routes.extend(rt.replication.routes)
    rt.app = create_app(
        service,
        _settings(config, tokens),
        metrics,
        extra_routes=routes,
        hooks=(rt.start, rt.stop) if run_sequencer else None,
        readiness=rt.readiness,
        scrape=rt.scrape,
        issuers=[Issuer(issuer, (CoseKey.from_key(issuer_key.public, kid=issuer_key.kid, alg=issuer_key.alg),))],
    )
    if not config.http.allow_plain_http_credentials:
        rt.app.add_middleware(RefusePlainCredentials)
    return rt


def _registration_policy(config: Config, issuer_key: CoseKey) -> RegistrationPolicy:
    reg = config.registration
    return RegistrationPolicy.build(
        issuer_keys=[CoseKey.from_key(issuer_key.public), *keyfiles.public_keys(reg.issuer_keys)],
        x509_roots=keyfiles.certificates(reg.x509_roots),
        open_registration=reg.open,
        algorithm_names=reg.algorithms,
        max_statement_bytes=reg.max_statement_bytes,
        issuers=reg.issuers,
        subjects=reg.subjects,
        x509_issuers=[entry.binding() for entry in reg.x509_issuers],
    )


def _tokens(config: Config) -> tuple[list[str], Path | None]:
    """The registration bearer tokens, and the token file made when auth is required and none is given."""
    tokens = list(config.auth.tokens) + [keyfiles.token(p) for p in config.auth.token_files]
    token_file = None
    if config.auth_required and not tokens:
        token_file = config.data_dir / "registration-token"
        tokens.append(keyfiles.token(token_file, create=True))
    return tokens, token_file


def _postgres_dsn(config: Config) -> str:
    if config.storage.postgres_dsn is None:
        raise ConfigError("storage.backend postgres needs storage.postgres_dsn (SCITT_OCI_STORAGE__POSTGRES_DSN)")
    return config.storage.postgres_dsn.get_secret_value()


def _store(config: Config) -> LogStore:
    if config.storage.backend == "postgres":
        return PostgresStore(_postgres_dsn(config), schema=config.storage.postgres_schema)
    return SqliteStore(config.database, synchronous=config.storage.synchronous)


def _settings(config: Config, tokens: list[str]) -> Settings:
    return Settings(
        tokens=tuple(tokens),
        auth_required=config.auth_required or bool(tokens),
        wait_seconds=config.registration.wait_seconds,
        max_body=config.registration.max_statement_bytes,
        rate_limiter=RateLimiter(config.rate_limit.per_client_per_second, config.rate_limit.burst),
    )


def open_inbox(config: Config) -> Inbox:
    """The watcher's inbox where `storage.backend` keeps the service's state (the CLI's dead-letters too)."""
    if config.storage.backend == "postgres":  # the whole state moves: log and inbox, shared by the replicas
        return PostgresInbox(
            _postgres_dsn(config),
            schema=config.storage.postgres_schema,
            max_attempts=config.watch.max_attempts,
            lease_seconds=config.watch.lease_seconds,
        )
    return Inbox(
        config.data_dir / "watch.db",
        max_attempts=config.watch.max_attempts,
        lease_seconds=config.watch.lease_seconds,
    )


def _registrar(config: Config, service: TransparencyService) -> Registrar:
    if config.watch.transparency_service:
        ts_token = keyfiles.token(config.watch.ts_token_file) if config.watch.ts_token_file else None
        try:  # the token over plain HTTP beyond loopback, or through a proxy, is refused before anything starts
            client = ScrapiClient(config.watch.transparency_service, token=ts_token)
        except ClientError as exc:
            raise ConfigError(f"watch.transparency_service: {exc}") from None
        return RemoteRegistrar(client, config.watch.transparency_service)
    return EmbeddedRegistrar(service)


def _watch(rt: Runtime, issuer: str) -> Sequence[BaseRoute]:
    """The watcher, the reconciler and the webhook routes, when registries are configured."""
    config = rt.config
    if not config.watch.registries:
        return []
    clients = _registry_clients(config)
    secret_file = config.watch.webhook_secret_file or config.data_dir / "webhook-secret"
    secret = keyfiles.token(secret_file, create=config.watch.webhook_secret_file is None)
    inbox = open_inbox(config)
    rt.watcher = Watcher(
        inbox,
        clients,
        rt.issuer_key,
        issuer,
        _registrar(config, rt.service),
        workers=config.watch.workers,
        signature_trust=signature_trust.load(config.signatures),
    )
    rt.reconciler = Reconciler(
        inbox,
        clients,
        config.watch.poll_interval_seconds,
        reattach_interval=config.watch.reattach_interval_seconds,
        settle=config.watch.reattach_settle_seconds,
    )
    rt.webhook_secret_file = secret_file
    return webhook_routes(inbox, list(clients), secret)


def _admission(rt: Runtime, issuer: str) -> Sequence[BaseRoute]:
    """The admission controller: on its own listener (rt.admission_app) or as routes of the main app."""
    config = rt.config
    adm = config.admission
    policy_path = adm.trust_policy
    if policy_path is None and adm.trust_self:
        policy_path = _trust_self(config, rt.service, rt.issuer_key, issuer)
    if policy_path is None:
        return []
    auth = _admission_auth(config)
    if adm.listen is None and not config.tls_cert and not config.loopback_only:
        raise ConfigError("admission needs HTTPS beyond loopback: set --tls-cert and --tls-key")
    rt.admission_policy = policy_path
    clients = rt.watcher.clients if rt.watcher else _registry_clients(config)
    try:
        controller = Admission(
            policy_path,
            clients,
            deadline=adm.deadline_seconds,
            excluded_namespaces=frozenset(adm.exclude_namespaces),
            positive_ttl=adm.cache_seconds,
            negative_ttl=adm.negative_cache_seconds,
            registry=rt.metrics.registry,
            max_images=adm.max_images,
            max_registry_requests=adm.max_registry_requests,
        )
    except (OSError, ScittOciError) as exc:
        raise PolicyError(f"admission trust policy {policy_path}: {exc}") from None
    if adm.deploy_log:
        controller.on_admit = _deploy_recorder(rt, auth)
    if adm.listen is not None:
        rt.admission_app = admission_app(admission_routes(controller, auth))
        return []
    return admission_routes(controller)


def _deploy_recorder(rt: Runtime, auth: ClientAuth) -> Callable[[Reference, str, str], None]:
    """admission.deploy_log: each admitted image becomes a deploy event in the watcher's inbox."""
    if not auth.configured:
        raise ConfigError(
            "admission.deploy_log records deploys only for authenticated reviews: serve admission on "
            "admission.listen with admission.client_ca (the API server's client certificate) or "
            "admission.token_files"
        )
    if rt.watcher is None:
        raise ConfigError("admission.deploy_log needs watch.registries (deploy statements are attached there)")
    inbox, cluster = rt.watcher.inbox, rt.config.admission.cluster

    def record(ref: Reference, namespace: str, workload: str) -> None:
        deployment = (("cluster", cluster), ("namespace", namespace or "-"), ("workload", workload or "-"))
        inbox.add(ref.registry, [RegistryEvent(ref.repository, str(ref.digest), None, DEPLOY, None, deployment)])

    return record


def _admission_auth(config: Config) -> ClientAuth:
    """The admission listener's settings checked together, and how its clients authenticate."""
    adm = config.admission
    if adm.listen is None:
        if adm.client_ca or adm.token_files or adm.tls_cert or adm.tls_key:
            raise ConfigError(
                "admission.client_ca, token_files, tls_cert and tls_key belong to the admission listener: "
                "set admission.listen too"
            )
        return ClientAuth()
    if not (adm.tls_cert and adm.tls_key):
        raise ConfigError("admission.listen serves TLS only: set admission.tls_cert and admission.tls_key")
    if adm.listen == config.listen:
        raise ConfigError(f"admission.listen {adm.listen} is the main listener's address: give it its own port")
    if config.workers > 1:
        raise ConfigError("admission.listen runs in one process: use workers: 1 and scale admission with replicas")
    for path, what in ((adm.tls_cert, "tls_cert"), (adm.tls_key, "tls_key"), (adm.client_ca, "client_ca")):
        if path is not None and not path.is_file():
            raise ConfigError(f"admission.{what}: cannot read {path}")
    return ClientAuth(client_ca=adm.client_ca is not None, tokens=tuple(keyfiles.token(p) for p in adm.token_files))


def _trust_self(config: Config, service: TransparencyService, issuer_key: CoseKey, issuer: str) -> Path:
    """A trust policy for this instance's own records: its receipt keys and its issuer key and iss,
    written (public halves only) under the data directory on each start."""
    folder = config.data_dir / "trust-self"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    (folder / "ts-keys.cbor").write_bytes(dump_cose_key_set(service.keys()))
    (folder / "issuer.pem").write_bytes(issuer_key.public_pem())
    policy = {
        "transparency_services": [{"name": "self", "keys": [{"path": "ts-keys.cbor"}]}],
        "issuers": [{"name": "self", "keys": [{"path": "issuer.pem"}], "iss": issuer}],
    }
    path = folder / "policy.yaml"
    path.write_text(
        "# Written by scitt-oci at start-up (admission.trust_self): trust what this instance records.\n"
        + yaml.safe_dump(policy, sort_keys=False)
    )
    return path


# ----- `serve --workers N`: each worker process builds its own runtime -----
# Deliberately not SCITT_OCI_*: those are configuration keys.
WORKER_CONFIG_ENV = "SCITTOCI_WORKER_CONFIG"


def worker_config(config: Config) -> str:
    """The configuration for worker processes, secrets included: `model_dump_json` writes SecretStr
    values as `**********`, which left the workers with no PostgreSQL DSN. It travels in the workers'
    environment only (readable by the same user, like the data directory); it is never logged."""
    doc = config.model_dump(mode="json")
    if config.storage.postgres_dsn is not None:
        doc["storage"]["postgres_dsn"] = config.storage.postgres_dsn.get_secret_value()
    return json.dumps(doc)


def worker_app() -> Starlette:
    """The ASGI factory uvicorn's worker processes call (`scitt_oci.runtime:worker_app`): the runtime of
    the configuration the parent resolved, running its own sequencer. SQLite's write lock serialises the
    workers' batches; every batch re-reads the tree size, so they interleave safely."""
    from scitt_oci.server.listeners import GuardedHttpToolsProtocol  # uvicorn: only where it serves

    config = Config.model_validate_json(os.environ[WORKER_CONFIG_ENV])
    GuardedHttpToolsProtocol.configure(config.http.header_timeout_seconds, config.http.body_timeout_seconds)
    return build(config, run_sequencer=True).app
