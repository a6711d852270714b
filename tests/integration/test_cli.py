"""The command line end to end: keys, statements, inspect, verify, exit codes, and hostile input."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scitt_oci.cli import main
from scitt_oci.cose import keys
from scitt_oci.scitt import statement, transparent
from tests.helpers import MemoryLog, cli, key

IMAGE = "sha256:" + "ab" * 32


def test_keys_generate_writes_0600_and_prints_kid(tmp_path: Path) -> None:
    out = tmp_path / "issuer.pem"
    proc = cli("keys", "generate", "--alg", "ES384", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    loaded = keys.load_private_pem(out.read_bytes())
    assert f"kid: {loaded.kid.hex()}" in proc.stdout and "alg: ES384" in proc.stdout
    assert "PRIVATE" not in proc.stdout
    again = cli("keys", "generate", "--out", str(out))
    assert again.returncode == 2 and "exists; pass --force" in again.stderr


def test_create_inspect_and_verify_a_statement(tmp_path: Path) -> None:
    assert cli("keys", "generate", "--out", str(tmp_path / "issuer.pem")).returncode == 0
    artifact = tmp_path / "sbom.json"
    artifact.write_text('{"spdxVersion": "SPDX-2.3"}')
    made = cli(
        "statement",
        "create",
        "--key",
        str(tmp_path / "issuer.pem"),
        "--issuer",
        "https://wabbit.example",
        "--subject",
        f"oci://r.example/app@{IMAGE}",
        "--file",
        str(artifact),
        "--media-type",
        "application/spdx+json",
        "--out",
        str(tmp_path / "s.cose"),
    )
    assert made.returncode == 0, made.stderr
    inspected = cli("statement", "inspect", str(tmp_path / "s.cose"), "--output", "json")
    view = json.loads(inspected.stdout)
    assert view["protected"]["payload-hash-alg (258)"] == -16
    assert view["protected"]["preimage-content-type (259)"] == "application/spdx+json"
    assert view["protected"]["CWT Claims (15)"]["iss (1)"] == "https://wabbit.example"
    assert "alg (1): ES256 (-7)" in cli("statement", "inspect", str(tmp_path / "s.cose")).stdout

    # Register with an in-memory log, then verify offline with detached and embedded receipts.
    signed = statement.parse((tmp_path / "s.cose").read_bytes())
    log = MemoryLog(key(slot=5))
    r = log.receipt(log.add(signed))
    (tmp_path / "r.cose").write_bytes(r)
    (tmp_path / "ts.jwks.json").write_text(json.dumps({"keys": [log.signing_key.to_jwk()]}))
    assert (
        cli(
            "keys", "export", str(tmp_path / "issuer.pem"), "--format", "pem", "--out", str(tmp_path / "issuer.pub")
        ).returncode
        == 0
    )
    (tmp_path / "policy.yaml").write_text(
        "transparency_services: [{name: ts, keys: [{path: ts.jwks.json}]}]\nissuers: [{name: w, keys: [{path: issuer.pub}]}]\n"
    )
    ok = cli(
        "verify",
        "--statement",
        str(tmp_path / "s.cose"),
        "--receipt",
        str(tmp_path / "r.cose"),
        "--trust",
        str(tmp_path / "policy.yaml"),
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "VALID" in ok.stdout and "from ts (vds 1, entry rule statement" in ok.stdout
    (tmp_path / "ts.cose").write_bytes(transparent.add_receipts(signed, [r]))
    assert "receipts" in json.loads(cli("statement", "inspect", str(tmp_path / "ts.cose"), "--output", "json").stdout)
    ok2 = cli(
        "verify", "--statement", str(tmp_path / "ts.cose"), "--trust", str(tmp_path / "policy.yaml"), "--output", "json"
    )
    assert ok2.returncode == 0 and json.loads(ok2.stdout)["decision"] == "VALID"
    bad = cli("verify", "--statement", str(tmp_path / "s.cose"), "--trust", str(tmp_path / "policy.yaml"))
    assert bad.returncode == 1 and "NO_RECEIPTS" in bad.stdout


def test_usage_and_unreadable_input_exit_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "junk").write_bytes(b"\x00\x01\x02")
    cases = [
        ("statement", "inspect", str(tmp_path / "missing.cose")),
        ("statement", "inspect", str(tmp_path / "junk")),
        ("verify", "--statement", str(tmp_path / "junk"), "--trust", str(tmp_path / "missing.yaml")),
        (
            "statement",
            "create",
            "--key",
            str(tmp_path / "junk"),
            "--issuer",
            "i",
            "--subject",
            "s",
            "--digest",
            IMAGE,
            "--out",
            str(tmp_path / "o"),
        ),
        (
            "statement",
            "create",
            "--key",
            str(tmp_path / "junk"),
            "--issuer",
            "i",
            "--subject",
            "s",
            "--out",
            str(tmp_path / "o"),
        ),
        ("keys", "generate", "--alg", "RS1", "--out", str(tmp_path / "k")),
    ]
    for args in cases:
        proc = cli(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.strip(), args


def test_digest_flag_binds_the_statement_to_an_image(tmp_path: Path) -> None:
    assert cli("keys", "generate", "--out", str(tmp_path / "k.pem")).returncode == 0
    made = cli(
        "statement",
        "create",
        "--key",
        str(tmp_path / "k.pem"),
        "--issuer",
        "https://w",
        "--subject",
        "urn:x",
        "--digest",
        "sha256:" + "zz" * 32,
        "--out",
        str(tmp_path / "s.cose"),
    )
    assert made.returncode == 2 and "64 lowercase hex" in made.stderr


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=400))
def test_random_input_to_inspect_and_verify_never_crashes(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "ts.pem").write_bytes(key().public_pem())
    (tmp_path / "p.yaml").write_text("transparency_services: [{name: t, keys: [{path: ts.pem}]}]\n")
    (tmp_path / "in.cose").write_bytes(data)
    runner = CliRunner()
    for args in (
        ["statement", "inspect", str(tmp_path / "in.cose")],
        ["verify", "--statement", str(tmp_path / "in.cose"), "--trust", str(tmp_path / "p.yaml")],
        [
            "verify",
            "--statement",
            str(tmp_path / "in.cose"),
            "--receipt",
            str(tmp_path / "in.cose"),
            "--trust",
            str(tmp_path / "p.yaml"),
        ],
    ):
        result = runner.invoke(main, args)
        assert result.exit_code in (0, 1, 2), (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)


@pytest.mark.parametrize("command", [[], ["keys"], ["statement"], ["verify"]])
def test_help_teaches(command: list[str]) -> None:
    proc = cli(*command, "--help")
    assert proc.returncode == 0 and "Usage:" in proc.stdout


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_transparent_statements_through_the_cli_fail_cleanly(tmp_path: Path, data: st.DataObject) -> None:
    log = MemoryLog(key(slot=5))
    s = statement.build(key(), issuer="https://w", subject="urn:x", payload=b"payload")
    blob = bytearray(transparent.add_receipts(s, [log.receipt(log.add(s))]))
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    (tmp_path / "ts.pem").write_bytes(log.signing_key.public_pem())
    (tmp_path / "p.yaml").write_text("transparency_services: [{name: t, keys: [{path: ts.pem}]}]\n")
    (tmp_path / "in.cose").write_bytes(bytes(blob))
    result = CliRunner().invoke(
        main,
        ["verify", "--statement", str(tmp_path / "in.cose"), "--trust", str(tmp_path / "p.yaml"), "--output", "json"],
    )
    assert result.exit_code in (0, 1, 2)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code == 0:
        # Still valid only if the signed parts survived: the mutation hit bytes no signature covers.
        assert statement.parse(bytes(blob)).entry() == s.entry()
