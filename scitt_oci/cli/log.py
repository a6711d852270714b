"""Commands for the transparency service: run it, register with one, audit one."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from scitt_oci.cli import EXIT_INVALID, EXIT_NOT_STARTED, _die, _read, _write, main, service_error
from scitt_oci.cose import keys
from scitt_oci.errors import ScittOciError
from scitt_oci.scitt import receipt as receipt_mod
from scitt_oci.scitt import statement as statement_mod
from scitt_oci.scitt import transparent
from scitt_oci.scitt.reasons import VerificationFailure

if TYPE_CHECKING:
    from collections.abc import Callable

    from scitt_oci.scrapi import audit as auditor


@main.command("serve")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML configuration (docs/configuration.md); also $SCITT_OCI_CONFIG.",
)
@click.option(
    "--data-dir", type=click.Path(file_okay=False, path_type=Path), help="Keys and database (default ./data)."
)
@click.option("--listen", help="HOST:PORT to serve on (default 127.0.0.1:8700).")
@click.option(
    "--open-registration",
    is_flag=True,
    default=None,
    help="Accept any statement whose signature verifies with the key it carries (open logs, demos).",
)
@click.option(
    "--issuer-key",
    "issuer_keys",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trust this issuer's public key(s) for registration (repeatable).",
)
@click.option(
    "--token-file",
    "token_files",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Accept the bearer token in this file for registration (repeatable).",
)
@click.option("--workers", type=click.IntRange(1, 64), help="Server processes (default 1); more use more cores.")
@click.option(
    "--registry",
    "registries",
    multiple=True,
    help="A registry to watch and attach statements to, host[:port] or URL (repeatable).",
)
@click.option(
    "--registry-insecure", is_flag=True, help="Talk plain HTTP to the --registry ones (loopback registries only)."
)
@click.option(
    "--webhook-secret-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Shared secret registries send as 'Authorization: Bearer <secret>' (default: made in the data dir).",
)
@click.option(
    "--trust",
    "trust_policy",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Trust policy: serve the admission webhooks and the Gatekeeper provider with it.",
)
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path), help="PEM certificate for HTTPS.")
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path), help="PEM private key for HTTPS.")
def serve(
    config_file: Path | None,
    data_dir: Path | None,
    listen: str | None,
    open_registration: bool | None,
    issuer_keys: tuple[Path, ...],
    token_files: tuple[Path, ...],
    workers: int | None,
    registries: tuple[str, ...] = (),
    registry_insecure: bool = False,
    webhook_secret_file: Path | None = None,
    trust_policy: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Run the transparency service (SCRAPI) on its embedded defaults or a configuration.

    \b
    On first start it makes, in the data directory (mode 0600):
      keys/ts.pem      the service's receipt-signing key
      keys/issuer.pem  the operator's issuer key (always trusted for registration)
      log.db           the log (SQLite, WAL)
    Registration needs a bearer token whenever it listens beyond loopback; with none configured
    it makes one in <data-dir>/registration-token.
    """
    if (tls_cert is None) != (tls_key is None):
        _die("give both --tls-cert and --tls-key")
    overrides = {
        **_serve_overrides(data_dir, listen, workers, token_files, trust_policy, tls_cert, tls_key),
        **_registration_overrides(open_registration, issuer_keys),
        **_watch_overrides(registries, registry_insecure, webhook_secret_file),
    }
    from scitt_oci import config as config_mod  # imported here: the other commands start faster without pydantic

    try:
        cfg = config_mod.load(config_file, overrides=overrides)
    except ScittOciError as exc:
        _die(exc.diagnostics())
    busy = _cannot_bind(cfg.host, cfg.port)
    if busy is not None:
        click.echo(
            f"error: cannot listen on {cfg.listen}: {busy}. Another process (perhaps another `scitt-oci serve`) "
            "holds that address: stop it, or choose another with --listen HOST:PORT",
            err=True,
        )
        sys.exit(EXIT_NOT_STARTED)
    try:
        from scitt_oci import runtime
        from scitt_oci.server import replication  # a mirror's data dir: serve its /tlog/ read API only

        if replication.is_mirror(cfg.data_dir):
            _serve_mirror(cfg)
            return
        rt = runtime.build(cfg)
    except ScittOciError as exc:
        _die(exc.diagnostics())
    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _banner(cfg, rt)
    if cfg.workers > 1:
        _serve_workers(cfg, rt)
    else:
        _serve_one(cfg, rt)


