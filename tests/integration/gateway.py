"""Helpers shared by the gateway's integration tests: a `radveil serve` process on a free
loopback port, real pydicom test files, planted identifying values, raw STOW-RS."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from conftest import clean_env, require_module

pydicom = require_module("pydicom")
dicomweb_client = require_module("dicomweb_client")
requests = require_module("requests")
from pydicom.data import get_testdata_file  # noqa: E402

READY = re.compile(r"DICOMweb on (http://\S+)/dicom-web")


class Gateway:
    """A `radveil serve` process on a free loopback port."""

    def __init__(self, binary: Path, data: Path, *extra: str, listen="127.0.0.1:0",
                 wrap: tuple[str, ...] = ()):
        self.data = data
        self.proc = subprocess.Popen(
            [*wrap, str(binary), "serve", "--data", str(data), "--listen", listen, *extra],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=clean_env())
        self.log: list[str] = []
        deadline = time.time() + 30
        self.url = None
        while time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            m = READY.search(line)
            if m:
                self.url = m.group(1).replace("0.0.0.0", "127.0.0.1") + "/dicom-web"
                break
        assert self.url, f"radveil serve did not start: {''.join(self.log)}"
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def wait_for_log(self, text: str, timeout: float = 10) -> bool:
        """Whether `text` appears in the server's log within `timeout` seconds (the log is
        read by a thread, so a line written just now may not be in it yet)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(text in line for line in list(self.log)):
                return True
            time.sleep(0.05)
        return False

    def client(self):
        return dicomweb_client.DICOMwebClient(url=self.url)

    def stop(self, sig=signal.SIGTERM, timeout=30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout)


@pytest.fixture
def serve(radveil_bin, tmp_path):
    """Starts gateways (`serve(data_dir, *args)`); kills what is left at the end."""
    started = []

    def start(data: Path | None = None, *extra):
        g = Gateway(radveil_bin, data or tmp_path / "data", *extra)
        started.append(g)
        return g

    yield start
    for g in started:
        if g.proc.poll() is None:
            g.proc.kill()
            g.proc.wait()


def real(name: str):
    return pydicom.dcmread(get_testdata_file(name))


def to_bytes(ds) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def new_uid() -> str:
    return "2.25." + str(uuid.uuid4().int)


def multipart(parts: list[bytes], boundary="radveilTestBoundary") -> tuple[bytes, str]:
    body = b""
    for p in parts:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    return body, f'multipart/related; type="application/dicom"; boundary={boundary}'


def post(url: str, parts: list[bytes]):
    """STOW-RS of Part 10 files to `url` (the service root)."""
    body, ct = multipart(parts)
    return requests.post(url + "/studies", data=body, headers={"Content-Type": ct}, timeout=60)


def all_files(root: Path):
    for p in root.rglob("*"):
        if p.is_file():
            yield p


PLANTED = {
    "name": "QZXWUV^PLANTEDNAME",
    "id": "PID-QZ-771934",
    "birth": "19230405",
    "accession": "ACCQZ881",
    "institution": "QZ PLANTED HOSPITAL",
}


def planted(n: int, study: str, series: str | None = None, patient: str | None = None):
    """A real CT slice with distinctive identifying values and fresh UIDs."""
    ds = real("CT_small.dcm")
    ds.PatientName = PLANTED["name"]
    ds.PatientID = patient or PLANTED["id"]
    ds.PatientBirthDate = PLANTED["birth"]
    ds.AccessionNumber = PLANTED["accession"]
    ds.InstitutionName = PLANTED["institution"]
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series or study + ".1"
    ds.SOPInstanceUID = f"{study}.1.{n}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def get_parts(url: str, accept='multipart/related; type="application/dicom"; transfer-syntax=*'):
    r = requests.get(url, headers={"Accept": accept}, timeout=60)
    if r.status_code != 200:
        return r, []
    m = re.search(r'boundary="?([^";]+)', r.headers["Content-Type"])
    assert m, r.headers
    b = m.group(1).encode()
    chunks = r.content.split(b"--" + b)[1:-1]
    parts = []
    for c in chunks:
        head, _, body = c.partition(b"\r\n\r\n")
        parts.append(body[:-2] if body.endswith(b"\r\n") else body)
    return r, parts


