"""The rendered chart boots: render it per mode, lay its ConfigMaps and Secrets out where the Pod would
mount them (under a temporary root), start `scitt-oci serve` with the rendered configuration (and, in
sidecar mode, docker-registry with its rendered configuration after running the rendered init
container's script), push an image, and see it recorded and admitted over the rendered TLS setup.

Only the listening ports are renumbered (each rendered port to a free loopback port, the same way in
every file), so that tests can run side by side; everything else is as rendered."""

from __future__ import annotations

import base64
import http.client
import json
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.tlog import note
from tests.helpers import cli
from tests.integration.test_chart import render
from tests.registryproc import RegistryProcess, oci_layout, skopeo_push
from tests.serverproc import ServerProcess, free_port

API_SERVER_TOKEN = "api-server-token-for-the-boot-test"
EXISTING_SECRETS: dict[str, dict[str, str]] = {"apiserver-token": {"token": API_SERVER_TOKEN}}
EXISTING_CONFIG_MAPS: dict[str, dict[str, str]] = {}  # ConfigMaps the values name and the operator creates


@dataclass
class Rendered:
    root: Path  # stands for the Pod's filesystem root
    docs: list[dict[str, Any]]
    ports: dict[int, int]  # rendered port -> the free loopback port used here

    def local(self, text: str) -> str:
        """A rendered text with mount paths under `root` and ports renumbered."""
        text = re.sub(
            r"(?<![\w./])/(data|etc/scitt-oci|registry-config|registry-template|var/lib/registry)\b",
            lambda m: str(self.root) + "/" + m.group(1),
            text,
        )
        text = text.replace("0.0.0.0:", "127.0.0.1:")
        for old, new in self.ports.items():
            text = re.sub(rf"(?<=[:])({old})\b", str(new), text)
        return text

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        return next((d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name), None)

    def materialise(self, container: dict[str, Any], volumes: dict[str, dict[str, Any]]) -> None:
        """Write each volume the container mounts where it mounts it, from the rendered objects."""
        for mount in container.get("volumeMounts", []):
            where = Path(self.local(mount["mountPath"]))
            where.mkdir(parents=True, exist_ok=True, mode=0o700)
            volume = volumes[mount["name"]]
            files: dict[str, bytes] = {}
            items = None
            if "secret" in volume:
                name = volume["secret"]["secretName"]
                secret = self.find("Secret", name)
                if secret is not None:
                    files = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
                else:  # an existing Secret the values name: the test provides it
                    files = {k: v.encode() for k, v in EXISTING_SECRETS[name].items()}
                items = volume["secret"].get("items")
            elif "configMap" in volume:
                cm = self.find("ConfigMap", volume["configMap"]["name"])
                if cm is not None:
                    files = {k: self.local(v).encode() for k, v in (cm.get("data") or {}).items()}
                    files |= {k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()}
                else:  # an existing ConfigMap the values name: the test provides it
                    files = {k: v.encode() for k, v in EXISTING_CONFIG_MAPS[volume["configMap"]["name"]].items()}
            mode = volume.get("secret", {}).get("defaultMode")  # as the kubelet sets it
            for key, data in files.items():
                path = next((i["path"] for i in items if i["key"] == key), None) if items else key
                if path is not None:
                    (where / path).write_bytes(data)
                    if mode is not None:
                        (where / path).chmod(mode)


@dataclass
class Booted:
    rendered: Rendered
    server: ServerProcess
    registry: RegistryProcess
    registry_name: str  # as the configuration names it (host:port)


def _registry_from(rendered: Rendered, pod: dict[str, Any], volumes: dict[str, dict[str, Any]]) -> RegistryProcess:
    """The sidecar registry: the init container's script run as rendered, then docker-registry with its output."""
    init = pod["initContainers"][0]
    rendered.materialise(init, volumes)
    script = rendered.local(init["args"][0])
    subprocess.run([sys.executable, "-c", script], check=True)
    registry_container = next(c for c in pod["containers"] if c["name"] == "registry")
    config_path = Path(rendered.local(registry_container["args"][0]))
    Path(rendered.local("/var/lib/registry")).mkdir(parents=True, exist_ok=True)
    port = rendered.ports[registry_container["ports"][0]["containerPort"]]

    class Rendered_(RegistryProcess):
        def config(self) -> str:
            return config_path.read_text()

    return Rendered_(rendered.root / "registry-process", port=port)


