"""Shared fixtures for the radveil integration tests.

The tests build nothing.  The binary comes from ``RADVEIL_BIN`` or else
``target/release/radveil`` then ``target/debug/radveil``.

Peers (dciodvfy, dcentvfy from dicom3tools; pydicom): when one is missing the
tests that need it are skipped with a loud message - unless ``CI=true``, where
a missing peer is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

IN_CI = os.environ.get("CI", "").lower() == "true"


def missing_peer(what: str, allow_module_level: bool = False):
    """Fail under CI=true, else skip loudly."""
    msg = (f"\n{'!' * 78}\n!!! radveil integration: {what} is missing; "
           f"{'FAILING (CI=true)' if IN_CI else 'SKIPPING these tests'}.\n"
           f"!!! Install it (tools/setup-peers) - a skip here means radveil was NOT checked.\n{'!' * 78}")
    if IN_CI:
        pytest.fail(msg, pytrace=False)
    print(msg, file=sys.stderr)
    pytest.skip(msg, allow_module_level=allow_module_level)


def require_module(name: str):
    try:
        return __import__(name)
    except ImportError:
        missing_peer(f"Python module '{name}'", allow_module_level=True)


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if not path:
        missing_peer(f"peer tool '{name}'")
    return path


def find_radveil() -> Path | None:
    env = os.environ.get("RADVEIL_BIN")
    if env:
        return Path(env)
    for p in (REPO_ROOT / "target" / "release" / "radveil", REPO_ROOT / "target" / "debug" / "radveil"):
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


@pytest.fixture(scope="session")
def radveil_bin() -> Path:
    p = find_radveil()
    if p is None or not p.is_file():
        missing_peer(f"the radveil binary (RADVEIL_BIN={os.environ.get('RADVEIL_BIN')!r}, "
                     f"target/release/radveil, target/debug/radveil)")
    print(f"\nradveil integration tests use {p}", file=sys.stderr)
    return p


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    return require_tool("dciodvfy")


@pytest.fixture(scope="session")
def dcentvfy() -> str:
    return require_tool("dcentvfy")


def clean_env() -> dict:
    env = dict(os.environ)
    env.pop("RADVEIL_KEY", None)  # the CLI falls back to it; tests pass keys explicitly
    return env


class Radveil:
    """Thin wrapper running the CLI."""

    def __init__(self, binary: Path):
        self.binary = Path(binary)

    def run(self, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), *map(str, args)], capture_output=True, text=True,
                              env=clean_env(), timeout=timeout)

    def keygen(self, path: Path) -> Path:
        r = self.run("keygen", path)
        assert r.returncode == 0, f"keygen failed ({r.returncode}): {r.stderr}"
        return path

    def deid(self, inputs, out: Path, key: Path, *extra, report: Path | None = None, jobs: int = 2):
        """Run ``deid``; return (CompletedProcess, report records)."""
        if report is None:
            report = Path(str(out).rstrip("/") + ".report.jsonl")
        args = ["deid", *inputs, "--out", out, "--key-file", key, "--report", report,
                "--jobs", jobs, *extra]
        r = self.run(*args)
        recs = []
        if report.exists():
            for line in report.read_text().splitlines():
                if line.strip():
                    recs.append(json.loads(line))
        return r, recs


@pytest.fixture(scope="session")
def radveil(radveil_bin) -> Radveil:
    return Radveil(radveil_bin)


@pytest.fixture(scope="session")
def key_file(radveil, tmp_path_factory) -> Path:
    return radveil.keygen(tmp_path_factory.mktemp("keys") / "key")


@pytest.fixture(scope="session")
def other_key_file(radveil, tmp_path_factory) -> Path:
    return radveil.keygen(tmp_path_factory.mktemp("keys2") / "key")


@pytest.fixture(scope="session")
def dcmsign() -> str:
    return require_tool("dcmsign")


TSA_CONFIG = """
[ tsa ]
default_tsa = tsa_config1
[ tsa_config1 ]
dir = {dir}
serial = {dir}/tsaserial
crypto_device = builtin
signer_cert = {dir}/tsa.pem
certs = {dir}/tsaca.pem
signer_key = {dir}/tsa.key
signer_digest = sha256
default_policy = 1.2.3.4.1
other_policies = 1.2.3.4.5
digests = sha1, sha256, sha384, sha512, ripemd160
accuracy = secs:1
ordering = no
tsa_name = yes
ess_cert_id_chain = no
ess_cert_id_alg = {ess}
[ tsa_ext ]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,nonRepudiation
extendedKeyUsage = critical,timeStamping
"""


@pytest.fixture(scope="session")
def keys(tmp_path_factory) -> dict:
    """Signer keys and certificates made with openssl (RSA, ECDSA P-256/P-384, DSA), and
    an RFC 3161 timestamp authority (`openssl ts`) under its own CA: keys["tsa"] is its
    directory, with tsa.cnf (ESSCertIDv2) and tsa-v1.cnf (ESSCertID, SHA-1). Every
    certificate is valid from a day ago (pki.py), so dcmsign, which compares times to the
    minute, accepts signatures made at once."""
    import pki

    openssl = require_tool("openssl")
    d = tmp_path_factory.mktemp("keys")
    out = {}
    subprocess.run([openssl, "dsaparam", "-out", d / "dsa.params", "2048"], check=True, capture_output=True)
    for name, args in {
        "rsa": ["-newkey", "rsa:2048"],
        "p256": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        "p384": ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"],
        "dsa": ["-newkey", f"dsa:{d / 'dsa.params'}"],
    }.items():
        out[name] = pki.self_signed(openssl, d, name, args, f"/CN=radveil test {name}")
    tsa = d / "tsa"
    tsa.mkdir()
    (tsa / "tsaserial").write_text("01\n")
    (tsa / "tsa.cnf").write_text(TSA_CONFIG.format(dir=tsa, ess="sha256"))
    (tsa / "tsa-v1.cnf").write_text(TSA_CONFIG.format(dir=tsa, ess="sha1"))
    ca = pki.self_signed(openssl, tsa, "tsaca", ["-newkey", "rsa:2048"], "/CN=radveil test TSA CA")
    tsa_ext = TSA_CONFIG[TSA_CONFIG.index("[ tsa_ext ]"):]
    pki.issue(openssl, tsa, "tsa", ["-newkey", "rsa:2048"], "/CN=radveil test TSA", ca, tsa_ext, "tsa_ext")
    out["tsa"] = tsa
    return out


@pytest.fixture(scope="session")
def brain_masks() -> dict:
    """BET brain masks of the defacing test heads at each head's fraction (under the head's
    name), and each head's brain confirmed by the ICBM template (under "HEAD.agreed"); see
    heads.py. Made once and cached beside the fixtures."""
    import heads

    masks = {key: heads.bet_mask(key, heads.BET_FRACTION[key]) for key in heads.HEADS}
    for key in heads.HEADS:
        masks[f"{key}.agreed"] = heads.agreed_brain(key, masks[key])
    return masks
