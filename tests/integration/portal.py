"""Helpers for the portal's tests: the real OpenID provider with sign-in pages
(oidc/portal-provider.mjs, npm oidc-provider), a gateway configured to sign patients in with
it, and signing in over plain HTTP (requests) through the provider's own login form."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import threading
from pathlib import Path

from conftest import clean_env, missing_peer
from gateway import Gateway, free_port, requests, token

OIDC_DIR = Path(__file__).resolve().parent / "oidc"

ACCOUNTS = {
    "alice": {"patient": "PID-PORTAL-A", "name": "Alice Example"},
    "bob": {"patient": "PID-PORTAL-B", "name": "Bob Example"},
    "drsmith": {"roles": ["clinician"], "name": "Dr A. Smith"},
    "drjones": {"roles": ["clinician"], "name": "Dr B. Jones"},
    "audrey": {"roles": ["auditor"], "name": "Audrey Auditor"},
    "priya": {"roles": ["privacy-officer"], "name": "Priya Privacy"},
}


class Provider:
    """oidc/portal-provider.mjs on a free loopback port."""

    def __init__(self, redirect: str, accounts: dict = ACCOUNTS, ttl: int = 600):
        node = shutil.which("node")
        if not node or not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
            missing_peer("the npm package oidc-provider (tools/setup-peers runs "
                         "`npm ci --prefix tests/integration/oidc`)")
        self.proc = subprocess.Popen(
            [node, str(OIDC_DIR / "portal-provider.mjs")], stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True,
            env={**clean_env(), "ACCOUNTS": json.dumps(accounts), "REDIRECT": redirect,
                 "SECRET": "portal-secret", "TTL": str(ttl)})
        found: list[str] = []
        reader = threading.Thread(target=lambda: found.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(30)
        assert found and found[0].startswith("READY "), "oidc-provider did not start"
        self.issuer = found[0].split()[1]

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Portal:
    """A gateway whose portal signs in with a real provider; trusts the dev issuer too, so
    tests can store images with `radveil token` admin tokens."""

    def __init__(self, radveil_bin, data: Path, *extra: str, ttl: int = 600):
        self.radveil_bin = radveil_bin
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.provider = Provider(self.base + "/portal/callback", ttl=ttl)
        data.mkdir(parents=True, exist_ok=True)
        secret = data.parent / "portal-secret"
        secret.write_text("portal-secret\n")
        secret.chmod(0o600)
        self.args = ("--dev", "--oidc-issuer", self.provider.issuer,
                     "--portal-client-id", "radveil-portal", "--portal-client-secret-file",
                     str(secret), "--public-url", self.base,
                     "--portal-scope", "openid patient/ImagingStudy.rs user/ImagingStudy.rs user/ImagingStudy.c "
                     "patient/Consent.rus user/AuditEvent.rs user/Consent.rs",
                     *extra)
        self.listen = f"127.0.0.1:{port}"
        self.gateway = Gateway(radveil_bin, data, *self.args, listen=self.listen)
        self.url = self.gateway.url
        self.admin = token(radveil_bin, data, "--role", "admin",
                           "--scope", "system/ImagingStudy.cruds")

    def restart(self, wrap: tuple[str, ...] = (), extra: tuple[str, ...] = ()):
        """Stops the gateway and starts it again on the same data and port (under `wrap`,
        such as faketime, when given; with `extra` arguments added)."""
        self.gateway.stop()
        self.gateway = Gateway(self.radveil_bin, self.gateway.data, *self.args, *extra,
                               listen=self.listen, wrap=wrap)

    def stop(self):
        self.gateway.stop()
        self.provider.stop()


def sign_in(base: str, login: str) -> requests.Session:
    """Signs `login` in to the portal at `base` through the provider's login form, as a
    browser would; gives the session holding the portal's cookie."""
    s = requests.Session()
    r = s.get(base + "/portal/login", timeout=30)
    # The provider's login form (devInteractions: any password).
    for _ in range(3):
        m = re.search(r'<form[^>]*action="([^"]+)"', r.text)
        assert m, f"no form on the provider's page: {r.status_code} {r.url}"
        action = html.unescape(m.group(1))
        if 'name="login"' in r.text:
            data = {"prompt": "login", "login": login, "password": "any"}
        else:
            data = {"prompt": "consent"}
        r = s.post(requests.compat.urljoin(r.url, action), data=data, timeout=30)
        if r.url.startswith(base + "/portal"):
            break
    assert r.status_code == 200, (r.status_code, r.url, r.text[:300])
    assert "You are signed in" in r.text, r.text[:300]
    return s