def boot(tmp_path: Path, *args: str, mode: str) -> Iterator[Booted]:
    registry_port = free_port()
    extra = (
        []
        if mode == "sidecar"
        else [
            "--set",
            f"watch.registries[0].url=127.0.0.1:{registry_port}",
            "--set",
            "watch.registries[0].insecure=true",
        ]
    )
    docs = render("--set", f"mode={mode}", *extra, *args)
    rendered = Rendered(tmp_path / "pod", docs, {8700: free_port(), 8443: free_port(), 5000: registry_port})
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    scitt = next(c for c in pod["containers"] if c["name"] == "scitt-oci")
    rendered.materialise(scitt, volumes)
    config_file = Path(rendered.local(scitt["args"][2]))
    config = yaml.safe_load(config_file.read_text())
    if mode == "sidecar":
        registry = _registry_from(rendered, pod, volumes)
    else:  # a registry outside the chart, notifying the service with the rendered webhook secret
        secret_file = Path(config["watch"]["webhook_secret_file"])
        main = rendered.ports[8700]
        registry = RegistryProcess(
            tmp_path / "registry",
            port=registry_port,
            secret=secret_file.read_text().strip(),
            notify_url=f"http://127.0.0.1:{main}/webhooks/distribution",
        )
    registry.start()
    server = ServerProcess(
        Path(config["data_dir"]), port=int(config["listen"].rpartition(":")[2]), args=["--config", str(config_file)]
    )
    server.start()
    try:
        yield Booted(rendered, server, registry, config["watch"]["registries"][0]["url"])
    finally:
        server.stop()
        registry.stop()


def _push_and_see_recorded(b: Booted, tmp_path: Path) -> str:
    digest = oci_layout(tmp_path / "image", "boot")
    skopeo_push(tmp_path / "image", b.registry, "acme/app", "v1")
    client = RegistryClient(RegistrySettings.for_url(b.registry.url))
    deadline = time.monotonic() + 30
    while not client.referrers("acme/app", digest, mf.STATEMENT_ARTIFACT) and time.monotonic() < deadline:
        time.sleep(0.05)  # recorded asynchronously: polled, bounded
    assert client.referrers("acme/app", digest, mf.STATEMENT_ARTIFACT), b.server.output()
    return digest


