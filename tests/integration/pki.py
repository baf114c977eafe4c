"""Test certificates made with openssl, valid from a day ago.

dcmsign compares a signature's time with the signer certificate's notBefore to the minute:
a certificate made in the current minute is "not yet valid" to it. `openssl req -x509`
(OpenSSL 3.0) cannot set notBefore, so certificates here are issued by `openssl ca
-selfsign`, which can (`-startdate`), with the extensions `req -x509` gives (v3_ca:
subject and authority key identifiers, basicConstraints critical CA:TRUE). No test has to
wait for the clock."""

from __future__ import annotations

import datetime
import secrets
import subprocess
from pathlib import Path

CA_CONFIG = """
[ ca ]
default_ca = selfsign
[ selfsign ]
database = {dir}/index.txt
new_certs_dir = {dir}
serial = {dir}/serial
default_md = sha256
policy = any
unique_subject = no
email_in_dn = no
[ any ]
commonName = supplied
[ v3_ca ]
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always,issuer
basicConstraints = critical,CA:true
{extra}
"""


def _stamp(t: datetime.datetime) -> str:
    return t.strftime("%Y%m%d%H%M%SZ")


def self_signed(openssl: str, directory: Path, name: str, newkey: list[str], subject: str,
                days: int = 30, backdate: datetime.timedelta = datetime.timedelta(days=1)) -> tuple[Path, Path]:
    """A key and a self-signed certificate `directory/name.key`, `directory/name.pem`,
    valid from `backdate` ago for `days` days. `newkey`: the `openssl req` key options,
    e.g. ["-newkey", "rsa:2048"]."""
    return issue(openssl, directory, name, newkey, subject, None, days=days, backdate=backdate)


def issue(openssl: str, directory: Path, name: str, newkey: list[str], subject: str,
          issuer: tuple[Path, Path] | None, extensions: str = "", section: str = "v3_ca", days: int = 30,
          backdate: datetime.timedelta = datetime.timedelta(days=1)) -> tuple[Path, Path]:
    """A new key `directory/name.key` and its certificate `directory/name.pem`, issued by
    `issuer` (its key and certificate, as returned here) or self-signed when None, valid from `backdate` ago
    for `days` days. `extensions` adds config sections; `section` names the one to use."""
    key, cert, csr = directory / f"{name}.key", directory / f"{name}.pem", directory / f"{name}.csr"
    work = directory / f".{name}.ca"
    work.mkdir()
    (work / "index.txt").write_text("")
    # Random serials: an issuer never gives two certificates the same one (RFC 5280 4.1.2.2).
    (work / "serial").write_text(f"{secrets.randbits(63) | 1 << 62:x}\n")
    (work / "ca.cnf").write_text(CA_CONFIG.format(dir=work, extra=extensions))
    run = lambda *a: subprocess.run([openssl, *map(str, a)], check=True, capture_output=True)  # noqa: E731
    run("req", "-new", *newkey, "-nodes", "-keyout", key, "-out", csr, "-subj", subject)
    now = datetime.datetime.now(datetime.timezone.utc)
    signer = ["-selfsign", "-keyfile", key] if issuer is None else ["-cert", issuer[1], "-keyfile", issuer[0]]
    run("ca", "-batch", *signer, "-config", work / "ca.cnf", "-in", csr, "-out", cert, "-notext",
        "-extensions", section, "-startdate", _stamp(now - backdate),
        "-enddate", _stamp(now + datetime.timedelta(days=days)))
    return key, cert
