"""Trust bootstrap: the service publishes its issuers; `trust pin --policy` writes a complete policy
from them, shows fingerprints, refuses unexpected keys, merges into what a policy holds; errors name the fix."""

from __future__ import annotations

import base64
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
import requests
import yaml

from scitt_oci.cose import algorithms, keys
from scitt_oci.verify import pin
from scitt_oci.verify.trust import load_policy
from tests.helpers import cli
from tests.pki import make_pki
from tests.serverproc import ServerProcess, free_port

DIGEST = "sha256:" + "5d" * 32


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path_factory.mktemp("pin") / "data").start()
    yield srv
    srv.stop()


def _banner_kids(srv: ServerProcess) -> tuple[str, str]:
    out = srv.output()
    service = out.split("service kid:", 1)[1].split()[0]
    issuer = out.split("issuer kid:", 1)[1].split()[0]
    return service, issuer


def test_issuers_route_publishes_the_watcher_key_and_iss(server: ServerProcess) -> None:
    r = requests.get(server.url + "/.well-known/scitt-oci/issuers", timeout=5)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    [entry] = r.json()["issuers"]
    assert entry["iss"] == server.url  # the watcher's default iss: the service identity
    [jwk] = entry["keys"]
    published = keys.from_jwk(jwk)
    private = keys.load_private_pem((server.data_dir / "keys" / "issuer.pem").read_bytes())
    assert published.public_pem() == private.public_pem() and "d" not in jwk
    assert (
        requests.get(
            server.url + "/.well-known/scitt-oci/issuers", headers={"Accept": "application/cbor"}, timeout=5
        ).status_code
        == 406
    )


def test_the_kid_the_banner_prints_is_found_at_the_key_route(server: ServerProcess) -> None:
    service_kid, _ = _banner_kids(server)
    r = requests.get(f"{server.url}/.well-known/scitt-keys/{service_kid}", timeout=5)
    assert r.status_code == 200 and keys.from_cose(cbor2.loads(r.content)).kid.hex() == service_kid
    b64 = base64.urlsafe_b64encode(bytes.fromhex(service_kid)).rstrip(b"=").decode()
    assert requests.get(f"{server.url}/.well-known/scitt-keys/{b64}", timeout=5).status_code == 200