class _ServiceConnection(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1, verifying the certificate for the Service's DNS name (as the API server does)."""

    def __init__(self, port: int, server_name: str, context: ssl.SSLContext) -> None:
        super().__init__("127.0.0.1", port, context=context, timeout=10)
        self.server_name = server_name
        self.ctx = context

    def connect(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        self.sock = self.ctx.wrap_socket(sock, server_hostname=self.server_name)


def _admission(b: Booted, body: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    hook = next(d for d in b.rendered.docs if d["kind"] == "ValidatingWebhookConfiguration")["webhooks"][0]
    service = hook["clientConfig"]["service"]
    context = ssl.create_default_context(cadata=base64.b64decode(hook["clientConfig"]["caBundle"]).decode())
    conn = _ServiceConnection(
        b.rendered.ports[service["port"]], f"{service['name']}.{service['namespace']}.svc", context
    )
    conn.request("POST", service["path"], json.dumps(body), {"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    return r.status, json.loads(r.read())


def _review(image: str) -> dict[str, Any]:
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "boot",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "namespace": "prod",
            "name": "p",
            "operation": "CREATE",
            "object": {"spec": {"containers": [{"name": "c", "image": image}]}},
        },
    }


@pytest.mark.parametrize("mode", ["sidecar", "standalone"])
def test_the_rendered_chart_records_without_admission(tmp_path: Path, mode: str) -> None:
    for b in boot(tmp_path, mode=mode):
        _push_and_see_recorded(b, tmp_path)
        assert not any(d["kind"] == "ValidatingWebhookConfiguration" for d in b.rendered.docs)


def test_keys_from_an_existing_secret_sign_receipts_and_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keys.existingSecret`: the receipts and the /tlog checkpoints are signed with the Secret's keys (the
    checkpoint key too: replicas that each made their own would sign /tlog under different keys)."""
    ts, issuer, note_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
        ed25519.Ed25519PrivateKey.generate(),
    )
    files = {
        name: k.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()
        for name, k in (("ts.pem", ts), ("issuer.pem", issuer), ("note.pem", note_key))
    }
    monkeypatch.setitem(EXISTING_SECRETS, "scitt-keys", files)
    for b in boot(tmp_path, "--set", "keys.existingSecret=scitt-keys", mode="standalone"):
        _push_and_see_recorded(b, tmp_path)
        checkpoint = note.parse(requests.get(b.server.url + "/tlog/checkpoint", timeout=10).content)
        [signature] = checkpoint.signatures
        public = note_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        verifier = note.Verifier(signature.name, note.ED25519, public)
        assert note.verify(checkpoint, [verifier]) == [verifier]
        served = requests.get(b.server.url + "/.well-known/scitt-keys", timeout=10).content
        ts_public = ts.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        assert ts_public[1:33] in served  # the receipt key served is the Secret's (its x coordinate)


@pytest.mark.parametrize("mode", ["sidecar", "standalone"])
def test_the_rendered_chart_records_and_admits_with_no_policy_given(tmp_path: Path, mode: str) -> None:
    for b in boot(
        tmp_path,
        "--set",
        "admission.enabled=true",
        "--set",
        "admission.clientAuth.tokenSecret=apiserver-token",
        "--set",
        "admission.deployLog=true",
        mode=mode,
    ):
        digest = _push_and_see_recorded(b, tmp_path)
        token = {"Authorization": f"Bearer {API_SERVER_TOKEN}"}
        status, out = _admission(b, _review(f"{b.registry_name}/acme/app@{digest}"), token)
        assert status == 200 and out["response"]["allowed"] is True, out  # trusted: recorded by this very instance
        status, out = _admission(b, _review(f"{b.registry_name}/acme/app@sha256:{'5' * 64}"), token)
        assert (
            status == 200
            and out["response"]["allowed"] is False
            and "NO_STATEMENTS" in out["response"]["status"]["message"]
        )
        status, out = _admission(b, _review(f"{b.registry_name}/acme/app@{digest}"))
        assert status == 401  # the rendered client authentication is in force


def test_the_rendered_signature_trust_verifies_a_signature(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`signatures:` values with a cosign key from a Secret and Notation roots from a ConfigMap: the rendered
    configuration loads, and a key-signed cosign signature pushed next to the image is recorded as verified,
    with the anchor the values name."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from tests import sigstore_double
    from tests.e2e.test_signatures import _alpine_cert
    from tests.registryproc import push_cosign_signature

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    monkeypatch.setitem(EXISTING_SECRETS, "cosign-pub", {"cosign.pub": public.decode()})
    monkeypatch.setitem(
        EXISTING_CONFIG_MAPS,
        "notation-roots",
        {"alpine.pem": _alpine_cert().public_bytes(serialization.Encoding.PEM).decode()},
    )
    values = {
        "cosignKeys": [{"name": "acme-release-key", "key": {"secret": "cosign-pub", "key": "cosign.pub"}}],
        "notation": [
            {
                "name": "alpine-notary",
                "ca": [{"configMap": "notation-roots", "key": "alpine.pem"}],
                "trustedIdentities": ["*"],
            }
        ],
    }
    for b in boot(tmp_path, "--set-json", f"signatures={json.dumps(values)}", mode="standalone"):
        digest = _push_and_see_recorded(b, tmp_path)
        client = RegistryClient(RegistrySettings.for_url(b.registry.url))
        payload = sigstore_double.simple_signing(digest, "acme/app")
        push_cosign_signature(client, "acme/app", digest, key.sign(payload, ec.ECDSA(hashes.SHA256())), "acme/app")
        deadline = time.monotonic() + 30
        while len(client.referrers("acme/app", digest, mf.STATEMENT_ARTIFACT)) < 2:
            assert time.monotonic() < deadline, b.server.output()[-3000:]
            time.sleep(0.05)  # recorded asynchronously: polled, bounded
        history = cli("history", f"{b.registry_name}/acme/app@{digest}", "--registry-insecure", "--output", "json")
        assert history.returncode == 0, history.stderr
        [signature] = [r["details"] for r in json.loads(history.stdout)["records"] if r["kind"] == "signature"]
        assert signature["format"] == "cosign" and signature["verified"] is True, signature
        assert signature["anchor"] == "acme-release-key"
