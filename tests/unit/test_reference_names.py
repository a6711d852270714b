"""Registry names normalised for policy rules: one registry has one spelling; two host names are two registries."""

from __future__ import annotations

from pathlib import Path

import pytest

from scitt_oci.oci.reference import normalize_name, normalize_registry
from scitt_oci.verify.trust import parse_policy
from tests.helpers import key


def test_registry_spellings() -> None:
    assert normalize_registry("Registry.Example:443") == "registry.example"
    assert normalize_registry("registry.example:80", "http") == "registry.example"
    assert normalize_registry("registry.example:80") == "registry.example:80"  # https on port 80 is another service
    assert normalize_registry("registry.example:5000") == "registry.example:5000"
    for alias in ("docker.io", "index.docker.io", "registry-1.docker.io", "Index.Docker.IO:443"):
        assert normalize_registry(alias) == "docker.io"
    assert normalize_name("index.docker.io/nginx") == "docker.io/library/nginx"
    assert normalize_name("docker.io/bitnami/nginx") == "docker.io/bitnami/nginx"
    assert normalize_name("docker.io/*") == "docker.io/*"
    assert normalize_name("quay.io/nginx") == "quay.io/nginx"


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    (tmp_path / "ts.pem").write_bytes(key().public_pem())
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: ts, keys: [{path: ts.pem}]}]\n"
        "mode: audit\n"
        "rules:\n"
        "  - {match: '127.0.0.1:5055/acme/*', mode: enforce}\n"
        "  - {match: 'Registry.Example/acme/*', mode: enforce}\n"
        "  - {match: 'docker.io/nginx', mode: enforce}\n"
    )
    return tmp_path / "p.yaml"


@pytest.mark.parametrize(
    "name",
    [
        "127.0.0.1:5055/acme/app",
        "registry.example/acme/app",
        "registry.example:443/acme/app",
        "REGISTRY.EXAMPLE/acme/app",
        "docker.io/nginx",
        "docker.io/library/nginx",
        "index.docker.io/nginx",
        "registry-1.docker.io/library/nginx",
    ],
)
def test_every_spelling_of_a_registry_meets_its_enforce_rule(policy: Path, name: str) -> None:
    parsed = parse_policy(policy.read_bytes(), policy.parent)
    assert parsed.for_repository(name).mode == "enforce"


@pytest.mark.parametrize(
    "name",
    [
        "127.0.0.1:5056/acme/app",  # another port: another registry
        "localhost:5055/acme/app",  # another host name: another registry, even if it resolves alike
        "registry.example:5000/acme/app",
        "docker.io/bitnami/nginx",
    ],
)
def test_other_registries_are_not_matched(policy: Path, name: str) -> None:
    parsed = parse_policy(policy.read_bytes(), policy.parent)
    assert parsed.for_repository(name).mode == "audit"