def test_pin_writes_a_policy_that_verifies_what_the_operator_signs(server: ServerProcess, tmp_path: Path) -> None:
    service_kid, issuer_kid = _banner_kids(server)
    proc = cli("trust", "pin", server.url, "--policy", "p.yaml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"receipt key  {service_kid}" in proc.stdout and f"issuer key   {issuer_kid}" in proc.stdout
    policy = load_policy(tmp_path / "p.yaml")
    assert policy.issuers is not None and policy.issuers[0].iss == server.url
    assert [k.kid.hex() for k in policy.service_keys] == [service_kid]
    # A push statement as the watcher makes it (the operator's key, the published iss) verifies under it.
    key_file = str(server.data_dir / "keys" / "issuer.pem")
    made = cli(
        "statement",
        "create",
        "--key",
        key_file,
        "--issuer",
        server.url,
        "--profile",
        "push",
        "--image",
        f"registry.example/app@{DIGEST}",
        "--out",
        "s.cose",
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert cli("register", "s.cose", "--ts", server.url, "--out", "s.scitt", cwd=tmp_path).returncode == 0
    ok = cli("verify", "--statement", "s.scitt", "--trust", "p.yaml", "--digest", DIGEST, cwd=tmp_path)
    assert ok.returncode == 0 and ok.stdout.startswith("VALID"), ok.stdout + ok.stderr
    # Another iss with the same key is not the pinned issuer.
    cli(
        "statement",
        "create",
        "--key",
        key_file,
        "--issuer",
        "https://elsewhere.example",
        "--profile",
        "push",
        "--image",
        f"registry.example/app@{DIGEST}",
        "--out",
        "o.cose",
        cwd=tmp_path,
    )
    assert cli("register", "o.cose", "--ts", server.url, "--out", "o.scitt", cwd=tmp_path).returncode == 0
    bad = cli("verify", "--statement", "o.scitt", "--trust", "p.yaml", "--digest", DIGEST, cwd=tmp_path)
    assert bad.returncode == 1 and "UNTRUSTED_ISSUER" in bad.stdout


def test_expected_fingerprints_gate_what_is_written(server: ServerProcess, tmp_path: Path) -> None:
    service_kid, issuer_kid = _banner_kids(server)
    wrong = cli("trust", "pin", server.url, "--policy", "p.yaml", "--expect-fingerprint", service_kid, cwd=tmp_path)
    assert wrong.returncode == 1 and f"key {issuer_kid} is not among the expected" in wrong.stderr
    assert "nothing written" in wrong.stderr and not list(tmp_path.iterdir())
    typo = cli(
        "trust",
        "pin",
        server.url,
        "--out",
        "ts.cbor",
        "--expect-fingerprint",
        service_kid,
        "--expect-fingerprint",
        "ab" * 32,
        cwd=tmp_path,
    )
    assert typo.returncode == 1 and f"no key has the expected fingerprint {'ab' * 32}" in typo.stderr
    assert not (tmp_path / "ts.cbor").exists()
    short = cli("trust", "pin", server.url, "--out", "ts.cbor", "--expect-fingerprint", "abc", cwd=tmp_path)
    assert short.returncode == 2 and "not 64 hexadecimal characters" in short.stderr
    right = cli(
        "trust",
        "pin",
        server.url,
        "--policy",
        "p.yaml",
        "--expect-fingerprint",
        service_kid.upper(),
        "--expect-fingerprint",
        issuer_kid,
        cwd=tmp_path,
    )
    assert right.returncode == 0 and "every key matches an expected fingerprint" in right.stdout, right.stderr
    assert load_policy(tmp_path / "p.yaml").issuers


def test_pin_merges_into_an_existing_policy_and_keeps_old_keys(server: ServerProcess, tmp_path: Path) -> None:
    other = keys.generate(algorithms.by_name("ES256"))
    (tmp_path / "other.pem").write_bytes(other.public_pem())
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: other, keys: [{path: other.pem}]}]\n"
        "issuers: [{name: acme, keys: [{path: other.pem}], iss: https://acme.example}]\n"
        "require: {receipts: 1, statements: [push]}\nmode: audit\n"
    )
    retired = keys.generate(algorithms.by_name("ES256"))
    (tmp_path / "wabbit.ts-keys.cbor").write_bytes(keys.dump_cose_key_set([retired]))
    proc = cli("trust", "pin", server.url, "--policy", "p.yaml", "--name", "wabbit", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "wabbit.ts-keys.cbor: 1 key(s) added, 1 kept" in proc.stdout
    doc = yaml.safe_load((tmp_path / "p.yaml").read_text())
    assert [s["name"] for s in doc["transparency_services"]] == ["other", "wabbit"]
    assert [i["name"] for i in doc["issuers"]] == ["acme", "wabbit"] and doc["mode"] == "audit"
    policy = load_policy(tmp_path / "p.yaml")
    wabbit = next(s for s in policy.services if s.name == "wabbit")
    assert pin.fingerprint(retired) in {pin.fingerprint(k) for k in wabbit.keys} and len(wabbit.keys) == 2
    assert "named no issuers" not in proc.stdout
    again = cli("trust", "pin", server.url, "--policy", "p.yaml", "--name", "wabbit", cwd=tmp_path)
    assert again.returncode == 0 and "0 key(s) added, 2 kept" in again.stdout
    assert yaml.safe_load((tmp_path / "p.yaml").read_text()) == doc
    # A policy that trusted any issuer (no `issuers`) is told that it now trusts only the listed ones.
    (tmp_path / "open.yaml").write_text("transparency_services: [{name: other, keys: [{path: other.pem}]}]\n")
    narrowed = cli("trust", "pin", server.url, "--policy", "open.yaml", cwd=tmp_path)
    assert narrowed.returncode == 0 and "named no issuers" in narrowed.stdout, narrowed.stderr
    assert load_policy(tmp_path / "open.yaml").issuers


def test_errors_name_the_fix(server: ServerProcess, tmp_path: Path) -> None:
    down = cli("trust", "pin", f"http://127.0.0.1:{free_port()}", "--out", "k.cbor", cwd=tmp_path)
    assert (
        down.returncode == 2 and "Connection refused" in down.stderr and "is `scitt-oci serve` running" in down.stderr
    )
    assert "Max retries" not in down.stderr and "Traceback" not in down.stderr
    plain = cli("trust", "pin", server.url.replace("http://", "https://"), "--out", "k.cbor", cwd=tmp_path)
    assert plain.returncode == 2 and f"use {server.url}" in plain.stderr
    usage = cli("trust", "pin", server.url, cwd=tmp_path)
    assert usage.returncode == 2 and "--policy" in usage.stderr


def test_wrong_port_and_busy_port(server: ServerProcess, tmp_path: Path) -> None:
    class NotScitt(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(404)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"404 page not found\n")

        def log_message(self, *args: object) -> None:
            pass

    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotScitt)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{other.server_address[1]}"
        wrong = cli("trust", "pin", url, "--out", "k.cbor", cwd=tmp_path)
        assert wrong.returncode == 2 and "HTTP 404" in wrong.stderr
        assert (
            "does not answer like a SCITT transparency service" in wrong.stderr
            and "check the URL and the port" in wrong.stderr
        )
    finally:
        other.shutdown()
    busy = cli("serve", "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{server.port}")
    assert busy.returncode == 3, busy.stderr
    assert f"cannot listen on 127.0.0.1:{server.port}" in busy.stderr and "--listen" in busy.stderr
    assert "Traceback" not in busy.stderr and not (tmp_path / "d").exists()


