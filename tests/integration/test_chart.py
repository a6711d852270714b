"""The Helm chart, rendered by a real `helm`: lint, Kubernetes 1.33 schemas, configuration the service
loads, routes the server has, the sidecar's notification wiring, schema errors, and deploy/ in step."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from scitt_oci.config import Config

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "scitt-oci"
POLICY_FILE = ROOT / "deploy" / "trust-policy.example.yaml"
COMBINATIONS = {
    "standalone": [],
    "sidecar": ["--set", "mode=sidecar"],
    "standalone-registries": [
        "--set",
        "watch.registries[0].url=registry.example.com",
        "--set",
        "watch.pollIntervalSeconds=300",
    ],
    "admission": ["--set", "admission.enabled=true", "--set-file", f"admission.trustPolicy={POLICY_FILE}"],
    "admission-mutate-certmanager": [
        "--set",
        "admission.enabled=true",
        "--set-file",
        f"admission.trustPolicy={POLICY_FILE}",
        "--set",
        "admission.mutate=true",
        "--set",
        "admission.tls.certManager.enabled=true",
        "--set",
        "admission.tls.certManager.issuerRef.name=ca",
    ],
    "postgres-replicas": [
        "--set",
        "storage.type=postgres",
        "--set",
        "storage.postgres.existingSecret=pg",
        "--set",
        "storage.replicas=3",
        "--set",
        "keys.existingSecret=keys",
        "--set",
        "podDisruptionBudget.enabled=true",
    ],
    "sidecar-admission-trust-self": ["--set", "mode=sidecar", "--set", "admission.enabled=true"],
    "registry-credentials": [
        "--set",
        "watch.registries[0].url=myacr.azurecr.io",
        "--set",
        "watch.registries[0].username=00000000-0000-0000-0000-000000000000",
        "--set",
        "watch.registries[0].passwordSecret.name=acr-push",
        "--set",
        "watch.registries[1].url=registry.example.com",
        "--set",
        "watch.registries[1].dockerConfigSecret=regcred",
    ],
    "admission-client-auth": [
        "--set",
        "admission.enabled=true",
        "--set",
        "admission.clientAuth.caSecret=apiserver-ca",
        "--set",
        "admission.clientAuth.tokenSecret=apiserver-token",
        "--set",
        "admission.deployLog=true",
        "--set",
        "networkPolicy.admissionFrom[0].ipBlock.cidr=10.0.0.10/32",
    ],
    "sidecar-admission-extras": [
        "--set",
        "mode=sidecar",
        "--set",
        "admission.enabled=true",
        "--set-file",
        f"admission.trustPolicy={POLICY_FILE}",
        "--set",
        "serviceMonitor.enabled=true",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "keys.existingSecret=my-keys",
        "--set",
        "admission.deployLog=true",
        "--set",
        "admission.clientAuth.caSecret=apiserver-ca",
    ],
}
SIGNATURES = {  # signature trust with its material from ConfigMaps and Secrets the operator creates
    "notation": [
        {
            "name": "wabbit-networks",
            "ca": [{"configMap": "notation-roots", "key": "wabbit-ca.pem"}],
            "tsa": [{"configMap": "notation-roots", "key": "tsa-root.pem"}],
            "trustedIdentities": ["x509.subject: C=US, ST=WA, L=Seattle, O=wabbit-networks.io"],
        }
    ],
    "cosignKeys": [{"name": "acme-release-key", "key": {"secret": "cosign-pub", "key": "cosign.pub"}}],
    "sigstore": [
        {
            "name": "public-good",
            "trustedRoot": "public-good",
            "identities": [{"san": "release@acme.example", "issuer": "https://accounts.google.com"}],
        },
        {
            "name": "acme-sigstore",
            "trustedRoot": {"configMap": "acme-sigstore", "key": "trusted_root.json"},
            "identities": [
                {"san": "https://github.com/acme/*", "issuer": "https://token.actions.githubusercontent.com"}
            ],
        },
    ],
}
COMBINATIONS["sidecar-admission-signatures"] = [
    "--set",
    "mode=sidecar",
    "--set",
    "admission.enabled=true",
    "--set-json",
    f"signatures={json.dumps(SIGNATURES)}",
]
NOT_IN_KUBERNETES = {"ServiceMonitor", "Certificate"}  # CRDs (Prometheus operator, cert-manager)


def helm() -> str:
    found = os.environ.get("SCITT_OCI_HELM") or shutil.which("helm") or str(ROOT / ".tools" / "helm")
    if not Path(found).exists():
        pytest.fail("helm is not installed: scripts/test puts it in .tools/helm")
    return found


def render(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [helm(), "template", "scitt", str(CHART), "--namespace", "scitt", *args],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_lint_and_kubernetes_1_33_schemas(name: str) -> None:
    args = COMBINATIONS[name]
    lint = subprocess.run([helm(), "lint", str(CHART), "--strict", *args], capture_output=True, text=True, check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    docs = render(*args)
    for doc in docs:
        if doc["kind"] in NOT_IN_KUBERNETES:
            continue
        kubernetes_validate.validate(doc, "1.33.0", strict=True)


@pytest.mark.parametrize("name", sorted(COMBINATIONS))
def test_the_rendered_configuration_loads_and_the_pod_is_hardened(name: str) -> None:
    docs = render(*COMBINATIONS[name])
    config_map = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "scitt-scitt-oci")
    config = Config.model_validate(yaml.safe_load(config_map["data"]["config.yaml"]))
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert (
        pod["securityContext"]["runAsNonRoot"] is True
        and pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    )
    for container in pod["containers"] + pod.get("initContainers", []):
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
        assert sc["allowPrivilegeEscalation"] is False
    scitt = next(c for c in pod["containers"] if c["name"] == "scitt-oci")
    assert scitt["ports"][0]["containerPort"] == config.port
    assert scitt["readinessProbe"]["httpGet"]["path"] == "/readyz"
    if config.storage.backend == "postgres":
        dsn = next(e for e in scitt["env"] if e["name"] == "SCITT_OCI_STORAGE__POSTGRES_DSN")
        assert dsn["valueFrom"]["secretKeyRef"] == {"name": "pg", "key": "dsn"} and deployment["spec"]["replicas"] == 3
        assert config.ts_key is not None and config.tlog.note_key is not None  # replicas share keys from the Secret
    mounts = {m["mountPath"] for m in scitt["volumeMounts"]}
    assert "/data" in mounts and (config.admission.trust_policy is None or "/etc/scitt-oci/trust" in mounts)


def test_webhook_paths_and_ports_are_the_servers() -> None:
    from scitt_oci.server.admission import admission_routes

    served = {r.path for r in admission_routes(None)}  # type: ignore[arg-type]  # paths only; nothing is called
    docs = render(*COMBINATIONS["admission-mutate-certmanager"])
    service = next(d for d in docs if d["kind"] == "Service")
    config = _config(docs)
    admission_port = next(p for p in service["spec"]["ports"] if p["name"] == "admission")
    assert (
        config.admission.listen is not None
        and int(config.admission.listen.rpartition(":")[2]) == admission_port["port"]
    )
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        hook = next(d for d in docs if d["kind"] == kind)["webhooks"][0]
        assert hook["clientConfig"]["service"]["path"] in served
        assert hook["clientConfig"]["service"]["port"] == admission_port["port"]
        assert "scitt" in hook["namespaceSelector"]["matchExpressions"][0]["values"]  # never its own namespace
        assert hook["timeoutSeconds"] > 0


def _config(docs: list[dict[str, Any]]) -> Config:
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "scitt-scitt-oci")
    return Config.model_validate(yaml.safe_load(cm["data"]["config.yaml"]))


def test_sidecar_with_admission_and_no_policy_trusts_itself_and_keeps_notifications_plain() -> None:
    docs = render(*COMBINATIONS["sidecar-admission-trust-self"])
    config = _config(docs)
    assert config.admission.trust_policy is None and config.admission.trust_self
    assert config.tls_cert is None  # the main listener stays plain: the registry notifies it over loopback
    assert config.admission.listen == "0.0.0.0:8443" and config.admission.tls_cert is not None
    registry_config = yaml.safe_load(
        next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-registry"))["data"][
            "config.yml"
        ]
    )
    assert (
        registry_config["notifications"]["endpoints"][0]["url"]
        == f"http://127.0.0.1:{config.port}/webhooks/distribution"
    )
    assert not any(d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-trust") for d in docs)
    scitt = next(
        c
        for c in next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["containers"]
        if c["name"] == "scitt-oci"
    )
    assert scitt["readinessProbe"]["httpGet"]["scheme"] == "HTTP"


def test_trusted_proxies_reach_the_service_configuration() -> None:
    """Behind an ingress the service must know whose X-Forwarded-For to believe (per-client rate limits and
    the plain-HTTP guard judge the client's address); the chart had no way to say so."""
    assert _config(render()).http.trusted_proxies == []
    config = _config(render("--set", "trustedProxies={10.0.0.0/8,192.0.2.1}")).http
    assert config.trusted_proxies == ["10.0.0.0/8", "192.0.2.1"] and not config.allow_plain_http_credentials
    both = _config(render("--set", "trustedProxies={10.0.0.0/8}", "--set", "allowPlainHttpCredentials=true")).http
    assert both.allow_plain_http_credentials and both.trusted_proxies == ["10.0.0.0/8"]
    with pytest.raises(ValueError, match="'ingress' is not an IP address or network"):
        _config(render("--set", "trustedProxies={ingress}"))


def test_admission_port_is_open_only_to_whom_the_values_name() -> None:
    def admission_rules(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        policy = next(d for d in docs if d["kind"] == "NetworkPolicy")
        return [r for r in policy["spec"]["ingress"] if any(p["port"] == 8443 for p in r["ports"])]

    assert admission_rules(render(*COMBINATIONS["sidecar-admission-trust-self"])) == []
    rules = admission_rules(render(*COMBINATIONS["admission-client-auth"]))
    assert len(rules) == 1 and rules[0]["from"] == [{"ipBlock": {"cidr": "10.0.0.10/32"}}]


def test_admission_client_auth_and_registry_credentials_come_from_secrets() -> None:
    docs = render(*COMBINATIONS["admission-client-auth"])
    config = _config(docs)
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert config.admission.deploy_log and config.admission.client_ca is not None and config.admission.token_files
    assert volumes[mounts[str(config.admission.client_ca.parent)]]["secret"]["secretName"] == "apiserver-ca"
    assert volumes[mounts[str(config.admission.token_files[0].parent)]]["secret"]["secretName"] == "apiserver-token"

    docs = render(*COMBINATIONS["registry-credentials"])
    config = _config(docs)
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    acr, other = config.watch.registries
    assert acr.username == "00000000-0000-0000-0000-000000000000" and acr.password_file is not None
    assert volumes[mounts[str(acr.password_file.parent)]]["secret"]["secretName"] == "acr-push"
    assert acr.password_file.name == "password"
    assert other.docker_config is not None and other.docker_config.name == ".dockerconfigjson"
    assert volumes[mounts[str(other.docker_config.parent)]]["secret"]["secretName"] == "regcred"


def test_signature_trust_is_passed_with_its_files_from_configmaps_and_secrets() -> None:
    docs = render(*COMBINATIONS["sidecar-admission-signatures"])
    config = _config(docs)
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    scitt = next(c for c in pod["containers"] if c["name"] == "scitt-oci")
    mounts = {m["mountPath"]: m for m in scitt["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def source(path: Path) -> tuple[str, str, str]:
        """(kind, name, key) of the ConfigMap or Secret a configured file comes from."""
        mount = mounts[str(path.parent)]
        volume = volumes[mount["name"]]
        assert mount["readOnly"] is True
        if "configMap" in volume:
            return "ConfigMap", volume["configMap"]["name"], path.name
        return "Secret", volume["secret"]["secretName"], path.name

    [notation] = config.signatures.notation
    assert notation.name == "wabbit-networks" and notation.signing_authority == []
    assert notation.trusted_identities == ["x509.subject: C=US, ST=WA, L=Seattle, O=wabbit-networks.io"]
    assert [source(p) for p in notation.ca + notation.tsa] == [
        ("ConfigMap", "notation-roots", "wabbit-ca.pem"),
        ("ConfigMap", "notation-roots", "tsa-root.pem"),
    ]
    [cosign] = config.signatures.cosign_keys
    assert cosign.name == "acme-release-key" and source(cosign.key) == ("Secret", "cosign-pub", "cosign.pub")
    public, private = config.signatures.sigstore
    assert public.trusted_root == "public-good" and public.identities[0].san == "release@acme.example"
    assert source(Path(private.trusted_root)) == ("ConfigMap", "acme-sigstore", "trusted_root.json")
    assert private.identities[0].issuer == "https://token.actions.githubusercontent.com"
    signature_mounts = [m for m in mounts if m.startswith("/etc/scitt-oci/signatures/")]
    assert len(signature_mounts) == 3  # notation-roots is mounted once for both of its files
    assert not any(
        d["kind"] in ("ConfigMap", "Secret") and d["metadata"]["name"] in ("notation-roots", "cosign-pub") for d in docs
    )  # the chart names them; the operator creates them

    plain = _config(render(*COMBINATIONS["standalone"]))
    assert plain.signatures.notation == [] and plain.signatures.cosign_keys == [] and plain.signatures.sigstore == []


def test_the_readmes_signature_values_render_and_load(tmp_path: Path) -> None:
    readme = (CHART / "README.md").read_text()
    values = readme.split("cat > signatures.yaml <<'YAML'\n", 1)[1].split("\nYAML\n", 1)[0]
    (tmp_path / "signatures.yaml").write_text(values)
    config = _config(render("-f", str(tmp_path / "signatures.yaml")))
    assert [n.name for n in config.signatures.notation] == ["wabbit-networks"]
    assert [k.name for k in config.signatures.cosign_keys] == ["acme-release-key"]
    assert [s.trusted_root for s in config.signatures.sigstore] == ["public-good"]


def test_helm_generated_ca_matches_the_serving_certificate() -> None:
    import base64

    from cryptography import x509

    docs = render(*COMBINATIONS["admission"])
    tls = next(d for d in docs if d["kind"] == "Secret" and d["type"] == "kubernetes.io/tls")
    hook = next(d for d in docs if d["kind"] == "ValidatingWebhookConfiguration")["webhooks"][0]
    ca = x509.load_pem_x509_certificate(base64.b64decode(hook["clientConfig"]["caBundle"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(tls["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert "scitt-scitt-oci.scitt.svc" in names


def test_sidecar_registry_notifies_the_sidecar_with_the_secret() -> None:
    import base64

    docs = render(*COMBINATIONS["sidecar"])
    registry_config = yaml.safe_load(
        next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-registry"))["data"][
            "config.yml"
        ]
    )
    endpoint = registry_config["notifications"]["endpoints"][0]
    config = Config.model_validate(
        yaml.safe_load(
            next(d for d in docs if d["metadata"]["name"] == "scitt-scitt-oci" and d["kind"] == "ConfigMap")["data"][
                "config.yaml"
            ]
        )
    )
    assert endpoint["url"] == f"http://127.0.0.1:{config.port}/webhooks/distribution"
    assert endpoint["headers"]["Authorization"] == ["Bearer __WEBHOOK_SECRET__"]  # filled in by the init container
    assert config.watch.registries[0].url == "127.0.0.1:5000" and config.watch.registries[0].insecure
    secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-webhook"))
    assert len(base64.b64decode(secret["data"]["webhook-secret"])) >= 32
    assert str(config.watch.webhook_secret_file).endswith("/webhook-secret")
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    assert "__WEBHOOK_SECRET__" in init["args"][0] and {c["name"] for c in pod["containers"]} == {
        "scitt-oci",
        "registry",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "mode=gateway"], "value must be one of 'sidecar', 'standalone'"),
        (
            ["--set", "admission.enabled=true", "--set", "admission.deployLog=true"],
            "only for an authenticated API server",
        ),
        (
            ["--set", "watch.registries[0].url=r.example", "--set", "watch.registries[0].passwordSecret.name=s"],
            "username",
        ),
        (["--set", "image.digest=sha256:nothex"], "/image/digest"),
        (["--set", "admission.timeoutSeconds=60"], "/admission/timeoutSeconds"),
        (["--set", "surprise=1"], "additional properties 'surprise' not allowed"),
        (["--set", "storage.type=postgres", "--set", "keys.existingSecret=k"], "needs storage.postgres.existingSecret"),
        (["--set", "storage.replicas=2"], "needs storage.type=postgres"),
        (
            [
                "--set-json",
                'signatures.cosignKeys=[{"name": "k", "key": {"secret": "s", "configMap": "c", "key": "k.pub"}}]',
            ],
            "/signatures/cosignKeys/0/key",
        ),
        (
            ["--set-json", 'signatures.cosignKeys=[{"name": "k", "key": {"secret": "s", "key": ".."}}]'],
            "/signatures/cosignKeys/0/key/key",
        ),
        (
            ["--set-json", 'signatures.notation=[{"name": "n", "ca": [{"configMap": "r", "key": "ca.pem"}]}]'],
            "missing property 'trustedIdentities'",
        ),
        (
            [
                "--set-json",
                'signatures.sigstore=[{"name": "s", "trustedRoot": "/etc/root.json", "identities": [{"san": "a", "issuer": "b"}]}]',
            ],
            "/signatures/sigstore/0/trustedRoot",
        ),
    ],
)
def test_bad_values_fail_with_the_schemas_message(args: list[str], message: str) -> None:
    proc = subprocess.run([helm(), "template", "scitt", str(CHART), *args], capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


def test_deploy_manifests_are_up_to_date() -> None:
    proc = subprocess.run(
        ["bash", str(ROOT / "deploy" / "render.sh"), "--check"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HELM": helm()},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_is_multi_stage_non_root_and_pinned() -> None:
    text = (ROOT / "Dockerfile").read_text()
    bases = [line.split()[1] for line in text.splitlines() if line.startswith("FROM ")]
    assert len(bases) == 2 and all(":" in b and not b.endswith(":latest") for b in bases)
    assert "USER 10001:10001" in text and "--from=build" in text
