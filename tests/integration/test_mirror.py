"""`scitt-oci mirror` against real `scitt-oci serve` sources: byte-identical tiles after a live follow,
SIGKILL and resume, and a forked source (same note key, another history) refused with evidence kept;
bounded memory over large entries, and a bounded pass against a key holder claiming 2^40 entries."""

from __future__ import annotations

import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from scitt_oci import keyfiles
from scitt_oci.log.sqlite_store import SqliteStore
from scitt_oci.log.store import Pending, entry_id
from scitt_oci.replication.mirror import MirrorStore
from scitt_oci.scitt import merkle, receipt
from scitt_oci.tlog import checkpoint, note, tiles
from tests.serverproc import ServerProcess, free_port

ORIGIN = "source.test/tlog"


def _note_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def big_entry(i: int) -> bytes:
    return f"{i:010d}".encode() * 6000  # 60 KB, close to the largest entry a bundle carries


def grow(data_dir: Path, target: int, tag: str = "a", step: int = 5000, big: bool = False) -> None:
    """Append synthetic entries to a source's log database (one signed head per `step`)."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = SqliteStore(data_dir / "log.db", synchronous="NORMAL")
    k, _ = keyfiles.private_key(data_dir / "keys" / "ts.pem")  # the service's own receipt key: its heads verify
    done = store.size()
    while done < target:
        end = min(target, done + step)
        made = (big_entry(i) if big else f"{tag} entry {i}".encode() for i in range(done, end))
        batch = [Pending(entry_id(e), e) for e in made]
        store.commit(
            accept=[],
            integrate=batch,
            sign=lambda n, root: receipt.sign_tree_head(k, issuer="i", subject="s", tree_size=n, root=root, iat=1),
            now=time.time(),
        )
        done = end
    store.close()


def source(data_dir: Path, port: int | None = None, note_key: Path | None = None) -> ServerProcess:
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if note_key is None:
        _note_key(data_dir / "keys" / "note.pem")
    else:
        (data_dir / "keys").mkdir(parents=True, exist_ok=True, mode=0o700)
        target = data_dir / "keys" / "note.pem"
        target.write_bytes(note_key.read_bytes())
        target.chmod(0o600)
    srv = ServerProcess(data_dir, env={"SCITT_OCI_TLOG__ORIGIN": ORIGIN})
    if port is not None:
        srv.port = port
    return srv


def mirror_cmd(url: str, vkey: str, data_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scitt_oci", "mirror", url, "--vkey", vkey, "--data-dir", str(data_dir), *extra]


def run_mirror(url: str, vkey: str, data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        mirror_cmd(url, vkey, data_dir, "--once", *extra), capture_output=True, text=True, timeout=120
    )


def wait_for(check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # polling an observable condition, not a sleep-as-synchronisation
        if check():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def held_size(data_dir: Path) -> int:
    if not (data_dir / "mirror.db").exists():
        return -1
    store = MirrorStore(data_dir)
    try:
        held = store.held()
        return held.size if held else 0
    finally:
        store.close()


def same_tiles(a: str, b: str, size: int) -> None:
    """Every hash tile and entry bundle of the tree of `size` is byte-identical at `a` and `b`."""
    paths = [ref.path() for level in range(tiles.levels(size)) for ref in tiles.tiles_for(size, level)]
    paths += [tiles.TileRef(tiles.ENTRIES, r.index, r.width).path() for r in tiles.tiles_for(size, 0)]
    sa, sb = requests.Session(), requests.Session()
    for p in paths:
        ra = sa.get(f"{a}/tlog/{p}", headers={"Accept-Encoding": "identity"}, timeout=10)
        rb = sb.get(f"{b}/tlog/{p}", headers={"Accept-Encoding": "identity"}, timeout=10)
        assert ra.status_code == rb.status_code == 200, (p, ra.status_code, rb.status_code)
        assert ra.content == rb.content, p


@pytest.fixture
def stop_all() -> Iterator[list[ServerProcess]]:
    procs: list[ServerProcess] = []
    yield procs
    for p in procs:
        p.stop()


def test_live_follow_gives_byte_identical_tiles_and_the_source_checkpoint(
    tmp_path: Path, stop_all: list[ServerProcess]
) -> None:
    grow(tmp_path / "src", 1000)
    src = source(tmp_path / "src").start()
    stop_all.append(src)
    vkey = requests.get(src.url + "/tlog/vkey", timeout=5).text.strip()
    mdir = tmp_path / "mirror"
    follower = subprocess.Popen(
        mirror_cmd(src.url, vkey, mdir, "--interval", "0.1"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: held_size(mdir) == 1000)
        # The source grows while the mirror follows (and its serve picks it up without a restart).
        served = ServerProcess(mdir)
        stop_all.append(served.start())
        grow(tmp_path / "src", 70_000 + 13)
        wait_for(lambda: held_size(mdir) == 70_013, timeout=120)
    finally:
        follower.send_signal(signal.SIGTERM)
        out = follower.communicate(timeout=30)[0].decode()
    assert follower.returncode == 0, out
    same_tiles(src.url, served.url, 70_013)
    assert (
        requests.get(served.url + "/tlog/checkpoint", timeout=5).content
        == requests.get(src.url + "/tlog/checkpoint", timeout=5).content
    )
    assert requests.get(served.url + "/tlog/vkey", timeout=5).text.strip() == vkey
    assert "scitt_mirror_tree_size 70013.0" in requests.get(served.url + "/metrics", timeout=5).text


def test_sigkill_mid_pass_then_resume(tmp_path: Path, stop_all: list[ServerProcess]) -> None:
    grow(tmp_path / "src", 70_000)
    src = source(tmp_path / "src").start()
    stop_all.append(src)
    vkey = requests.get(src.url + "/tlog/vkey", timeout=5).text.strip()
    mdir = tmp_path / "mirror"
    proc = subprocess.Popen(
        mirror_cmd(src.url, vkey, mdir, "--once"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_for(lambda: held_size(mdir) >= 0)  # the database exists: the pass is fetching
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(mdir / "mirror.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert held_size(mdir) in (0, 70_000)  # all of the pass or none of it
    grow(tmp_path / "src", 70_300)
    done = run_mirror(src.url, vkey, mdir)
    assert done.returncode == 0, done.stderr
    assert held_size(mdir) == 70_300
    served = ServerProcess(mdir)
    stop_all.append(served.start())
    same_tiles(src.url, served.url, 70_300)


def test_forked_source_is_refused_with_evidence(tmp_path: Path, stop_all: list[ServerProcess]) -> None:
    grow(tmp_path / "a", 600, tag="a")
    port = free_port()
    a = source(tmp_path / "a", port).start()
    vkey = requests.get(a.url + "/tlog/vkey", timeout=5).text.strip()
    mdir = tmp_path / "mirror"
    assert run_mirror(a.url, vkey, mdir).returncode == 0
    held_note = requests.get(a.url + "/tlog/checkpoint", timeout=5).content
    a.stop()
    # Same key, same origin, same URL: another history (the first 300 entries agree, then they differ).
    grow(tmp_path / "b", 300, tag="a")
    grow(tmp_path / "b", 900, tag="b")
    b = source(tmp_path / "b", port, note_key=tmp_path / "a" / "keys" / "note.pem").start()
    stop_all.append(b)
    result = run_mirror(b.url, vkey, mdir)
    assert result.returncode == 1, result.stderr
    assert "FORK" in result.stderr and "does not extend" in result.stderr
    [folder] = (mdir / "evidence").iterdir()
    assert (folder / "held.checkpoint").read_bytes() == held_note
    new_note = (folder / "new.checkpoint").read_bytes()
    v = note.parse_vkey(vkey)
    held_cp = checkpoint.open_signed(held_note, [v]).checkpoint
    new_cp = checkpoint.open_signed(new_note, [v]).checkpoint  # both signed by the same key: the proof of the fork
    evidence = json.loads((folder / "evidence.json").read_text())
    proof = [base64.b64decode(h) for h in evidence["consistency_proof"]]
    prefix_root = base64.b64decode(evidence["new_tree_root_at_held_size"])
    assert prefix_root != held_cp.root
    merkle.verify_consistency(held_cp.size, new_cp.size, proof, prefix_root, new_cp.root)
    # Nothing of the forked history was stored, and the mirror stays stopped.
    assert held_size(mdir) == 600
    again = run_mirror(b.url, vkey, mdir)
    assert again.returncode == 1 and "fork was recorded earlier" in again.stderr
    served = ServerProcess(mdir)
    stop_all.append(served.start())
    assert "scitt_mirror_forks 1.0" in requests.get(served.url + "/metrics", timeout=5).text
    assert requests.get(served.url + "/tlog/checkpoint", timeout=5).content == held_note


def test_rolled_back_source_is_a_fork(tmp_path: Path, stop_all: list[ServerProcess]) -> None:
    grow(tmp_path / "a", 500, tag="a")
    port = free_port()
    a = source(tmp_path / "a", port).start()
    vkey = requests.get(a.url + "/tlog/vkey", timeout=5).text.strip()
    mdir = tmp_path / "mirror"
    assert run_mirror(a.url, vkey, mdir).returncode == 0
    a.stop()
    grow(tmp_path / "b", 400, tag="a")  # the same history, 100 entries shorter
    b = source(tmp_path / "b", port, note_key=tmp_path / "a" / "keys" / "note.pem").start()
    stop_all.append(b)
    result = run_mirror(b.url, vkey, mdir)
    assert result.returncode == 1 and "smaller than the 500 held" in result.stderr


def test_wrong_key_and_unreachable_source_are_errors_not_forks(tmp_path: Path, stop_all: list[ServerProcess]) -> None:
    grow(tmp_path / "src", 10)
    src = source(tmp_path / "src").start()
    stop_all.append(src)
    other = note.Verifier(ORIGIN, 1, ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()).vkey
    bad = run_mirror(src.url, other, tmp_path / "m1")
    assert bad.returncode == 2 and "does not verify" in bad.stderr and "Traceback" not in bad.stderr
    # A failed first pass binds the data dir to nothing: the right key works there afterwards.
    right = requests.get(src.url + "/tlog/vkey", timeout=5).text.strip()
    assert run_mirror(src.url, right, tmp_path / "m1").returncode == 0
    rebind = run_mirror(src.url, other, tmp_path / "m1")
    assert rebind.returncode == 2 and "mirrors the log of key" in rebind.stderr
    down = run_mirror(f"http://127.0.0.1:{free_port()}", other, tmp_path / "m2")
    assert down.returncode == 2 and "cannot read" in down.stderr and "Traceback" not in down.stderr
    garbled = run_mirror(src.url, "not-a-vkey+zz+AA", tmp_path / "m3")
    assert garbled.returncode == 2 and "--vkey" in garbled.stderr


# ----- bounded passes -----

PEAK_RSS = (
    "import atexit, sys\n"
    "from scitt_oci.cli import run\n"
    "def peak():\n"
    "    for line in open('/proc/self/status'):\n"
    "        if line.startswith('VmHWM:'):\n"
    "            sys.stderr.write('PEAK_KB ' + line.split()[1] + '\\n')\n"
    "atexit.register(peak)\n"
    "sys.argv[0] = 'scitt-oci'\n"
    "run()\n"
)
BIG = 3000  # 3000 entries of 60 KB: 180 MB, which the whole-pass-in-memory mirror held at once


@pytest.fixture(scope="module")
def big_source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    data = tmp_path_factory.mktemp("bigsrc")
    grow(data, BIG, step=500, big=True)
    src = source(data).start()
    try:
        yield src.url, requests.get(src.url + "/tlog/vkey", timeout=5).text.strip()
    finally:
        src.stop()


def staged(data_dir: Path) -> int:
    with sqlite3.connect(data_dir / "mirror.db") as db:
        return int(db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])


def staged_while_running(data_dir: Path) -> int:
    """`staged` for polling a running mirror: its database may not be laid out yet, or locked a moment."""
    try:
        return staged(data_dir) if (data_dir / "mirror.db").exists() else 0
    except sqlite3.OperationalError:
        return 0


def test_memory_stays_bounded_over_large_entries(
    tmp_path: Path, big_source: tuple[str, str], stop_all: list[ServerProcess]
) -> None:
    url, vkey = big_source
    mdir = tmp_path / "mirror"
    cmd = [sys.executable, "-c", PEAK_RSS, "mirror", url, "--vkey", vkey, "--data-dir", str(mdir), "--once"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert held_size(mdir) == BIG
    peak_kb = int(done.stderr.rsplit("PEAK_KB ", 1)[1].split()[0])
    # 180 MB of entries went through; a pass holds one bundle (<= 16 MB) and one batch (8 MB) of them.
    # (Measured: about 83 MB; the mirror that held the whole pass peaked at 224 MB here.)
    assert peak_kb < 150_000, peak_kb
    served = ServerProcess(mdir)
    stop_all.append(served.start())
    same_tiles(url, served.url, BIG)


def test_sigkill_keeps_committed_batches_and_the_rerun_resumes(
    tmp_path: Path, big_source: tuple[str, str], stop_all: list[ServerProcess]
) -> None:
    url, vkey = big_source
    mdir = tmp_path / "mirror"
    proc = subprocess.Popen(mirror_cmd(url, vkey, mdir, "--once"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: staged_while_running(mdir) > 0, timeout=120)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    kept = staged(mdir)
    assert 0 < kept < BIG  # some batches committed, not the whole pass
    with sqlite3.connect(mdir / "mirror.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # Staged, not served: no checkpoint, so a reader of the mirror sees an empty log.
    assert held_size(mdir) == 0
    served = ServerProcess(mdir)
    stop_all.append(served.start())
    assert requests.get(served.url + "/tlog/checkpoint", timeout=5).status_code == 404
    again = run_mirror(url, vkey, mdir)
    assert again.returncode == 0, again.stderr
    assert f"resuming after {kept} staged entries" in again.stderr
    assert held_size(mdir) == BIG
    same_tiles(url, served.url, BIG)
    assert (
        requests.get(served.url + "/tlog/checkpoint", timeout=5).content
        == requests.get(url + "/tlog/checkpoint", timeout=5).content
    )
    with sqlite3.connect(mdir / "mirror.db") as db:
        assert db.execute("SELECT COUNT(*) FROM staged_tiles").fetchone()[0] == 0
        got = db.execute("SELECT idx, entry FROM entries ORDER BY idx").fetchall()
    assert [i for i, _ in got] == list(range(BIG))
    assert all(bytes(e) == big_entry(i) for i, e in got)


def test_growth_per_pass_is_bounded_and_later_passes_catch_up(tmp_path: Path, stop_all: list[ServerProcess]) -> None:
    grow(tmp_path / "src", 1000)
    src = source(tmp_path / "src").start()
    stop_all.append(src)
    vkey = requests.get(src.url + "/tlog/vkey", timeout=5).text.strip()
    mdir = tmp_path / "mirror"
    for expected in (300, 600, 900):
        step = run_mirror(src.url, vkey, mdir, "--max-growth", "300")
        assert step.returncode == 0, step.stderr
        assert held_size(mdir) == 0 and staged(mdir) == expected
    grow(tmp_path / "src", 1100)  # the source moves on between passes: the staged entries still count
    last = run_mirror(src.url, vkey, mdir, "--max-growth", "300")
    assert last.returncode == 0, last.stderr
    assert held_size(mdir) == 1100
    served = ServerProcess(mdir)
    stop_all.append(served.start())
    same_tiles(src.url, served.url, 1100)


class _UniformLog:
    """A key holder's log of 2^bits entries (bits a multiple of 8), every one the same: each level's
    hashes are equal, so its tiles rebuild the signed root and each full tile matches the level above.
    `swap` serves another entry at one index, with a level-0 tile made to match it."""

    def __init__(self, bits: int, swap: int | None = None) -> None:
        self.size = 1 << bits
        self.signer = note.NoteSigner(ORIGIN, ed25519.Ed25519PrivateKey.generate())
        self.entry = b"the same entry"
        self.swap = swap
        level_hash = [merkle.leaf_hash(self.entry)]
        for _ in range(bits):
            level_hash.append(merkle.node_hash(level_hash[-1], level_hash[-1]))
        self.tile_hash = [level_hash[8 * level] for level in range(bits // 8 + 1)]
        self.note = checkpoint.sign(checkpoint.Checkpoint(ORIGIN, self.size, level_hash[bits]), self.signer).encode()
        self.requests: list[str] = []

    def answer(self, path: str) -> bytes | None:
        self.requests.append(path)
        if path == "/tlog/checkpoint":
            return self.note
        ref = tiles.parse_tile_path(path.removeprefix("/tlog/"))
        entries = [self.entry] * ref.width
        hashes = [self.tile_hash[max(ref.level, 0)]] * ref.width
        if self.swap is not None and ref.index == self.swap // tiles.WIDTH and ref.level in (tiles.ENTRIES, 0):
            entries[self.swap % tiles.WIDTH] = b"another entry"
            hashes[self.swap % tiles.WIDTH] = merkle.leaf_hash(b"another entry")
        return tiles.encode_bundle(entries) if ref.level == tiles.ENTRIES else b"".join(hashes)


def serve_log(log: _UniformLog) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = log.answer(self.path) or b""
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_huge_size_claim_costs_one_bounded_pass(tmp_path: Path) -> None:
    log = _UniformLog(40)
    server = serve_log(log)
    mdir = tmp_path / "mirror"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = run_mirror(url, log.signer.verifier.vkey, mdir, "--max-growth", "2000")
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 0, done.stderr
    assert "staged entries up to 2000 of the source's 1099511627776" in done.stderr
    assert held_size(mdir) == 0 and staged(mdir) == 2000  # nothing served: the claim is not caught up
    bundles = [p for p in log.requests if "/entries/" in p]
    assert len(bundles) == 8  # 2000 entries: eight bundles
    assert len(log.requests) < 40, log.requests  # and a handful of tiles, not 2^32 of them


def test_a_level0_tile_that_does_not_match_the_level_above_is_refused(tmp_path: Path) -> None:
    # The root is rebuilt from the level-1 hashes; a full level-0 tile (and the entry it vouches for)
    # must still hash to its level-1 hash, or an entry outside the signed tree would be mirrored.
    log = _UniformLog(16, swap=300)
    server = serve_log(log)
    mdir = tmp_path / "mirror"
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        done = run_mirror(url, log.signer.verifier.vkey, mdir)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode == 2, done.stderr
    assert "tile/0/001 does not match the level above it" in done.stderr
    assert held_size(mdir) == 0
    with sqlite3.connect(mdir / "mirror.db") as db:
        assert db.execute("SELECT COUNT(*) FROM entries WHERE entry = ?", (b"another entry",)).fetchone()[0] == 0


def test_staged_entries_contradicted_by_the_next_checkpoint_are_a_fork(
    tmp_path: Path, stop_all: list[ServerProcess]
) -> None:
    grow(tmp_path / "a", 1000, tag="a")
    port = free_port()
    a = source(tmp_path / "a", port).start()
    vkey = requests.get(a.url + "/tlog/vkey", timeout=5).text.strip()
    mdir = tmp_path / "mirror"
    assert run_mirror(a.url, vkey, mdir, "--max-growth", "300").returncode == 0
    earlier_note = requests.get(a.url + "/tlog/checkpoint", timeout=5).content
    a.stop()
    assert held_size(mdir) == 0 and staged(mdir) == 300
    # Same key and URL, another history after entry 100: the 300 staged entries are not its entries.
    grow(tmp_path / "b", 100, tag="a")
    grow(tmp_path / "b", 1200, tag="b")
    b = source(tmp_path / "b", port, note_key=tmp_path / "a" / "keys" / "note.pem").start()
    stop_all.append(b)
    result = run_mirror(b.url, vkey, mdir, "--max-growth", "300")
    assert result.returncode == 1, result.stderr
    assert "against which the staged entries were verified" in result.stderr
    [folder] = (mdir / "evidence").iterdir()
    assert (folder / "held.checkpoint").read_bytes() == earlier_note
    assert (folder / "new.checkpoint").read_bytes() == requests.get(b.url + "/tlog/checkpoint", timeout=5).content
    assert held_size(mdir) == 0  # nothing of either history is served