def _serve_overrides(
    data_dir: Path | None,
    listen: str | None,
    workers: int | None,
    token_files: tuple[Path, ...],
    trust_policy: Path | None,
    tls_cert: Path | None,
    tls_key: Path | None,
) -> dict[str, Any]:
    """The configuration keys `serve`'s own options set (over the file and the environment)."""
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = str(data_dir)
    if listen is not None:
        overrides["listen"] = listen
    if token_files:
        overrides["auth"] = {"token_files": [str(p.resolve()) for p in token_files]}
    if workers is not None:
        overrides["workers"] = workers
    if trust_policy is not None:
        overrides["admission"] = {"trust_policy": str(trust_policy.resolve())}
    if tls_cert is not None and tls_key is not None:
        overrides["tls_cert"], overrides["tls_key"] = str(tls_cert.resolve()), str(tls_key.resolve())
    return overrides


def _registration_overrides(open_registration: bool | None, issuer_keys: tuple[Path, ...]) -> dict[str, Any]:
    registration: dict[str, Any] = {}
    if open_registration:
        registration["open"] = True
    if issuer_keys:
        registration["issuer_keys"] = [str(p.resolve()) for p in issuer_keys]
    return {"registration": registration} if registration else {}


def _watch_overrides(
    registries: tuple[str, ...], registry_insecure: bool, webhook_secret_file: Path | None
) -> dict[str, Any]:
    watch: dict[str, Any] = {}
    if registries:
        watch["registries"] = [{"url": r, "insecure": registry_insecure} for r in registries]
    if webhook_secret_file is not None:
        watch["webhook_secret_file"] = str(webhook_secret_file.resolve())
    return {"watch": watch} if watch else {}


def _banner(cfg: Any, rt: Any) -> None:
    """What `serve` tells its operator at start: where it listens, its kids, its token, admission, watch."""
    click.echo(f"scitt-oci transparency service at {cfg.url}")
    click.echo(f"  service kid:  {rt.service.key.kid.hex()}" + ("  (new key)" if rt.created_key else ""))
    click.echo(f"  issuer kid:   {rt.issuer_key.kid.hex()}")
    click.echo(f"  to trust it:  scitt-oci trust pin {cfg.url} --policy policy.yaml  (compare the kids above)")
    click.echo(f"  data dir:     {cfg.data_dir.resolve()}")
    if rt.token_file is not None:
        click.echo(f"  registration token: {rt.token_file.resolve()}")
    elif not rt.config.auth_required:
        click.echo("  registration: open to loopback clients without a token")
    if rt.admission_policy is not None:
        _admission_banner(cfg, rt)
    if rt.watcher is not None:
        click.echo(f"  watching:     {', '.join(rt.watcher.clients)}; webhooks at {cfg.url}/webhooks/<format>")
        click.echo(f"  webhook secret: {rt.webhook_secret_file}")
    sys.stdout.flush()


def _admission_banner(cfg: Any, rt: Any) -> None:
    adm = cfg.admission
    where = f"https://{adm.listen}" if adm.listen else cfg.url
    if adm.client_ca and adm.token_files:
        how = "client certificate or bearer token"
    elif adm.client_ca:
        how = "client certificate"
    elif adm.token_files:
        how = "bearer token"
    else:
        how = "no client authentication: verdicts only, no deploy records"
    click.echo(f"  admission:    {where}/admission/validate, /admission/mutate, /gatekeeper/verify ({how})")
    if adm.trust_policy is None:
        click.echo(f"  admission trusts this instance (trust_self): {rt.admission_policy}")


