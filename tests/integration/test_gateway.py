"""`radveil serve`: the DICOMweb gateway over the encrypted store, tested with a real client
(`dicomweb-client`) and raw HTTP, on real pydicom test files.

What is checked: STOW-RS stores and WADO-RS gives back byte-identical instances; bad parts are
refused with PS3.18 failure reasons while good ones are stored; nothing identifying is on disk
(every byte under the data directory is searched for planted values); an altered object is
never served; deleting a study crypto-shreds it (a copy of the data taken before, put back
beside the current key store, does not open it); `kill -9` during concurrent stores loses
nothing acknowledged; SIGTERM finishes what is in flight.
"""

from __future__ import annotations

import io
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests

from conftest import clean_env
from gateway import (  # noqa: F401  (serve is a fixture)
    PLANTED, all_files, assert_no_plaintext, get_parts, get_testdata_file, multipart, new_uid,
    planted, post, pydicom, real, serve, to_bytes,
)


# ---------------------------------------------------------------------------------------------

def test_dicomweb_client_stores_and_retrieves_real_instances(serve):
    g = serve()
    client = g.client()
    names = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm"]
    datasets = [real(n) for n in names]
    resp = client.store_instances(datasets)
    assert len(resp.ReferencedSOPSequence) == len(names), resp
    assert "FailedSOPSequence" not in resp, resp
    for name, ds in zip(names, datasets):
        original = Path(get_testdata_file(name)).read_bytes()
        # The stored bytes come back exactly, in their own transfer syntax.
        url = (f"{g.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
               f"/instances/{ds.SOPInstanceUID}")
        r, parts = get_parts(url)
        assert r.status_code == 200, (name, r.status_code, r.text[:200])
        assert parts == [to_bytes(ds)] or parts == [original], name
        # And the client reads them as the same data set.
        got = client.retrieve_instance(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID,
                                       media_types=(("application/dicom", "*"),))
        assert got.SOPInstanceUID == ds.SOPInstanceUID
        assert got.PatientID == ds.PatientID
        assert got.PixelData == ds.PixelData if "PixelData" in ds else True
    # A whole study (two CT/MR of pydicom share none: each is its own) and a series.
    ct = datasets[0]
    study = client.retrieve_study(ct.StudyInstanceUID, media_types=(("application/dicom", "*"),))
    assert {d.SOPInstanceUID for d in study} >= {ct.SOPInstanceUID}
    series = client.retrieve_series(ct.StudyInstanceUID, ct.SeriesInstanceUID,
                                    media_types=(("application/dicom", "*"),))
    assert [d.SOPInstanceUID for d in series] == [ct.SOPInstanceUID]


def test_implicit_vr_instances_are_given_in_explicit_vr_little_endian_by_default(serve):
    g = serve()
    ds = real("rtplan.dcm")
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2"
    assert post(g.url, [to_bytes(ds)]).status_code == 200
    url = f"{g.url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    r, parts = get_parts(url, accept='multipart/related; type="application/dicom"')
    assert r.status_code == 200, r.text
    back = pydicom.dcmread(io.BytesIO(parts[0]))
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert back.SOPInstanceUID == ds.SOPInstanceUID and back.BeamSequence == ds.BeamSequence
    # A compressed instance cannot be given in another syntax: 406, not a wrong answer.
    j = real("JPEG2000.dcm")
    assert post(g.url, [to_bytes(j)]).status_code == 200
    url = f"{g.url}/studies/{j.StudyInstanceUID}/series/{j.SeriesInstanceUID}/instances/{j.SOPInstanceUID}"
    r, _ = get_parts(url, accept='multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1')
    assert r.status_code == 406, r.status_code


