"""Admission end to end: images recorded by the watcher in a real registry, then reviewed by the
webhooks, the Gatekeeper provider and `scitt-oci verify IMAGE@DIGEST`."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from scitt_oci.cose import keys
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.oci.http import Response
from tests.helpers import cli
from tests.pki import Pki, make_pki
from tests.registryproc import RegistryProcess, oci_layout, skopeo_push, wait_statements
from tests.serverproc import ServerProcess, free_port, placeholder_keys

SECRET = "admission-test-secret-0123456789"
API_SERVER_TOKEN = "api-server-token-0123456789abcdef"


@dataclass
class Cluster:
    server: ServerProcess
    registry: RegistryProcess
    root: Path
    recorded: str  # digest of an image on record
    unrecorded: str  # digest of an image pushed while nothing watched
    pki: Pki
    admission_port: int

    @property
    def admission_url(self) -> str:
        return f"https://127.0.0.1:{self.admission_port}"

    def post(
        self, route: str, body: object, *, authenticate: bool = True, headers: dict[str, str] | None = None
    ) -> requests.Response:
        """POST to the admission listener as the API server would: TLS, with its client certificate."""
        cert = (str(self.pki.client_cert), str(self.pki.client_key)) if authenticate else None
        return requests.post(
            f"{self.admission_url}/{route}", json=body, cert=cert, verify=str(self.pki.ca), timeout=10, headers=headers
        )


def _write_policy(root: Path, extra: str = "") -> None:
    (root / "policy.yaml").write_text(
        "transparency_services: [{name: local, keys: [{path: ts.cbor}]}]\n"
        "issuers: [{name: operator, keys: [{path: issuer.pem}]}]\n" + extra
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("adm")
    (root / "secret").write_text(SECRET)
    (root / "api-token").write_text(API_SERVER_TOKEN)
    pki = make_pki(root / "pki")
    admission_port = free_port()
    # An image pushed before anything watched the registry: present, but not on record.
    quiet = RegistryProcess(root / "registry").start()
    unrecorded = oci_layout(root / "old", "old")
    skopeo_push(root / "old", quiet, "acme/app", "old")
    quiet.stop()
    server = ServerProcess(
        root / "data",
        env={
            "SCITT_OCI_ADMISSION__NEGATIVE_CACHE_SECONDS": "0",
            "SCITT_OCI_ADMISSION__DEPLOY_LOG": "true",
            "SCITT_OCI_ADMISSION__CLUSTER": "acme-prod",
            "SCITT_OCI_ADMISSION__LISTEN": f"127.0.0.1:{admission_port}",
            "SCITT_OCI_ADMISSION__TLS_CERT": str(pki.server_cert),
            "SCITT_OCI_ADMISSION__TLS_KEY": str(pki.server_key),
            "SCITT_OCI_ADMISSION__CLIENT_CA": str(pki.ca),
            "SCITT_OCI_ADMISSION__TOKEN_FILES": json.dumps([str(root / "api-token")]),
        },
    )
    registry = RegistryProcess(
        root / "registry", notify_url=f"{server.url}/webhooks/distribution", secret=SECRET, port=quiet.port
    ).start()
    # The policy needs the service's keys, which exist once it has started: bootstrap with a placeholder.
    placeholder_keys(root)
    _write_policy(root)
    server.args = [
        "--registry",
        registry.host,
        "--registry-insecure",
        "--webhook-secret-file",
        str(root / "secret"),
        "--trust",
        str(root / "policy.yaml"),
    ]
    server.start()
    pin = subprocess.run(
        [sys.executable, "-m", "scitt_oci", "trust", "pin", server.url, "--out", str(root / "ts.cbor")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert pin.returncode == 0 and "receipt key" in pin.stdout, pin.stderr
    issuer = keys.load_private_pem((server.data_dir / "keys" / "issuer.pem").read_bytes())
    (root / "issuer.pem").write_bytes(issuer.public_pem())
    recorded = oci_layout(root / "new", "new")
    skopeo_push(root / "new", registry, "acme/app", "v1")
    client = RegistryClient(RegistrySettings.for_url(registry.url))
    wait_statements(client, "acme/app", recorded, output=server.output)  # the watcher records it asynchronously
    yield Cluster(server, registry, root, recorded, unrecorded, pki, admission_port)
    server.stop()
    registry.stop()


def _pod(image: str | list[str], namespace: str = "prod", name: str = "p") -> dict[str, object]:
    """A review of pod `name` with one container "c" running `image`, or containers c0, c1, ... running each of a list."""
    if isinstance(image, str):
        containers = [{"name": "c", "image": image}]
    else:
        containers = [{"name": f"c{i}", "image": one} for i, one in enumerate(image)]
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "uid-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": namespace,
            "name": name,
            "operation": "CREATE",
            "object": {"metadata": {"name": "p"}, "spec": {"containers": containers}},
        },
    }


def _review(c: Cluster, image: str, route: str = "validate", namespace: str = "prod") -> dict[str, Any]:
    """The AdmissionReview's response, as JSON the server sent (so its values are untyped)."""
    r = c.post(f"admission/{route}", _pod(image, namespace))
    assert r.status_code == 200, r.text
    response = r.json()["response"]
    assert isinstance(response, dict), r.text
    return response


