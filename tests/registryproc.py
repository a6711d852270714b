"""Start Debian's CNCF Distribution (`docker-registry`) for tests, with notifications to our service,
and build small OCI image layouts for skopeo to push."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient
from scitt_oci.oci.manifest import Descriptor
from tests import sigstore_double
from tests.serverproc import ServerProcess, free_port


def require(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/bin/{binary}" if os.path.exists(f"/usr/bin/{binary}") else None)
    if path is None:
        pytest.fail(f"{binary} is not installed: .ci/run installs docker-registry and skopeo (apt-get)")
    return path


@dataclass
class RegistryProcess:
    root: Path
    notify_url: str | None = None
    secret: str | None = None
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    tls: tuple[Path, Path] | None = None  # (certificate, key) to serve HTTPS
    extra: str = ""  # more top-level configuration (YAML), e.g. an auth section

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log: {level: warn}",
            f"storage: {{filesystem: {{rootdirectory: {self.root / 'store'}}}, delete: {{enabled: true}}}}",
            f"http: {{addr: {self.host}"
            + (f", tls: {{certificate: {self.tls[0]}, key: {self.tls[1]}}}" if self.tls else "")
            + "}",
        ]
        if self.extra:
            lines.append(self.extra.rstrip("\n"))
        if self.notify_url:
            lines += [
                "notifications:",
                "  events: {includereferences: true}",
                "  endpoints:",
                "    - name: scitt-oci",
                f"      url: {self.notify_url}",
                f"      headers: {{Authorization: [Bearer {self.secret}]}}",
                "      timeout: 2s",
                "      threshold: 5",
                "      backoff: 200ms",
                "      ignore: {mediatypes: [application/octet-stream], actions: [pull]}",
            ]
        return "\n".join(lines) + "\n"

    def start(self) -> RegistryProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "config.yml").write_text(self.config())
        self.proc = subprocess.Popen(
            [require("docker-registry"), "serve", str(self.root / "config.yml")],
            stdout=(self.root / "registry.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                with warnings.catch_warnings():  # readiness only: the tests verify TLS themselves
                    warnings.simplefilter("ignore")
                    ready = requests.get(self.url + "/v2/", timeout=1, verify=False).status_code in (200, 401)
                if ready:
                    return self
            except requests.RequestException:
                time.sleep(0.05)
        raise RuntimeError("docker-registry did not start: " + (self.root / "registry.log").read_text())

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)


def _blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _image(layout: Path, seed: str, arch: str = "amd64") -> dict[str, object]:
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        content = f"hello from {seed} {arch}\n".encode()
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    layer = gzip.compress(tar_bytes.getvalue(), mtime=0)
    config = json.dumps(
        {
            "architecture": arch,
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(tar_bytes.getvalue()).hexdigest()]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(layout, config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(layout, layer)}],
        }
    ).encode()
    return {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **_blob(layout, manifest),
        "platform": {"architecture": arch, "os": "linux"},
    }


def oci_layout(path: Path, seed: str, *, multi_arch: bool = False) -> str:
    """An OCI image layout at `path` holding one image (or a two-platform index); returns its digest."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    if multi_arch:
        index = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": [_image(path, seed, "amd64"), _image(path, seed, "arm64")],
            }
        ).encode()
        top = {"mediaType": "application/vnd.oci.image.index.v1+json", **_blob(path, index)}
    else:
        top = _image(path, seed)
        top.pop("platform")
    top["annotations"] = {"org.opencontainers.image.ref.name": "v1"}
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return str(top["digest"])


def skopeo_push(
    layout: Path, registry: RegistryProcess, repo: str, tag: str = "v1", *, all_platforms: bool = False
) -> None:
    args = [require("skopeo"), "copy", "--dest-tls-verify=false"]
    if all_platforms:
        args.append("--all")
    proc = subprocess.run(
        [*args, f"oci:{layout}:v1", f"docker://{registry.host}/{repo}:{tag}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def push_cosign_signature(
    client: RegistryClient, repo: str, subject: str, signature: bytes, reference: str, **annotations: str
) -> None:
    """A cosign classic signature as cosign pushes it: a simple-signing payload for `subject` naming
    `reference`, the signature as an annotation, tagged sha256-<hex>.sig."""
    payload = sigstore_double.simple_signing(subject, reference)
    layer = client.push_blob(repo, payload)
    config = client.push_blob(repo, b"{}")
    manifest = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                    "digest": layer,
                    "size": len(payload),
                    "annotations": {
                        "dev.cosignproject.cosign/signature": base64.b64encode(signature).decode(),
                        **annotations,
                    },
                }
            ],
        }
    )
    client.push_manifest(repo, manifest, mf.OCI_MANIFEST, mf.fallback_tag(subject) + ".sig")


def notation_manifest(client: RegistryClient, repo: str, image: Descriptor) -> bytes:
    """A Notation signature artifact about `image` (its COSE envelope blob pushed, the manifest not)."""
    envelope = client.push_blob(repo, b"\xd2\x84\x40\xa0\xf6\x40")
    return mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": mf.NOTATION_SIGNATURE,
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": "application/cose", "digest": envelope, "size": 6}],
            "subject": image.to_json(),
            "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": '["abcdef"]'},
        }
    )


def wait_statements(
    client: RegistryClient,
    repo: str,
    digest: str,
    count: int = 1,
    *,
    timeout: float = 30,
    output: Callable[[], str] = str,
) -> list[Descriptor]:
    """The statement referrers of `digest` once at least `count` are attached, polling the registry for
    the watcher's asynchronous outcome; fails after `timeout` seconds, showing the end of `output()`."""
    deadline = time.monotonic() + timeout
    while len(found := client.referrers(repo, digest, mf.STATEMENT_ARTIFACT)) < count:
        assert time.monotonic() < deadline, f"{len(found)} statements on {digest}, expected {count}: {output()[-3000:]}"
        time.sleep(0.05)  # bounded by the deadline
    return found


def watched_registry(root: Path, server: ServerProcess, secret: str, prefix: str = "") -> RegistryProcess:
    """A started registry whose Distribution notifications go to `server`, signed with `secret` (written
    to <prefix>secret), and `server`'s arguments set to watch it (the server is not started)."""
    (root / f"{prefix}secret").write_text(secret)
    registry = RegistryProcess(
        root / f"{prefix}registry", notify_url=f"{server.url}/webhooks/distribution", secret=secret
    ).start()
    server.args = [
        "--registry",
        registry.host,
        "--registry-insecure",
        "--webhook-secret-file",
        str(root / f"{prefix}secret"),
    ]
    return registry