def token(radveil_bin, data: Path, *args: str) -> str:
    """A token from the dev issuer of `data` (`radveil token`)."""
    r = subprocess.run([str(radveil_bin), "token", "--data", str(data), *args],
                       capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def auth(t: str, **more) -> dict:
    """Request headers carrying bearer token `t`."""
    return {"Authorization": f"Bearer {t}", **more}


def assert_no_plaintext(data: Path, log: str, needles: list[bytes]):
    """No needle in any byte of any file under `data` (databases, their logs, objects, the
    audit trail), nor in the server's log."""
    for p in all_files(data):
        b = p.read_bytes()
        for n in needles:
            assert n not in b, f"{n!r} in {p.relative_to(data)}"
    for n in needles:
        assert n.decode() not in log, f"{n!r} in the server's log"


# --- Orthanc as a peer, in a private network namespace ------------------------------------------
# Orthanc has no bind-address option: it listens on every interface. The tests and the
# benchmark run it (and the radveil it talks to) inside a network namespace of their own
# with only loopback up, so nothing outside the namespace can reach either server.

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_DICOMWEB = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
_CLONE_NEWNET = 0x40000000


def orthanc_missing() -> str | None:
    """Why Orthanc with its DICOMweb plugin cannot run here (None when it can)."""
    import os

    for p in (ORTHANC, ORTHANC_DICOMWEB):
        if not os.path.exists(p):
            return f"{p} (Debian packages orthanc, orthanc-dicomweb; tools/setup-peers)"
    return None


class NetNs:
    """A named network namespace (`ip netns add`) with only loopback up. `enter()` moves the
    calling thread (and the processes it starts from then on) into it; `leave()` moves it
    back. Needs CAP_SYS_ADMIN (root)."""

    def __init__(self, name: str | None = None):
        import os

        self.name = name or f"radveil-t{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._home = None
        r = subprocess.run(["ip", "netns", "add", self.name], capture_output=True, text=True)
        if r.returncode != 0:
            raise OSError(f"ip netns add failed: {r.stderr.strip()}")
        r = subprocess.run(["ip", "netns", "exec", self.name, "ip", "link", "set", "lo", "up"],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.delete()
            raise OSError(f"ip link set lo up failed: {r.stderr.strip()}")

    @staticmethod
    def _setns(fd: int):
        import ctypes
        import os

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    def enter(self):
        import os

        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            self._setns(fd)
        finally:
            os.close(fd)

    def leave(self):
        import os

        if self._home is not None:
            try:
                self._setns(self._home)
            finally:
                os.close(self._home)
                self._home = None

    def delete(self):
        self.leave()
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (in the calling thread's namespace)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """An Orthanc process (Debian's, with the DICOMweb plugin) on a free loopback port, with
    its own configuration and storage under `root`, `TCP_NODELAY=1` in its environment, no
    DICOM listener and no authentication. Start it inside a NetNs: it listens on every
    interface."""

    def __init__(self, root: Path, *, cpu: int | None = None, extra: dict | None = None):
        import json
        import os

        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = {
            "Name": "radveil-peer",
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "StorageCompression": False,
            "TcpNoDelay": True,
            "SaveJobs": False,
            "Plugins": [ORTHANC_DICOMWEB],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "Servers": {}},
        }
        config.update(extra or {})
        (root / "orthanc.json").write_text(json.dumps(config, indent=1))
        cmd = [ORTHANC, str(root / "orthanc.json")]
        if cpu is not None:
            cmd = ["taskset", "-c", str(cpu), *cmd]
        self.log_path = root / "orthanc.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self._log,
                                     env={**os.environ, "TCP_NODELAY": "1"})
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if requests.get(self.base + "/system", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not start: {self.log_path.read_text()[-2000:]}")

    @property
    def dicomweb(self) -> str:
        return self.base + "/dicom-web"

    def upload(self, blob: bytes) -> dict:
        """Stores one Part 10 file through Orthanc's REST API (POST /instances)."""
        r = requests.post(self.base + "/instances", data=blob, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    def add_server(self, name: str, url: str, headers: dict | None = None):
        """A DICOMweb peer for Orthanc's client (`DicomWeb.Servers` entry, set at run time)."""
        body = {"Url": url.rstrip("/") + "/"}
        if headers:
            body["HttpHeaders"] = headers
        r = requests.put(f"{self.dicomweb}/servers/{name}", json=body, timeout=30)
        assert r.status_code == 200, r.text

    def stop(self, timeout=30):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
