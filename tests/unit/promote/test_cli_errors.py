"""`scitt-oci promote` refuses bad arguments with a named error (exit 2), before contacting anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from scitt_oci.cli import main
from tests.helpers import key

D = "sha256:" + "ab" * 32


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    (tmp_path / "ts.pem").write_bytes(key().public_pem())
    (tmp_path / "p.yaml").write_text("transparency_services: [{name: t, keys: [{path: ts.pem}]}]\n")
    return tmp_path / "p.yaml"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1:1/app:1.0", "127.0.0.1:2/app:1.0"], "must name a digest"),
        ([f"127.0.0.1:1/app@{D}", f"127.0.0.1:2/app@{D}"], "takes a tag at most"),
        ([f"127.0.0.1:1/app@{D}", "127.0.0.1:2/app:1.0"], "needs --ts, --issuer-key and --issuer"),
        ([f"127.0.0.1:1/app@{D}", "oci:{tmp}/out:1.0", "--ts", "http://127.0.0.1:1"], "nothing is counter-registered"),
        (["oci:{tmp}/missing:1.0", "127.0.0.1:2/app:1.0"], "is not an OCI image layout"),
        ([f"Not A Ref@{D}", "127.0.0.1:2/app:1.0"], "image reference"),
    ],
)
def test_bad_arguments(policy: Path, tmp_path: Path, args: list[str], message: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = CliRunner().invoke(main, ["promote", *args, "--trust", str(policy), "--registry-insecure"])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_insecure_is_for_loopback_only(policy: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        [
            "promote",
            f"registry.example/app@{D}",
            f"oci:{tmp_path}/out:1",
            "--trust",
            str(policy),
            "--registry-insecure",
        ],
    )
    assert result.exit_code == 2 and "loopback registries only" in result.output