def test_bad_parts_are_refused_with_reasons_while_good_ones_are_stored(serve):
    g = serve()
    study = new_uid()
    good = to_bytes(planted(1, study))
    truncated = good[: len(good) // 3]
    resp = post(g.url, [good, b"this is not DICOM at all", truncated])
    assert resp.status_code == 202, (resp.status_code, resp.text)
    body = resp.json()
    failed = body["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [0xC000, 0xC000], failed
    assert len(body["00081199"]["Value"]) == 1
    # Nothing of the input is echoed in the response but the stored instance's UIDs.
    for v in PLANTED.values():
        assert v not in resp.text
    r, parts = get_parts(f"{g.url}/studies/{study}")
    assert r.status_code == 200 and parts == [good]


def test_a_part_for_another_study_is_refused(serve):
    g = serve()
    study = new_uid()
    body, ct = multipart([to_bytes(planted(1, study))])
    r = requests.post(f"{g.url}/studies/{new_uid()}", data=body, headers={"Content-Type": ct}, timeout=30)
    assert r.status_code == 409, r.text
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0110]
    assert requests.get(f"{g.url}/studies/{study}", timeout=30).status_code == 404


def test_a_second_copy_is_accepted_when_identical_and_refused_when_different(serve):
    g = serve()
    study = new_uid()
    ds = planted(1, study)
    assert post(g.url, [to_bytes(ds)]).status_code == 200
    assert post(g.url, [to_bytes(ds)]).status_code == 200
    ds.InstitutionName = "ANOTHER"
    r = post(g.url, [to_bytes(ds)])
    assert r.status_code == 409, r.text
    assert r.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0111]


def test_malformed_requests_are_refused_and_the_server_keeps_serving(serve):
    g = serve(None, "--max-request", "1M")
    url = g.url + "/studies"
    cases = [
        ({"Content-Type": "application/json"}, b"{}", 415),
        ({"Content-Type": "multipart/related; boundary=x"}, b"--x\r\nno end", 400),
        ({"Content-Type": "multipart/related"}, b"", 415),
        ({"Content-Type": 'multipart/related; type="application/dicom+xml"; boundary=x'}, b"--x--", 415),
        ({"Content-Type": "multipart/related; boundary=x"}, b"x" * (2 << 20), 413),
    ]
    for headers, body, want in cases:
        r = requests.post(url, data=body, headers=headers, timeout=30)
        assert r.status_code == want, (headers, r.status_code, r.text[:200])
    assert requests.get(g.url.replace("/dicom-web", "/healthz"), timeout=10).text == "ok\n"
    assert post(g.url, [to_bytes(planted(1, new_uid()))]).status_code == 200


