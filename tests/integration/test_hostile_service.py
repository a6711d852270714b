"""The CLI against hostile input and a hostile transparency service: clean errors, fast, bounded memory."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from scitt_oci.cli import main
from scitt_oci.cose import headers, keys, sign1
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.scitt import statement
from scitt_oci.server.admission import Admission
from tests.helpers import cbor_bomb, key
from tests.hostileserver import HostileServer, Route, endless
from tests.registryproc import RegistryProcess

COSE = "application/cose"
CBOR = "application/cbor"
BOMBS = [pytest.param(229, False, id="229B"), pytest.param(1024, True, id="1KiB-sign1")]


def run(*args: str) -> tuple[Result, float]:
    started = time.perf_counter()
    result = CliRunner().invoke(main, list(args))
    return result, time.perf_counter() - started


def _statement_file(tmp_path: Path) -> Path:
    s = statement.hash_envelope_statement(
        key(), issuer="https://wabbit.example", subject="urn:hostile", digest=hashlib.sha256(b"hostile").digest()
    )
    path = tmp_path / "s.cose"
    path.write_bytes(s.encode())
    return path


def _service_keys() -> bytes:
    return keys.dump_cose_key_set([key(slot=5)])


@pytest.mark.parametrize(("size", "as_sign1"), BOMBS)
def test_bomb_files_give_a_clean_error_fast(tmp_path: Path, size: int, as_sign1: bool) -> None:
    bomb = tmp_path / "bomb.cose"
    bomb.write_bytes(cbor_bomb(size, sign1=as_sign1))
    (tmp_path / "ts.pem").write_bytes(key(slot=5).public_pem())
    policy = tmp_path / "p.yaml"
    policy.write_text(f"transparency_services: [{{name: t, keys: [{{path: {tmp_path / 'ts.pem'}}}]}}]\n")
    inspected, took = run("statement", "inspect", str(bomb))
    assert inspected.exit_code == 2 and "tag 28 (shareable value)" in inspected.output and took < 1
    verified, took = run("verify", "--statement", str(bomb), "--trust", str(policy))
    assert verified.exit_code == 1 and "MALFORMED" in verified.output and "tag 28" in verified.output and took < 1


@pytest.mark.parametrize(("size", "as_sign1"), BOMBS)
def test_register_against_a_service_answering_a_bomb(tmp_path: Path, size: int, as_sign1: bool) -> None:
    routes = {
        "POST /entries": (201, COSE, cbor_bomb(size, sign1=as_sign1)),
        "GET /.well-known/scitt-keys": (200, CBOR, _service_keys()),
    }
    with HostileServer(routes) as ts:
        result, took = run("register", str(_statement_file(tmp_path)), "--ts", ts.url)
    assert result.exit_code == 2 and took < 1
    assert "the service's receipt does not verify" in result.output and "tag 28" in result.output
    assert not (tmp_path / "s.scitt").exists()


@pytest.mark.parametrize(("size", "as_sign1"), BOMBS)
def test_trust_pin_and_log_audit_against_a_service_answering_a_bomb(tmp_path: Path, size: int, as_sign1: bool) -> None:
    with HostileServer({"GET /.well-known/scitt-keys": (200, CBOR, cbor_bomb(size, sign1=as_sign1))}) as ts:
        pinned, took = run("trust", "pin", ts.url, "--out", str(tmp_path / "ts.cbor"))
    assert pinned.exit_code == 2 and took < 1
    assert "not a COSE Key Set" in pinned.output and "tag 28" in pinned.output
    routes = {
        "GET /.well-known/scitt-keys": (200, CBOR, _service_keys()),
        "GET /checkpoint": (200, COSE, cbor_bomb(size, sign1=as_sign1)),
    }
    with HostileServer(routes) as ts:
        audited, took = run("log", "audit", "--ts", ts.url, "--state", str(tmp_path / "audit.json"))
    assert audited.exit_code == 2 and took < 1 and "tag 28" in audited.output
    assert not (tmp_path / "audit.json").exists()


def _push_image(client: RegistryClient, seed: str) -> Descriptor:
    config = client.push_blob("app", seed.encode())
    doc = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": len(seed)},
            "layers": [],
        }
    )
    digest, _ = client.push_manifest("app", doc, mf.OCI_MANIFEST)
    return Descriptor(mf.OCI_MANIFEST, digest, len(doc))


def _review(ref: str) -> bytes:
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "prod",
            "name": "p",
            "operation": "CREATE",
            "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": ref}]}},
        },
    }
    return json.dumps(review).encode()


def _crit_statement() -> bytes:
    """A statement whose crit lists an array: a 500 at admission and Gatekeeper before."""
    protected = {headers.KID: key().kid, headers.CWT_CLAIMS: {1: "https://w.example", 2: "urn:c"}, headers.CRIT: [[1]]}
    return sign1.sign(key(), protected, hashlib.sha256(b"c").digest()).encode()


def test_hostile_statements_attached_as_image_referrers_are_rejected_fast(tmp_path: Path) -> None:
    registry = RegistryProcess(tmp_path / "registry").start()
    try:
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        bombed, crit = _push_image(client, "{}"), _push_image(client, '{"c":1}')
        for size, as_sign1 in ((229, False), (1024, True)):
            bomb = cbor_bomb(size, sign1=as_sign1)
            artifact = mf.statement_artifact(bombed, bomb, kind="push", issuer="i", service="s", created=size)
            client.attach("app", bombed, artifact, [bomb])
        hostile = _crit_statement()
        client.attach(
            "app",
            crit,
            mf.statement_artifact(crit, hostile, kind="push", issuer="i", service="s", created=1),
            [hostile],
        )
        (tmp_path / "ts.pem").write_bytes(key(slot=5).public_pem())
        policy = tmp_path / "p.yaml"
        policy.write_text(f"transparency_services: [{{name: t, keys: [{{path: {tmp_path / 'ts.pem'}}}]}}]\n")
        controller = Admission(policy, {registry.host: client}, deadline=10)

        for image, expected in ((bombed, "tag 28"), (crit, "crit (2) must list header labels")):
            ref = f"{registry.host}/app@{image.digest}"
            verified, took = run("verify", ref, "--trust", str(policy), "--registry-insecure")
            assert verified.exit_code == 1 and "REJECT" in verified.output and took < 5, verified.output
            assert expected in verified.output

            started = time.perf_counter()
            answer = asyncio.run(controller.review(_review(ref), mutate=False))
            assert time.perf_counter() - started < 5
            assert answer["response"]["allowed"] is False
            assert "MALFORMED" in answer["response"]["status"]["message"]

            provider = json.dumps(
                {
                    "apiVersion": "externaldata.gatekeeper.sh/v1beta1",
                    "kind": "ProviderRequest",
                    "request": {"keys": [ref]},
                }
            ).encode()
            [item] = asyncio.run(controller.gatekeeper(provider))["response"]["items"]
            assert item["value"]["valid"] is False and item["value"]["reasons"][0]["code"] == "MALFORMED"
    finally:
        registry.stop()


# ----------------------------------------------------------------------------- answers too large to read

ENDLESS_ROUTES = ["GET /.well-known/scitt-keys", "GET /checkpoint", "POST /entries"]


@pytest.mark.parametrize("declared", [False, True], ids=["streamed", "content-length"])
def test_the_cli_reads_a_service_answer_within_a_size_limit(tmp_path: Path, declared: bool) -> None:
    """A terabyte answer is refused after about a MiB (1 MiB is the limit) with a clear error; it is never buffered."""
    extra = {"Content-Length": str(1 << 40)} if declared else {}
    keyset = (200, CBOR, _service_keys())

    def serve(route: str) -> HostileServer:
        routes: dict[str, Route] = {"GET /.well-known/scitt-keys": keyset, route: (200, COSE, endless(), extra)}
        if route == "POST /entries":
            routes["POST /entries"] = (201, COSE, endless(), extra)
        return HostileServer(routes)

    commands = {
        "GET /.well-known/scitt-keys": lambda url: ["trust", "pin", url, "--out", str(tmp_path / "k.cbor")],
        "GET /checkpoint": lambda url: ["log", "audit", "--ts", url, "--state", str(tmp_path / "a.json")],
        "POST /entries": lambda url: ["register", str(_statement_file(tmp_path)), "--ts", url],
    }
    for route in ENDLESS_ROUTES:
        with serve(route) as ts:
            result, took = run(*commands[route](ts.url))
        assert result.exit_code == 2 and took < 10, (route, result.output)
        assert "at most 1048576 are read from a transparency service" in result.output, (route, result.output)
        assert ts.sent.get(route, 0) < 64 << 20, route  # what the server managed to send before the client hung up


def test_a_service_answer_within_the_limit_is_read(tmp_path: Path) -> None:
    body = _service_keys()
    with HostileServer({"GET /.well-known/scitt-keys": (200, CBOR, iter([body[:5], body[5:]]))}) as ts:
        result, _took = run("trust", "pin", ts.url, "--out", str(tmp_path / "k.cbor"))
    assert (
        result.exit_code == 0 and keys.load_cose_key_set((tmp_path / "k.cbor").read_bytes())[0].kid == key(slot=5).kid
    )
