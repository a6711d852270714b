"""The composition root in process: what `serve` builds from a configuration, and the configuration
errors it names before anything listens."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from scitt_oci import config, runtime
from scitt_oci.errors import ConfigError, PolicyError, ScittOciError
from scitt_oci.log.service import Registered
from scitt_oci.oci.reference import Digest, Reference
from scitt_oci.scitt import statement
from scitt_oci.server.admission import ClientAuth
from scitt_oci.watch.events import PUSH, RegistryEvent
from scitt_oci.watch.worker import EmbeddedRegistrar, RemoteRegistrar
from tests.pki import make_pki
from tests.unit.server.support import make_service, running, statement_bytes


def _load(tmp_path: Path, **overrides: Any) -> config.Config:
    return config.load(None, environ={}, overrides={"data_dir": str(tmp_path / "data"), **overrides})


def _build(tmp_path: Path, **overrides: Any) -> runtime.Runtime:
    return runtime.build(_load(tmp_path, **overrides))


REGISTRY = {"url": "127.0.0.1:5999", "insecure": True}


def test_a_watching_runtime_has_its_watcher_reconciler_webhooks_and_gauges(tmp_path: Path) -> None:
    rt = _build(tmp_path, watch={"registries": [REGISTRY]})
    try:
        assert rt.watcher is not None and rt.reconciler is not None
        assert list(rt.watcher.clients) == ["127.0.0.1:5999"]
        assert isinstance(rt.watcher.registrar, EmbeddedRegistrar)
        assert rt.webhook_secret_file == tmp_path / "data" / "webhook-secret" and rt.webhook_secret_file.exists()
        assert rt.readiness() is None
        rt.watcher.inbox.add("127.0.0.1:5999", [RegistryEvent("app", "sha256:" + "cd" * 32, None, PUSH, None)])
        with TestClient(rt.app, client=("127.0.0.1", 50000)) as http:
            r = http.post("/webhooks/distribution", content=b"{}")
            assert r.status_code == 401 and r.json()["detail"] == "the webhook secret is missing or wrong"
            assert 'scitt_watch_events{state="pending"} 1.0' in http.get("/metrics").text
        with TestClient(rt.app, client=("192.0.2.7", 50000)) as http:  # plain HTTP beyond loopback
            r = http.post("/webhooks/distribution", content=b"{}")
            assert r.status_code == 403 and "not accepted over plain HTTP" in r.json()["detail"]
            # Registration is answered ahead of Starlette's router (app.Shortcut): still behind this guard.
            r = http.post(
                "/entries", content=b"x", headers={"Authorization": "Bearer t", "Content-Type": "application/cose"}
            )
            assert r.status_code == 403 and "not accepted over plain HTTP" in r.json()["detail"]
    finally:
        rt.service.store.close()


def test_the_inbox_gauges_read_zero_for_a_state_with_no_events_left(tmp_path: Path) -> None:
    """A state that empties (the pending events all done) reads 0, not the count it had at the last scrape."""
    from prometheus_client import generate_latest

    rt = _build(tmp_path, watch={"registries": [REGISTRY]})
    try:
        assert rt.watcher is not None
        rt.watcher.inbox.add("127.0.0.1:5999", [RegistryEvent("app", "sha256:" + "cd" * 32, None, PUSH, None)])
        rt.scrape()
        text = generate_latest(rt.metrics.registry).decode()
        assert 'scitt_watch_events{state="pending"} 1.0' in text and 'scitt_watch_events{state="done"} 0.0' in text
        [item] = rt.watcher.inbox.claim(1)
        assert rt.watcher.inbox.done(item)
        rt.scrape()
        text = generate_latest(rt.metrics.registry).decode()
        assert 'scitt_watch_events{state="pending"} 0.0' in text and 'scitt_watch_events{state="done"} 1.0' in text
    finally:
        rt.service.store.close()


def test_a_remote_transparency_service_replaces_the_embedded_log_for_the_watcher(tmp_path: Path) -> None:
    token = tmp_path / "ts-token"
    token.write_text("remote-token-0123456789\n")
    rt = _build(
        tmp_path,
        watch={"registries": [REGISTRY], "transparency_service": "https://ts.example", "ts_token_file": str(token)},
    )
    try:
        assert rt.watcher is not None and isinstance(rt.watcher.registrar, RemoteRegistrar)
        assert rt.watcher.registrar.identity == "https://ts.example"
    finally:
        rt.service.store.close()


def test_a_token_for_a_remote_service_over_plain_http_beyond_loopback_stops_the_start(tmp_path: Path) -> None:
    token = tmp_path / "ts-token"
    token.write_text("remote-token-0123456789\n")
    remote = {"registries": [REGISTRY], "transparency_service": "http://ts.example:8080", "ts_token_file": str(token)}
    with pytest.raises(ConfigError, match=r"clear to http://ts\.example:8080: use https://ts\.example:8080"):
        _build(tmp_path, watch=remote)
    # Straight to a loopback service the token may go over plain HTTP (a local test service, a sidecar).
    rt = _build(tmp_path, watch={**remote, "transparency_service": "http://127.0.0.2:8080"})
    try:
        assert rt.watcher is not None and isinstance(rt.watcher.registrar, RemoteRegistrar)
    finally:
        rt.service.store.close()


def test_a_registry_password_is_not_held_to_the_token_rule(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("hunter2\n")  # shorter than a bearer token may be: the registry's business
    (tmp_path / "empty").write_text("\n")
    cfg = _load(tmp_path, watch={"registries": [{**REGISTRY, "username": "u", "password_file": str(tmp_path / "pw")}]})
    [client] = runtime._registry_clients(cfg).values()
    assert (client.settings.username, client.settings.password) == ("u", "hunter2")
    empty = {**REGISTRY, "username": "u", "password_file": str(tmp_path / "empty")}
    with pytest.raises(ConfigError, match=r"registry 127\.0\.0\.1:5999: password file .*/empty is empty"):
        runtime._registry_clients(_load(tmp_path, watch={"registries": [empty]}))


def test_the_registration_token_is_made_when_auth_is_required_and_none_is_given(tmp_path: Path) -> None:
    rt = runtime.build(_load(tmp_path, listen="0.0.0.0:8700"), run_sequencer=True)
    try:
        assert rt.token_file is not None and rt.token_file.exists()
        token = rt.token_file.read_text().strip()
        digest = hashlib.sha256(b"image").digest()
        data = statement.hash_envelope_statement(
            rt.issuer_key, issuer=rt.service.identity, subject=f"oci://r.example/a@sha256:{digest.hex()}", digest=digest
        ).encode()
        cose = {"Content-Type": "application/cose"}
        with TestClient(rt.app, base_url="https://testserver") as http:
            assert http.post("/entries", content=data, headers=cose).status_code == 401
            authorised = {**cose, "Authorization": f"Bearer {token}"}
            assert http.post("/entries", content=data, headers=authorised).status_code == 201
    finally:
        rt.service.store.close()


def test_deploy_records_go_to_the_watchers_inbox(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("admission-token-0123456789\n")
    pki = make_pki(tmp_path / "pki")
    rt = _build(
        tmp_path,
        watch={"registries": [REGISTRY]},
        admission={
            "trust_self": True,
            "deploy_log": True,
            "cluster": "prod",
            "listen": "127.0.0.1:9443",
            "tls_cert": str(pki.server_cert),
            "tls_key": str(pki.server_key),
            "token_files": [str(tmp_path / "tok")],
        },
    )
    try:
        assert rt.admission_app is not None and rt.watcher is not None
        with TestClient(rt.app) as http:  # admission is on its own listener, not the main one
            assert http.post("/admission/validate", json={}).status_code == 404
        ref = Reference("127.0.0.1:5999", "app", None, Digest.parse("sha256:" + "ab" * 32))
        # What the controller calls for an admitted, authenticated review (admission.on_admit).
        record = runtime._deploy_recorder(rt, ClientAuth(tokens=("admission-token-0123456789",)))
        record(ref, "payments", "deployment/api")
        [item] = rt.watcher.inbox.claim(1)
        assert item.event.deployment == (("cluster", "prod"), ("namespace", "payments"), ("workload", "deployment/api"))
        assert (item.registry, item.event.repository, item.event.digest) == (
            "127.0.0.1:5999",
            "app",
            "sha256:" + "ab" * 32,
        )
    finally:
        rt.service.store.close()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"storage": {"backend": "postgres"}}, "storage.backend postgres needs storage.postgres_dsn"),
        (
            {"watch": {"registries": [{**REGISTRY, "username": "u", "password_file": "/nonexistent/pw"}]}},
            "cannot read password file /nonexistent/pw",
        ),
        ({"watch": {"registries": [REGISTRY, {**REGISTRY, "url": "http://127.0.0.1:5999"}]}}, "configured twice"),
        (
            {
                "admission": {
                    "trust_self": True,
                    "deploy_log": True,
                    "token_files": ["TOK"],
                    "listen": "127.0.0.1:9443",
                    "tls_cert": "CERT",
                    "tls_key": "KEY",
                }
            },
            "deploy_log needs watch.registries",
        ),
        (
            {"admission": {"trust_self": True, "listen": "127.0.0.1:8700", "tls_cert": "CERT", "tls_key": "KEY"}},
            "is the main listener's address",
        ),
        (
            {
                "admission": {"trust_self": True, "listen": "127.0.0.1:9443", "tls_cert": "CERT", "tls_key": "KEY"},
                "workers": 2,
            },
            "admission.listen runs in one process",
        ),
        (
            {
                "admission": {
                    "trust_self": True,
                    "listen": "127.0.0.1:9443",
                    "tls_cert": "/nonexistent.pem",
                    "tls_key": "KEY",
                }
            },
            "admission.tls_cert: cannot read /nonexistent.pem",
        ),
        ({"listen": "0.0.0.0:8700", "admission": {"trust_self": True}}, "admission needs HTTPS beyond loopback"),
        ({"admission": {"trust_policy": "POLICY"}}, "admission trust policy"),
    ],
)
def test_bad_settings_are_named_before_anything_listens(
    tmp_path: Path, overrides: dict[str, Any], message: str
) -> None:
    pki = make_pki(tmp_path / "pki")
    (tmp_path / "tok").write_text("admission-token-0123456789\n")
    (tmp_path / "policy.yaml").write_text("transparency_services: 3\n")
    names = {
        "CERT": str(pki.server_cert),
        "KEY": str(pki.server_key),
        "TOK": str(tmp_path / "tok"),
        "POLICY": str(tmp_path / "policy.yaml"),
    }
    resolved = json.loads(json.dumps(overrides), object_hook=lambda d: {k: _subst(v, names) for k, v in d.items()})
    # A trust policy that cannot be used is a PolicyError; every other bad setting a ConfigError.
    expected = PolicyError if message == "admission trust policy" else ConfigError
    with pytest.raises(expected, match=message):
        _build(tmp_path, **resolved)


def _subst(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, list):
        return [names.get(v, v) if isinstance(v, str) else v for v in value]
    return names.get(value, value) if isinstance(value, str) else value


def test_worker_processes_get_the_configuration_with_its_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = _load(tmp_path, storage={"backend": "sqlite", "postgres_dsn": "postgresql://u:secret@db/x"})
    text = runtime.worker_config(cfg)
    assert json.loads(text)["storage"]["postgres_dsn"] == "postgresql://u:secret@db/x"
    monkeypatch.setenv(runtime.WORKER_CONFIG_ENV, runtime.worker_config(_load(tmp_path)))
    app = runtime.worker_app()
    with TestClient(app) as http:  # its lifespan runs the sequencer
        assert http.get("/readyz").text == "ready\n"


# ----- the watcher's embedded registrar over the service's register -----
def test_the_embedded_registrar_returns_the_receipt_or_fails_for_a_retry(tmp_path: Path) -> None:
    with running(make_service(tmp_path)) as service:
        registrar = EmbeddedRegistrar(service)
        assert registrar.identity == "https://ts.example"
        found = registrar.register(statement_bytes(30))
        outcome = service.register(statement_bytes(30), 1)
        assert isinstance(outcome, Registered) and outcome.receipt == found
    with (
        running(make_service(tmp_path / "slow", max_delay=30)) as service,
        pytest.raises(ScittOciError, match="did not integrate entry [0-9a-f]{64} in 0.05 s"),
    ):
        EmbeddedRegistrar(service, timeout=0.05).register(statement_bytes(31))