def test_nothing_identifying_is_stored_in_plaintext(serve, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    study = new_uid()
    series = new_uid()
    instances = [planted(n, study, series) for n in range(5)]
    assert post(g.url, [to_bytes(d) for d in instances]).status_code == 200
    needles = [v.encode() for v in PLANTED.values()] + [study.encode(), series.encode()]
    needles += [d.SOPInstanceUID.encode() for d in instances]
    needles += [PLANTED["name"].replace("^", " ").encode(), b"PLANTEDNAME"]
    assert g.stop() == 0, "".join(g.log)
    files = list(all_files(data))
    assert any("objects" in p.parts for p in files) and len(files) >= 4, files
    assert_no_plaintext(data, "".join(g.log), needles)
    for p in files:
        assert p.stat().st_mode & 0o077 == 0, f"{p} is readable by others"


def test_an_altered_object_is_detected_and_never_served(serve, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    study = new_uid()
    ds = planted(1, study)
    assert post(g.url, [to_bytes(ds)]).status_code == 200
    [obj] = list((data / "objects").rglob("*.*"))
    b = bytearray(obj.read_bytes())
    b[len(b) // 2] ^= 0x01
    obj.write_bytes(bytes(b))
    r = requests.get(f"{g.url}/studies/{study}", timeout=30,
                     headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
    assert r.status_code == 500, r.status_code
    assert b"DICM" not in r.content
    assert g.wait_for_log("integrity"), g.log


def test_a_deleted_study_does_not_open_from_a_copy_of_the_data_taken_before(serve, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    gone, kept = new_uid(), new_uid()
    assert post(g.url, [to_bytes(planted(1, gone))]).status_code == 200
    assert post(g.url, [to_bytes(planted(1, kept, patient="PID-OTHER"))]).status_code == 200
    assert g.stop() == 0
    backup = tmp_path / "backup"
    shutil.copytree(data, backup, ignore=shutil.ignore_patterns("keys"))
    g = serve(data)
    assert requests.delete(f"{g.url}/studies/{gone}", timeout=30).status_code == 204
    assert requests.get(f"{g.url}/studies/{gone}", timeout=30).status_code == 404
    assert requests.delete(f"{g.url}/studies/{gone}", timeout=30).status_code == 404
    assert g.stop() == 0
    # The data as it was before the deletion, beside the current key store.
    restored = tmp_path / "restored"
    shutil.copytree(backup, restored)
    shutil.copytree(data / "keys", restored / "keys")
    g = serve(restored)
    accept = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
    r = requests.get(f"{g.url}/studies/{gone}", headers=accept, timeout=30)
    assert r.status_code != 200 and b"DICM" not in r.content, r.status_code
    r, parts = get_parts(f"{g.url}/studies/{kept}")
    assert r.status_code == 200 and len(parts) == 1


def test_kill_9_during_concurrent_stores_loses_nothing_acknowledged(serve, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    study = new_uid()
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def writer(w: int):
        n = 0
        while not stop.is_set():
            ds = planted(w * 100000 + n, study)
            b = to_bytes(ds)
            try:
                r = post(g.url, [b])
            except requests.RequestException:
                return
            if r.status_code == 200:
                with lock:
                    acked[ds.SOPInstanceUID] = b
            n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(3)
    g.proc.kill()
    stop.set()
    for t in threads:
        t.join(timeout=30)
    g.proc.wait()
    assert len(acked) >= 5, f"only {len(acked)} stored before the kill"
    g = serve(data)
    r, parts = get_parts(f"{g.url}/studies/{study}")
    assert r.status_code == 200
    by_uid = {pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID: p for p in parts}
    missing = [u for u in acked if u not in by_uid]
    assert not missing, f"{len(missing)} acknowledged instances lost"
    changed = [u for u, b in acked.items() if by_uid[u] != b]
    assert not changed, f"{len(changed)} instances changed"
    # No partial instance is visible: every one served reads whole.
    for u, p in by_uid.items():
        assert pydicom.dcmread(io.BytesIO(p)).PixelData


def test_sigterm_finishes_requests_in_flight(serve, tmp_path):
    g = serve()
    study = new_uid()
    parts = [to_bytes(planted(n, study)) for n in range(200)]
    result = {}

    def send():
        result["r"] = post(g.url, parts)

    t = threading.Thread(target=send)
    t.start()
    time.sleep(0.3)
    g.proc.send_signal(signal.SIGTERM)
    t.join(timeout=60)
    assert g.proc.wait(timeout=60) == 0
    r = result.get("r")
    if r is not None and r.status_code == 200:
        g2 = serve(g.data)
        _, back = get_parts(f"{g2.url}/studies/{study}")
        assert len(back) == 200


def test_listening_beyond_loopback_is_refused_without_access_control(radveil_bin, tmp_path):
    r = subprocess.run([str(radveil_bin), "serve", "--data", str(tmp_path / "d"), "--listen", "0.0.0.0:0"],
                       capture_output=True, text=True, timeout=30, env=clean_env())
    assert r.returncode != 0 and "loopback" in r.stderr, r.stderr


def test_rotating_the_kek_keeps_every_instance_readable(serve, radveil_bin, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    study = new_uid()
    ds = planted(1, study)
    assert post(g.url, [to_bytes(ds)]).status_code == 200
    assert g.stop() == 0
    new = tmp_path / "new.kek"
    r = subprocess.run([str(radveil_bin), "keygen", str(new)], capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(radveil_bin), "keys", "rotate", "--data", str(data), "--new-kek-file", str(new)],
                       capture_output=True, text=True, env=clean_env())
    assert r.returncode == 0, r.stderr
    # The old key no longer opens the store; the new one does.
    p = subprocess.run([str(radveil_bin), "serve", "--data", str(data), "--listen", "127.0.0.1:0"],
                       capture_output=True, text=True, timeout=30, env=clean_env())
    assert p.returncode != 0 and "key-encryption key" in p.stderr, p.stderr
    g = serve(data, "--kek-file", str(new))
    _, parts = get_parts(f"{g.url}/studies/{study}")
    assert parts == [to_bytes(ds)]