def _uvicorn_options(cfg: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """uvicorn's options for every listener, and the main listener's TLS options."""
    from scitt_oci.server.listeners import GuardedHttpToolsProtocol

    GuardedHttpToolsProtocol.configure(cfg.http.header_timeout_seconds, cfg.http.body_timeout_seconds)
    # X-Forwarded-* is believed only from proxies the operator names (uvicorn's FORWARDED_ALLOW_IPS
    # counts as naming them); otherwise the client is the connection's peer, and no middleware parses
    # those headers on every request.
    trusted = list(cfg.http.trusted_proxies) or [
        a.strip() for a in os.environ.get("FORWARDED_ALLOW_IPS", "").split(",") if a.strip()
    ]
    common: dict[str, Any] = {
        "log_level": cfg.log_level,
        "access_log": False,
        "loop": "uvloop",
        "http": GuardedHttpToolsProtocol,
        "timeout_graceful_shutdown": 10,
        "proxy_headers": bool(trusted),
    }
    if trusted:
        common["forwarded_allow_ips"] = trusted
    main_tls: dict[str, Any] = {}
    if cfg.tls_cert and cfg.tls_key:
        main_tls = {"ssl_certfile": str(cfg.tls_cert), "ssl_keyfile": str(cfg.tls_key)}
    return common, main_tls


def _serve_workers(cfg: Any, rt: Any) -> None:
    """`--workers N`: uvicorn's worker processes, each building its own runtime from this configuration."""
    import uvicorn

    from scitt_oci import runtime

    common, main_tls = _uvicorn_options(cfg)
    # Keys and the token exist now; each worker builds its own runtime from this configuration.
    rt.service.store.close()
    all_tokens = [*cfg.auth.token_files, *([rt.token_file.resolve()] if rt.token_file else [])]
    resolved = cfg.model_copy(
        update={
            "data_dir": cfg.data_dir.resolve(),
            "auth": cfg.auth.model_copy(update={"token_files": all_tokens}),
        }
    )
    os.environ[runtime.WORKER_CONFIG_ENV] = runtime.worker_config(resolved)
    # Metrics from all workers, whichever answers a scrape (prometheus_client's multiprocess mode).
    metrics_dir = cfg.data_dir.resolve() / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # Workers import the protocol by name (the class is not pickled) and set its deadlines in worker_app.
    uvicorn.run(
        "scitt_oci.runtime:worker_app",
        factory=True,
        workers=cfg.workers,
        host=cfg.host,
        port=cfg.port,
        **{**common, "http": "scitt_oci.server.listeners:GuardedHttpToolsProtocol"},
        **main_tls,
    )


def _serve_one(cfg: Any, rt: Any) -> None:
    """One process: the main listener and, when configured, the admission listener in one event loop."""
    import uvicorn

    from scitt_oci.server.listeners import serve_all

    common, main_tls = _uvicorn_options(cfg)
    configs = [uvicorn.Config(rt.app, host=cfg.host, port=cfg.port, lifespan="off", **common, **main_tls)]
    if rt.admission_app is not None:
        configs.append(_admission_listener(cfg, rt.admission_app, common))
    rt.start()
    try:
        code = serve_all(configs)
    finally:
        rt.stop()
    if code:
        sys.exit(code)


def _admission_listener(cfg: Any, app: Any, common: dict[str, Any]) -> Any:
    import uvicorn

    adm = cfg.admission
    assert adm.listen is not None and adm.tls_cert is not None and adm.tls_key is not None
    host, _, port = adm.listen.rpartition(":")
    tls: dict[str, Any] = {"ssl_certfile": str(adm.tls_cert), "ssl_keyfile": str(adm.tls_key)}
    if adm.client_ca is not None:
        import ssl

        tls["ssl_ca_certs"] = str(adm.client_ca)
        # A certificate is demanded in the handshake unless a bearer token may stand in for it.
        tls["ssl_cert_reqs"] = ssl.CERT_OPTIONAL if adm.token_files else ssl.CERT_REQUIRED
    return uvicorn.Config(app, host=host.strip("[]"), port=int(port), lifespan="off", **common, **tls)


def _serve_mirror(cfg: Any) -> None:
    import uvicorn

    from scitt_oci.server import replication

    logging.basicConfig(level=cfg.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    click.echo(f"scitt-oci mirror of another log at {cfg.url}/tlog/ (data dir {cfg.data_dir.resolve()})")
    sys.stdout.flush()
    tls: dict[str, Any] = (
        {"ssl_certfile": str(cfg.tls_cert), "ssl_keyfile": str(cfg.tls_key)} if cfg.tls_cert and cfg.tls_key else {}
    )
    uvicorn.run(
        replication.mirror_app(cfg.data_dir),
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        access_log=False,
        timeout_graceful_shutdown=10,
        **tls,
    )


def _cannot_bind(host: str, port: int) -> str | None:
    """Why HOST:PORT cannot be listened on (as uvicorn would bind it), or None when it can."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def _client(
    ts: str, token_file: Path | None, timeout: float, max_wait: float = 60.0, ca_file: str | None = None
) -> Any:
    from scitt_oci.scrapi.client import ScrapiClient

    token = None
    if token_file is not None:
        token = _read(str(token_file), "token file").decode().strip()
    try:
        return ScrapiClient(ts, token=token, timeout=timeout, max_wait=max_wait, verify_tls=ca_file or True)
    except ScittOciError as exc:
        _die(exc.diagnostics())


_ca_file = click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True),
    help="PEM CA certificate(s) for a service whose certificate a private CA signed.",
)


@main.command("register")
@click.argument("statement_file", type=click.Path(dir_okay=False))
@click.option("--ts", required=True, help="The transparency service URL, e.g. http://127.0.0.1:8700")
@click.option("--token-file", type=click.Path(dir_okay=False, path_type=Path), help="Bearer token for registration.")
@click.option(
    "--out", type=click.Path(dir_okay=False), help="Transparent Statement to write (default: FILE with .scitt)."
)
@click.option("--receipt-out", type=click.Path(dir_okay=False), help="Also write the bare receipt here.")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the receipt.")
@_ca_file
def register(
    statement_file: str,
    ts: str,
    token_file: Path | None,
    out: str | None,
    receipt_out: str | None,
    timeout: float,
    ca_file: str | None = None,
) -> None:
    """Register a Signed Statement and write the Transparent Statement (statement + receipt).

    Works with SCRAPI draft -10 and -11 services. The receipt is checked against the service's
    published keys before anything is written.
    """
    data = _read(statement_file, "statement")
    try:
        signed = statement_mod.parse(data)
    except ScittOciError as exc:
        _die(f"{statement_file}: {exc.diagnostics()}")
    client = _client(ts, token_file, min(timeout, 30.0), max_wait=timeout, ca_file=ca_file)
    try:
        registered = client.register(data)
        service_keys = client.keys()
        verified = receipt_mod.verify_receipt(registered.receipt, signed, service_keys)
    except VerificationFailure as exc:
        _die(f"the service's receipt does not verify: {exc.diagnostics()}")
    except ScittOciError as exc:
        _die(service_error(exc, ts))
    target = out or str(Path(statement_file).with_suffix(".scitt"))
    _write(target, transparent.add_receipts(signed, [registered.receipt]))
    if receipt_out:
        _write(receipt_out, registered.receipt)
    click.echo(
        f"registered: leaf index {verified.leaf_index} (unsigned, from the proof) of tree size {verified.tree_size} "
        f"({'signed' if verified.size_signed else 'unsigned, from the proof'}); transparent statement written to {target}"
    )


@main.group("log")
def log_group() -> None:
    """Audit a transparency service's log."""


@log_group.command("audit")
@click.option("--ts", required=True, help="The transparency service URL.")
@click.option(
    "--state",
    "state_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the last verified checkpoint and the pinned keys are kept (JSON).",
)
@click.option(
    "--keys",
    "keys_file",
    type=click.Path(dir_okay=False),
    help="Service keys to trust (JWKS, COSE Key Set, PEM); default: pinned on first audit.",
)
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    help="Seconds for each call to the service (keys, checkpoint, consistency proof, retries included), "
    "not for the whole audit.",
)
@click.option(
    "--witness-policy",
    "witness_policy",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A C2SP tlog-policy (or a trust policy with a `tlog` section): audit the witnessed /tlog/checkpoint and refuse it below the quorum.",
)
@click.option(
    "--evidence",
    "evidence_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the evidence of an inconsistency, empty or missing: evidence is never overwritten "
    "(default: a new folder beside the state file, STATE.evidence-TIME).",
)
@_ca_file
def audit(
    ts: str,
    state_file: Path,
    keys_file: str | None,
    timeout: float,
    witness_policy: Path | None = None,
    evidence_dir: Path | None = None,
    ca_file: str | None = None,
) -> None:
    """Check that the log only grew since the last audit: verify the new checkpoint and a consistency proof.

    Exit 0 when consistent (the new checkpoint is saved), 1 when the log is inconsistent or its
    checkpoint is below the witness quorum (nothing is saved), 2 on errors. An inconsistency keeps its
    evidence (both signed checkpoints, the consistency proof, the service keys; docs/api.md) in a folder.
    """
    from scitt_oci.scrapi import audit as auditor

    try:
        previous = auditor.load_state(state_file, ts)
        trusted = keys.load_key_file(_read(keys_file, "keys file")) if keys_file else None
    except ScittOciError as exc:
        _die(exc.diagnostics())
    if evidence_dir is not None and evidence_dir.exists() and not _empty_folder(evidence_dir):
        _die(f"--evidence {evidence_dir} is not an empty folder: evidence is never overwritten; give a new one")
    witness = _witness(ts, witness_policy, timeout, ca_file) if witness_policy is not None else None
    client = _client(ts, None, timeout, ca_file=ca_file)
    folder = evidence_dir or auditor.evidence_folder(state_file)
    try:
        result = auditor.audit(
            client, ts, previous, keys=trusted, witness=witness, evidence_dir=folder, unique_evidence=not evidence_dir
        )
    except auditor.Refused as exc:
        click.echo(f"REFUSED: {exc}")
        sys.exit(EXIT_INVALID)
    except auditor.AuditError as exc:  # a stale answer, a key not pinned, evidence that cannot be written
        _die(exc.diagnostics())
    except ScittOciError as exc:
        _die(service_error(exc, ts))
    _report(result)
    if result.state is None:
        sys.exit(EXIT_INVALID)
    try:
        auditor.save_state(state_file, result.state)
    except ScittOciError as exc:
        _die(exc.diagnostics())


def _empty_folder(path: Path) -> bool:
    try:
        return path.is_dir() and not any(path.iterdir())
    except OSError:
        return False


def _witness(ts: str, policy_file: Path, timeout: float, ca_file: str | None) -> Callable[[], auditor.Witnessed]:
    """How the auditor reads the witnessed checkpoint: the service's /tlog/checkpoint under the policy,
    over TLS checked as the audit's own calls are (`--ca-file`)."""
    from scitt_oci.cli.replication import load_policy
    from scitt_oci.replication.fetch import TlogClient
    from scitt_oci.scrapi import audit as auditor

    policy = load_policy(policy_file)
    assert policy is not None

    def read() -> auditor.Witnessed:
        return auditor.witnessed(
            TlogClient(ts, timeout=timeout, ca_file=ca_file).checkpoint(), policy, str(policy_file)
        )

    return read


def _report(result: auditor.AuditResult) -> None:
    if result.pinned:
        kids = ", ".join(k.kid.hex() for k in result.pinned)
        click.echo(f"pinning {len(result.pinned)} service key(s) on first use: {kids}")
    if result.witnessed is not None:
        cosigners = ", ".join(result.witnessed.cosigners) or "none needed"
        click.echo(f"witnessed: size {result.witnessed.size} cosigned by {cosigners}")
    if result.state is not None:
        click.echo(result.message)
        return
    click.echo(f"INCONSISTENT: {result.message} ({result.reason})")
    click.echo(f"evidence kept in {result.evidence_dir}: both signed checkpoints, the proof, the service keys")
