"""The README's tour and the docs' worked examples run as written, and the command line end to end
against a running service.

Blocks marked `<!-- runs as written: tests/e2e/test_tour.py -->` are run literally by bash in an
empty temporary folder, with the project's venv first on PATH, each in its own network namespace
(where `unshare` allows it) so the fixed ports the docs use (8700, 5000) are free.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from functools import cache
from pathlib import Path

import requests

from tests.helpers import cli
from tests.serverproc import ServerProcess

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- runs as written: tests/e2e/test_tour.py -->"


def runnable_blocks(doc: str) -> list[str]:
    """The shell code blocks right after the marker, in order."""
    text = (ROOT / doc).read_text()
    blocks = []
    for part in text.split(MARKER)[1:]:
        body = part.lstrip("\n")
        assert body.startswith("```sh\n"), f"{doc}: the marker must come right before a ```sh block"
        blocks.append(body[len("```sh\n") :].split("\n```", 1)[0] + "\n")
    return blocks


@cache
def _isolation() -> list[str]:
    """A command prefix that gives the block its own loopback network, or [] where that is not allowed."""
    unshare, ip = shutil.which("unshare"), shutil.which("ip") or "/usr/sbin/ip"
    if unshare is None or not os.path.exists(ip):
        return []
    prefix = [unshare, "--user", "--map-root-user", "--net", "sh", "-c", f'{ip} link set lo up && exec "$@"', "netns"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, check=False)
    return prefix if probe.returncode == 0 else []


def run_literally(script: str, cwd: Path, timeout: float = 240) -> tuple[int, str, str]:
    """Run `script` with bash in `cwd`, the venv's scripts first on PATH; (exit code, stdout, stderr).
    Every process it left running (services started with `&`) is stopped afterwards."""
    (cwd / "block.sh").write_text(script)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("SCITT_OCI_CONFIG", None)
    with (cwd / "block.out").open("wb") as out, (cwd / "block.err").open("wb") as err:
        proc = subprocess.Popen(
            [*_isolation(), "bash", "block.sh"],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            code = proc.wait(timeout)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return code, (cwd / "block.out").read_text(), (cwd / "block.err").read_text()


def _logs(cwd: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(cwd.glob("*.log")))


def test_readme_tour_runs_as_written_and_ends_valid(tmp_path: Path) -> None:
    tour = runnable_blocks("README.md")[0]
    assert "…" not in tour and "..." not in tour
    code, out, err = run_literally(tour, tmp_path)
    lines = [line for line in out.splitlines() if line.strip()]
    top_level = [line for line in lines if not line.startswith(" ")]
    assert code == 0 and top_level[-1] == "VALID", f"exit {code}\n{out}\n{err}\n{_logs(tmp_path)}"
    assert "trusted as wabbit" in out and "first audit: 1 entries" in out
    assert "error:" not in err and "Traceback" not in err


def test_readme_push_to_admit_runs_as_written(tmp_path: Path) -> None:
    """From a push to ADMIT with only README commands: serve watching docker-registry, skopeo, `trust pin
    --policy`, `verify` ADMIT (exit 0); an image pushed while the service is stopped: REJECT (exit 1)."""
    block = runnable_blocks("README.md")[1]
    code, out, err = run_literally(block, tmp_path)
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    context = f"exit {code}\n{out}\n{err}\n{_logs(tmp_path)}"
    assert code == 0 and "ADMIT" in lines and "REJECT" in lines, context
    admit, reject = lines.index("ADMIT"), lines.index("REJECT")
    assert admit < reject and lines[-1] == "exit code 1", context
    assert lines[lines.index("exit code 0")] and admit < lines.index("exit code 0") < reject, context
    assert "NO_STATEMENTS" in out[out.index("REJECT") :], context
    assert "issuer key" in out and "wrote p.yaml" in out and "Traceback" not in err, context


IMAGE = "sha256:5d8ae6143394fc080642b6caef7c25047c159df2874f0a71adef5c480be0d2f0"


def test_statement_register_verify_audit(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        issuer_key = str(srv.data_dir / "keys" / "issuer.pem")
        made = cli(
            "statement",
            "create",
            "--key",
            issuer_key,
            "--issuer",
            "https://wabbit-networks.example",
            "--subject",
            f"oci://registry.example/net-monitor@{IMAGE}",
            "--digest",
            IMAGE,
            "--media-type",
            "application/vnd.oci.image.manifest.v1+json",
            "--out",
            "push.cose",
            cwd=tmp_path,
        )
        assert made.returncode == 0, made.stderr
        reg = cli("register", "push.cose", "--ts", srv.url, "--out", "push.scitt", cwd=tmp_path)
        assert (
            reg.returncode == 0
            and "registered: leaf index 0 (unsigned, from the proof) of tree size 1 (signed)" in reg.stdout
        ), reg.stderr
        (tmp_path / "ts-keys.cbor").write_bytes(requests.get(srv.url + "/.well-known/scitt-keys", timeout=5).content)
        assert cli("keys", "export", issuer_key, "--format", "pem", "--out", "issuer.pub", cwd=tmp_path).returncode == 0
        (tmp_path / "policy.yaml").write_text(
            "transparency_services: [{name: local, keys: [{path: ts-keys.cbor}]}]\n"
            "issuers: [{name: wabbit, keys: [{path: issuer.pub}], iss: 'https://wabbit-networks.example'}]\n"
        )
        ok = cli("verify", "--statement", "push.scitt", "--trust", "policy.yaml", "--output", "json", cwd=tmp_path)
        report = json.loads(ok.stdout)
        assert ok.returncode == 0 and report["decision"] == "VALID"
        assert report["receipts"][0]["service"] == "local" and report["statement"]["trusted_issuer"] == "wabbit"
        first = cli("log", "audit", "--ts", srv.url, "--state", "audit.json", cwd=tmp_path)
        assert first.returncode == 0 and "first audit: 1 entries" in first.stdout
        cli(
            "statement",
            "create",
            "--key",
            issuer_key,
            "--issuer",
            "https://wabbit-networks.example",
            "--subject",
            "urn:second",
            "--digest",
            "sha256:" + "1" * 64,
            "--out",
            "second.cose",
            cwd=tmp_path,
        )
        assert cli("register", "second.cose", "--ts", srv.url, cwd=tmp_path).returncode == 0
        second = cli("log", "audit", "--ts", srv.url, "--state", "audit.json", cwd=tmp_path)
        assert second.returncode == 0 and "consistent: 1 -> 2 entries" in second.stdout
        state = json.loads((tmp_path / "audit.json").read_text())
        assert state["tree_size"] == 2 and state["keys"]
    finally:
        srv.stop()


def test_audit_detects_a_rewritten_log(tmp_path: Path) -> None:
    """An auditor that saw one log, then talks to a log with a different history, says so and keeps its state."""
    a = ServerProcess(tmp_path / "a").start()
    try:
        issuer = str(a.data_dir / "keys" / "issuer.pem")
        for name, digest in (("x", "2" * 64), ("y", "3" * 64)):
            cli(
                "statement",
                "create",
                "--key",
                issuer,
                "--issuer",
                "https://w",
                "--subject",
                f"urn:{name}",
                "--digest",
                f"sha256:{digest}",
                "--out",
                f"{name}.cose",
                cwd=tmp_path,
            )
        assert cli("register", "x.cose", "--ts", a.url, cwd=tmp_path).returncode == 0
        assert cli("log", "audit", "--ts", a.url, "--state", "audit.json", cwd=tmp_path).returncode == 0
    finally:
        a.stop()
    # The same service identity and key, but its database replaced by one with another first entry.
    (a.data_dir / "log.db").unlink()
    for suffix in ("-wal", "-shm"):
        (a.data_dir / f"log.db{suffix}").unlink(missing_ok=True)
    b = ServerProcess(a.data_dir, port=a.port).start()
    try:
        assert cli("register", "y.cose", "--ts", b.url, cwd=tmp_path).returncode == 0
        assert cli("register", "x.cose", "--ts", b.url, cwd=tmp_path).returncode == 0
        before = (tmp_path / "audit.json").read_text()
        audit = cli("log", "audit", "--ts", b.url, "--state", "audit.json", cwd=tmp_path)
        assert audit.returncode == 1 and "INCONSISTENT" in audit.stdout
        assert (tmp_path / "audit.json").read_text() == before
    finally:
        b.stop()


def test_trust_policy_worked_example_runs_as_written(tmp_path: Path) -> None:
    [example] = runnable_blocks("docs/trust-policy.md")
    code, out, err = run_literally(example, tmp_path)
    context = f"exit {code}\n{out}\n{err}\n{_logs(tmp_path)}"
    top_level = [line for line in out.splitlines() if line.strip() and not line.startswith(" ")]
    assert code == 0 and top_level[-1] == "VALID" and "trusted as wabbit-log" in out, context
    shown = out[out.index("transparency_services:") : out.index("VALID")]
    documented = (ROOT / "docs" / "trust-policy.md").read_text().split("`trust pin` wrote this policy")[1]
    documented = documented.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert shown.strip() == documented.strip(), "docs/trust-policy.md shows another policy than trust pin writes"


def test_watcher_dead_letter_example_runs_as_written(tmp_path: Path) -> None:
    [example] = runnable_blocks("docs/watcher.md")
    code, out, err = run_literally(example, tmp_path)
    context = f"exit {code}\n{out}\n{err}\n{_logs(tmp_path)}"
    assert code == 0 and '"received": 1' in out and '"queued": 1' in out, context
    assert "ghost@sha256:e3b0c442" in out and "1 dead-lettered event(s)" in out.splitlines()[-1], context


def test_no_elided_digests_in_the_docs() -> None:
    docs = [
        "README.md",
        "charts/scitt-oci/README.md",
        "deploy/README.md",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")),
    ]
    assert "docs/profile.md" in docs and "docs/admission.md" in docs
    for doc in docs:
        text = (ROOT / doc).read_text()
        assert "…" not in text, f"{doc} elides something with …"


def test_admission_worked_example_runs_as_written(tmp_path: Path) -> None:
    """docs/admission.md: serve with the admission listener (TLS, a bearer token, trust_self), a watched
    docker-registry, an image pushed with skopeo; the review of the recorded image is allowed, the review
    of a digest never recorded is denied, and a review without the token gets 401."""
    [example] = runnable_blocks("docs/admission.md")
    code, out, err = run_literally(example, tmp_path)
    context = f"exit {code}\n{out}\n{err}\n{_logs(tmp_path)}"
    answers = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert code == 0 and len(answers) == 2, context
    recorded, unrecorded = (a["response"] for a in answers)
    assert recorded["allowed"] is True, context
    assert unrecorded["allowed"] is False and "net-monitor@sha256:" in unrecorded["status"]["message"], context
    assert out.splitlines()[-1] == "without the token: HTTP 401", context
    assert "Traceback" not in err + _logs(tmp_path), context


def _example_policies() -> list[tuple[str, str]]:
    """(where, text) of every trust policy shown in the docs, deploy/ and the chart: YAML blocks and
    files that name `transparency_services`."""
    found = []
    for doc in [
        "README.md",
        "charts/scitt-oci/README.md",
        "deploy/README.md",
        *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "docs").rglob("*.md"))),
    ]:
        for n, block in enumerate((ROOT / doc).read_text().split("```")[1::2]):
            if "transparency_services:" in block:
                found.append((f"{doc} block {n}", block))
    for path in sorted([*(ROOT / "deploy").rglob("*.yaml"), *(ROOT / "charts").rglob("*.yaml")]):
        text = path.read_text()
        if "transparency_services:" in text:
            found.append((str(path.relative_to(ROOT)), text))
    return found


def test_every_example_policy_trusts_issuers() -> None:
    """A policy without `issuers` trusts any statement signer; the examples name the issuer they trust."""
    policies = _example_policies()
    assert any(where.startswith("deploy/trust-policy.example.yaml") for where, _ in policies)
    assert len(policies) >= 5
    for where, text in policies:
        assert "\nissuers:" in text or text.startswith("issuers:"), f"{where}: an example policy without issuers"