def test_admission_decisions(cluster: Cluster) -> None:
    host = cluster.registry.host
    ok = _review(cluster, f"{host}/acme/app@{cluster.recorded}")
    assert ok["allowed"] is True and ok["uid"] == "uid-1", ok
    again = _review(cluster, f"{host}/acme/app@{cluster.recorded}")
    assert again["allowed"] is True
    metrics = requests.get(cluster.server.url + "/metrics", timeout=5).text
    assert 'scitt_admission_decisions_total{cached="true",decision="admit"} 1.0' in metrics
    no_record = _review(cluster, f"{host}/acme/app@{cluster.unrecorded}")
    assert no_record["allowed"] is False and "NO_STATEMENTS" in no_record["status"]["message"]
    tag = _review(cluster, f"{host}/acme/app:v1")
    assert (
        tag["allowed"] is False
        and "TAG_REFERENCE" in tag["status"]["message"]
        and "@sha256:" in tag["status"]["message"]
    )
    elsewhere = _review(cluster, "docker.io/library/busybox@sha256:" + "1" * 64)
    assert elsewhere["allowed"] is False and "REGISTRY_UNREACHABLE" in elsewhere["status"]["message"]
    assert _review(cluster, f"{host}/acme/app@{cluster.unrecorded}", namespace="kube-system")["allowed"] is True