def test_401_says_which_option_carries_the_token(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", host="0.0.0.0").start()
    try:
        key_file = str(srv.data_dir / "keys" / "issuer.pem")
        made = cli(
            "statement",
            "create",
            "--key",
            key_file,
            "--issuer",
            "https://w.example",
            "--subject",
            "urn:x",
            "--digest",
            DIGEST,
            "--out",
            "s.cose",
            cwd=tmp_path,
        )
        assert made.returncode == 0, made.stderr
        refused = cli("register", "s.cose", "--ts", srv.url, cwd=tmp_path)
        assert refused.returncode == 2 and "HTTP 401" in refused.stderr and "--token-file" in refused.stderr
        ok = cli(
            "register",
            "s.cose",
            "--ts",
            srv.url,
            "--token-file",
            str(srv.data_dir / "registration-token"),
            cwd=tmp_path,
        )
        assert ok.returncode == 0, ok.stderr
    finally:
        srv.stop()


def test_private_ca_needs_ca_file_for_pin_and_audit(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    srv = ServerProcess(tmp_path / "data", args=tls, ca=pki.ca).start()
    url = srv.url
    try:
        untrusted = cli("trust", "pin", url, "--out", "k.cbor", cwd=tmp_path)
        assert untrusted.returncode == 2 and "is not trusted" in untrusted.stderr and "--ca-file" in untrusted.stderr
        ok = cli("trust", "pin", url, "--policy", "p.yaml", "--ca-file", str(pki.ca), cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr
        issuers = load_policy(tmp_path / "p.yaml").issuers
        assert issuers is not None and issuers[0].iss == url
        made = cli(
            "statement",
            "create",
            "--key",
            str(srv.data_dir / "keys" / "issuer.pem"),
            "--issuer",
            url,
            "--profile",
            "push",
            "--image",
            f"r.example/a@{DIGEST}",
            "--out",
            "s.cose",
            cwd=tmp_path,
        )
        assert made.returncode == 0, made.stderr
        assert cli("register", "s.cose", "--ts", url, "--ca-file", str(pki.ca), cwd=tmp_path).returncode == 0
        no_ca = cli("log", "audit", "--ts", url, "--state", "a.json", cwd=tmp_path)
        assert no_ca.returncode == 2 and "--ca-file" in no_ca.stderr
        audit = cli("log", "audit", "--ts", url, "--state", "a.json", "--ca-file", str(pki.ca), cwd=tmp_path)
        assert audit.returncode == 0 and "first audit: 1 entries" in audit.stdout, audit.stderr
        assert json.loads((tmp_path / "a.json").read_text())["tree_size"] == 1
        # The witnessed checkpoint (/tlog/checkpoint) is read with the same --ca-file.
        vkey = requests.get(url + "/tlog/vkey", timeout=5, verify=str(pki.ca)).text.strip()
        (tmp_path / "w.policy").write_text(f"log {vkey}\nquorum none\n")
        args = ["--ts", url, "--state", "a.json", "--witness-policy", "w.policy", "--ca-file", str(pki.ca)]
        witnessed = cli("log", "audit", *args, cwd=tmp_path)
        assert witnessed.returncode == 0 and "witnessed: size 1" in witnessed.stdout, witnessed.stderr
    finally:
        srv.stop()