def test_mutation_pins_tags_to_digests(cluster: Cluster) -> None:
    out = _review(cluster, f"{cluster.registry.host}/acme/app:v1", route="mutate")
    assert out["allowed"] is True and out["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(out["patch"]))
    assert patch == [
        {
            "op": "replace",
            "path": "/spec/containers/0/image",
            "value": f"{cluster.registry.host}/acme/app@{cluster.recorded}",
        }
    ]


def test_gatekeeper_provider(cluster: Cluster) -> None:
    host = cluster.registry.host
    body = {
        "apiVersion": "externaldata.gatekeeper.sh/v1beta1",
        "kind": "ProviderRequest",
        "request": {
            "keys": [f"{host}/acme/app@{cluster.recorded}", f"{host}/acme/app@{cluster.unrecorded}", "nginx:1"]
        },
    }
    r = cluster.post("gatekeeper/verify", body)
    items = {i["key"]: i for i in r.json()["response"]["items"]}
    assert items[f"{host}/acme/app@{cluster.recorded}"]["value"]["allowed"] is True
    assert items[f"{host}/acme/app@{cluster.unrecorded}"]["value"]["allowed"] is False
    assert "TAG_REFERENCE" in items["nginx:1"]["error"]


def test_cli_verify_image(cluster: Cluster) -> None:
    host = cluster.registry.host

    def verify(image: str) -> subprocess.CompletedProcess[str]:
        return cli(
            "verify", image, "--trust", str(cluster.root / "policy.yaml"), "--registry-insecure", "--output", "json"
        )

    ok = verify(f"{host}/acme/app@{cluster.recorded}")
    assert ok.returncode == 0 and json.loads(ok.stdout)["decision"] == "ADMIT"
    bad = verify(f"{host}/acme/app@{cluster.unrecorded}")
    assert bad.returncode == 1 and json.loads(bad.stdout)["reasons"][0]["code"] == "NO_STATEMENTS"
    tag = verify(f"{host}/acme/app:v1")
    assert tag.returncode == 0 and "is a tag, resolved to" in tag.stderr


def test_policy_change_empties_the_cache_and_audit_mode_warns(cluster: Cluster) -> None:
    host = cluster.registry.host
    assert _review(cluster, f"{host}/acme/app@{cluster.recorded}")["allowed"] is True
    _write_policy(cluster.root, "require: {signatures: [{format: notation}]}\n")
    denied = _review(cluster, f"{host}/acme/app@{cluster.recorded}")
    assert denied["allowed"] is False and "MISSING_STATEMENT" in denied["status"]["message"]
    _write_policy(cluster.root, "require: {signatures: [{format: notation}]}\nmode: audit\n")
    audited = _review(cluster, f"{host}/acme/app@{cluster.recorded}")
    assert audited["allowed"] is True and any("MISSING_STATEMENT" in w for w in audited["warnings"])
    _write_policy(cluster.root)


def test_registry_unreachable_within_the_deadline(cluster: Cluster) -> None:
    host = cluster.registry.host
    cluster.registry.stop()
    try:
        fresh = "sha256:" + "7" * 64  # not cached
        down = _review(cluster, f"{host}/acme/app@{fresh}")
        assert down["allowed"] is False and "REGISTRY_UNREACHABLE" in down["status"]["message"]
        _write_policy(cluster.root, "mode: audit\n")
        audited = _review(cluster, f"{host}/acme/app@{fresh}")
        assert audited["allowed"] is True and any("REGISTRY_UNREACHABLE" in w for w in audited["warnings"])
    finally:
        _write_policy(cluster.root)
        cluster.registry.start()


def test_admitted_images_get_a_deploy_statement(cluster: Cluster) -> None:
    from scitt_oci.scitt import profile, transparent

    host = cluster.registry.host
    review = _pod(f"{host}/acme/app@{cluster.recorded}", namespace="payments", name="api-7f9c")
    assert cluster.post("admission/validate", review).json()["response"]["allowed"]
    client = RegistryClient(RegistrySettings.for_url(cluster.registry.url))
    deadline = time.monotonic() + 30
    deploys: list[profile.OciEvent] = []
    while not deploys and time.monotonic() < deadline:
        for d in client.referrers("acme/app", cluster.recorded, mf.STATEMENT_ARTIFACT):
            if d.annotations.get(mf.ANN_KIND) == "deploy":
                fetched = client.manifest("acme/app", d.digest)
                assert fetched is not None
                blob = client.blob("acme/app", mf.parse(fetched[0], fetched[1]).layers[0].digest)
                assert blob is not None
                event = profile.read_event(transparent.parse(blob).statement)
                if event.detail("namespace") == "payments":
                    deploys.append(event)
        time.sleep(0.05)  # recorded asynchronously, off the admission path
    assert len(deploys) == 1 and deploys[0].kind is profile.Kind.DEPLOY
    assert dict(deploys[0].details) == {"cluster": "acme-prod", "namespace": "payments", "workload": "Pod/api-7f9c"}


@pytest.mark.parametrize("route", ["admission/validate", "admission/mutate", "gatekeeper/verify"])
def test_bad_requests_get_a_named_4xx(cluster: Cluster, route: str) -> None:
    url = f"{cluster.admission_url}/{route}"
    cert = (str(cluster.pki.client_cert), str(cluster.pki.client_key))
    json_type = {"Content-Type": "application/json"}
    cases = [
        (b"{}", {"Content-Type": "text/plain"}, 415, "application/json"),
        (b"not json", json_type, 400, "not JSON"),
        (b"[" * 100_000, json_type, 400, "too deeply"),
        (b"x" * (3 * 1024 * 1024 + 1), json_type, 413, "at most"),
    ]
    for body, headers, status, words in cases:
        r = requests.post(url, data=body, headers=headers, timeout=10, cert=cert, verify=str(cluster.pki.ca))
        assert r.status_code == status, (body[:10], r.text)
        assert words in r.text, (body[:10], r.text)


def _deploy_namespaces(c: Cluster) -> list[str]:
    from scitt_oci.scitt import profile, transparent

    client = RegistryClient(RegistrySettings.for_url(c.registry.url))
    out = []
    for d in client.referrers("acme/app", c.recorded, mf.STATEMENT_ARTIFACT):
        if d.annotations.get(mf.ANN_KIND) == "deploy":
            fetched = client.manifest("acme/app", d.digest)
            assert fetched is not None
            blob = client.blob("acme/app", mf.parse(fetched[0], fetched[1]).layers[0].digest)
            assert blob is not None
            out.append(profile.read_event(transparent.parse(blob).statement).detail("namespace") or "")
    return out


def test_admission_is_not_served_on_the_main_listener(cluster: Cluster) -> None:
    image = f"{cluster.registry.host}/acme/app@{cluster.recorded}"
    for route in ("admission/validate", "admission/mutate", "gatekeeper/verify"):
        r = requests.post(f"{cluster.server.url}/{route}", json=_pod(image), timeout=10)
        assert r.status_code == 404, (route, r.status_code, r.text)
    assert requests.get(cluster.admission_url + "/healthz", verify=str(cluster.pki.ca), timeout=5).status_code == 200


def test_only_authenticated_validating_reviews_record_deploys(cluster: Cluster, tmp_path: Path) -> None:
    image = f"{cluster.registry.host}/acme/app@{cluster.recorded}"
    # Anyone who reaches the port without the API server's certificate or token is refused before the body is read.
    anonymous = cluster.post("admission/validate", _pod(image, "intruders"), authenticate=False)
    assert anonymous.status_code == 401 and "client certificate" in anonymous.json()["detail"]
    wrong = cluster.post(
        "admission/validate",
        _pod(image, "intruders"),
        authenticate=False,
        headers={"Authorization": "Bearer not-the-api-server-token"},
    )
    assert wrong.status_code == 401
    assert cluster.post("gatekeeper/verify", {}, authenticate=False).status_code == 401
    # A certificate from another CA fails the TLS handshake.
    rogue = make_pki(tmp_path / "rogue", "rogue")
    with pytest.raises(requests.exceptions.ConnectionError):  # TLS 1.3: a handshake alert or a reset
        requests.post(
            f"{cluster.admission_url}/admission/validate",
            json=_pod(image, "intruders"),
            cert=(str(rogue.client_cert), str(rogue.client_key)),
            verify=str(cluster.pki.ca),
            timeout=10,
        )
    # The mutating webhook decides but never records: it runs before the final decision and may be reinvoked.
    mutated = cluster.post("admission/mutate", _pod(image, "mutated"))
    assert mutated.json()["response"]["allowed"] is True
    # The bearer token is the alternative to the certificate; it records like the certificate does.
    by_token = cluster.post(
        "admission/validate",
        _pod(image, "by-token"),
        authenticate=False,
        headers={"Authorization": f"Bearer {API_SERVER_TOKEN}"},
    )
    assert by_token.json()["response"]["allowed"] is True
    deadline = time.monotonic() + 30
    while "by-token" not in _deploy_namespaces(cluster) and time.monotonic() < deadline:
        time.sleep(0.05)  # recorded asynchronously; polled until the authenticated one is on record
    recorded = _deploy_namespaces(cluster)
    assert "by-token" in recorded
    assert "intruders" not in recorded and "mutated" not in recorded, recorded


def test_reviews_are_bounded(cluster: Cluster) -> None:
    host = cluster.registry.host
    many = _pod([f"{host}/acme/app@sha256:{i:064x}" for i in range(20_000)])
    started = time.monotonic()
    out = cluster.post("admission/validate", many).json()["response"]
    assert out["allowed"] is False and "REVIEW_LIMIT" in out["status"]["message"], out
    assert "20000 images" in out["status"]["message"] and time.monotonic() - started < 5
    keys = [f"{host}/acme/app@sha256:{i:064x}" for i in range(300)]
    r = cluster.post(
        "gatekeeper/verify",
        {"apiVersion": "externaldata.gatekeeper.sh/v1beta1", "kind": "ProviderRequest", "request": {"keys": keys}},
    )
    assert r.status_code == 400 and "at most 256" in r.text


def test_registry_reads_per_review_are_bounded(cluster: Cluster) -> None:
    import asyncio

    from scitt_oci.server.admission import Admission

    calls: list[str] = []

    class CountingClient(RegistryClient):
        def request(
            self, method: str, path: str, *, scope: str = "", ok: tuple[int, ...] = (200,), **kw: Any
        ) -> Response:
            calls.append(path)
            return super().request(method, path, scope=scope, ok=ok, **kw)

    client = CountingClient(RegistrySettings.for_url(cluster.registry.url))
    controller = Admission(
        cluster.root / "policy.yaml", {cluster.registry.host: client}, max_registry_requests=5, negative_ttl=0
    )
    host = cluster.registry.host
    review = _pod([f"{host}/acme/app@sha256:{i:064x}" for i in range(40)])
    out = asyncio.run(controller.review(json.dumps(review).encode(), mutate=False))["response"]
    assert out["allowed"] is False and "REVIEW_LIMIT" in out["status"]["message"], out
    assert 0 < len(calls) <= 5, len(calls)
