"""QIDO-RS on `radveil serve` (PS3.18 §10.6), tested with `dicomweb-client` and raw HTTP on
real pydicom test files and planted patients.

What is checked: studies, series and instances are found at every level and on the nested
routes, with the attributes PS3.18 requires (ModalitiesInStudy and the counts derived);
each matching rule of PS3.4 C.2.2.2 (single value, UID list, universal, wild card, date and
time ranges, empty value, fuzzy person names); keys by keyword or tag; includefield;
limit and offset; bad parameters refused with reasons that repeat no value; the catalogue
survives a restart and follows deletions; and with all these attributes kept, nothing
identifying is on disk in plaintext.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import clean_env
from gateway import (  # noqa: F401  (serve is a fixture)
    all_files, assert_no_plaintext, get_testdata_file, multipart, new_uid, post, pydicom, real, requests, serve,
    to_bytes,
)

REAL = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm",
        "emri_small.dcm"]


def value(item: dict, keyword: str):
    """The first value of an attribute of a DICOM JSON result (None when empty)."""
    tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
    v = item.get(tag, {}).get("Value")
    if not v:
        return None
    return v[0]["Alphabetic"] if isinstance(v[0], dict) and "Alphabetic" in v[0] else v[0]


def values(item: dict, keyword: str):
    tag = f"{pydicom.datadict.tag_for_keyword(keyword):08X}"
    return item.get(tag, {}).get("Value", [])


def qido(g, path: str, params=None):
    r = requests.get(f"{g.url}{path}", params=params or {},
                     headers={"Accept": "application/dicom+json"}, timeout=30)
    return r


def uids(results, keyword="StudyInstanceUID"):
    return sorted(value(r, keyword) for r in results)


PEOPLE = {
    # name, id, accession, study date, study time, modalities of its series
    "A": ("QIDO^ALICE^M", "QA-771", "ACC-A1", "20200115", "101500", ["CT", "MR"]),
    "B": ("QIDO^BOB", "QB-772", "ACC-B7", "20210620", "153000", ["US"]),
    "C": ("QIDOSON^CAROL", "QC-773", None, "19991231", "235959", ["CT"]),
}


def planted_study(who: str, per_series=2):
    """A planted patient's study: one series per modality, `per_series` instances each."""
    name, pid, acc, date, time_, modalities = PEOPLE[who]
    study = new_uid()
    out = []
    for s, modality in enumerate(modalities):
        series = new_uid()
        for n in range(per_series):
            ds = real("CT_small.dcm")
            ds.PatientName = name
            ds.PatientID = pid
            ds.PatientBirthDate = "19450302"
            if acc is None:
                del ds.AccessionNumber
            else:
                ds.AccessionNumber = acc
            ds.StudyDate = date
            ds.StudyTime = time_
            ds.StudyDescription = f"QIDO STUDY {who}"
            ds.ReferringPhysicianName = "QZREFERRER^PLANTED"
            ds.Modality = modality
            ds.SeriesNumber = s + 1
            ds.InstanceNumber = n + 1
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = new_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            out.append(ds)
    return study, out


def stored_people(g):
    studies = {}
    for who in PEOPLE:
        study, dss = planted_study(who)
        assert post(g.url, [to_bytes(d) for d in dss]).status_code == 200
        studies[who] = (study, dss)
    return studies


# ---------------------------------------------------------------------------------------------

def test_real_instances_are_found_at_every_level_with_the_required_attributes(serve):
    g = serve()
    client = g.client()
    datasets = [real(n) for n in REAL]
    resp = client.store_instances(datasets)
    assert len(resp.ReferencedSOPSequence) == len(REAL), resp
    studies = client.search_for_studies()
    assert uids(studies) == sorted(d.StudyInstanceUID for d in datasets)
    by_uid = {value(s, "StudyInstanceUID"): s for s in studies}
    for ds in datasets:
        s = by_uid[ds.StudyInstanceUID]
        assert value(s, "PatientID") == (ds.get("PatientID") or None)
        assert value(s, "PatientName") == (str(ds.PatientName) or None)
        assert value(s, "StudyDate") == ds.StudyDate
        assert values(s, "ModalitiesInStudy") == [ds.Modality]
        assert values(s, "NumberOfStudyRelatedSeries") == [1]
        assert values(s, "NumberOfStudyRelatedInstances") == [1]
        assert value(s, "RetrieveURL").endswith(f"/dicom-web/studies/{ds.StudyInstanceUID}")
        # Required attributes are there even when the instance lacks them (empty).
        for kw in ["AccessionNumber", "ReferringPhysicianName", "StudyID", "PatientSex"]:
            assert f"{pydicom.datadict.tag_for_keyword(kw):08X}" in s, kw
    series = client.search_for_series()
    assert uids(series, "SeriesInstanceUID") == sorted(d.SeriesInstanceUID for d in datasets)
    instances = client.search_for_instances()
    assert uids(instances, "SOPInstanceUID") == sorted(d.SOPInstanceUID for d in datasets)
    by_sop = {value(i, "SOPInstanceUID"): i for i in instances}
    for ds in datasets:
        i = by_sop[ds.SOPInstanceUID]
        assert value(i, "SOPClassUID") == ds.SOPClassUID
        # All-instances results carry the study and series attributes too.
        assert value(i, "StudyInstanceUID") == ds.StudyInstanceUID
        assert value(i, "Modality") == ds.Modality
        for kw in ["Rows", "Columns", "BitsAllocated", "NumberOfFrames", "InstanceNumber"]:
            want = ds.get(kw)
            assert value(i, kw) == (int(want) if want not in (None, "") else None), kw
    # Names in ISO_IR 100 and ISO_IR 192 come back as text.
    emri = by_uid[real("emri_small.dcm").StudyInstanceUID]
    assert value(emri, "Modality") is None  # a series attribute: not at study level
    assert value(by_uid[real("SC_rgb_rle.dcm").StudyInstanceUID], "PatientName") == "Lestrade^G"


def test_big_endian_numbers_are_read_in_their_byte_order(serve):
    g = serve()
    ds = real("MR_small_bigendian.dcm")
    assert post(g.url, [Path(get_testdata_file("MR_small_bigendian.dcm")).read_bytes()]).status_code == 200
    [i] = g.client().search_for_instances()
    assert value(i, "Rows") == ds.Rows and value(i, "Columns") == ds.Columns
    assert value(i, "BitsAllocated") == ds.BitsAllocated


def test_single_value_matching(serve):
    g = serve()
    s = stored_people(g)
    c = g.client()
    assert uids(c.search_for_studies(search_filters={"PatientID": "QA-771"})) == [s["A"][0]]
    assert uids(c.search_for_studies(search_filters={"AccessionNumber": "ACC-B7"})) == [s["B"][0]]
    # Case-sensitive, except for person names.
    assert c.search_for_studies(search_filters={"AccessionNumber": "acc-b7"}) == []
    assert uids(c.search_for_studies(search_filters={"PatientName": "qido^bob"})) == [s["B"][0]]
    # A single date is that date.
    assert uids(c.search_for_studies(search_filters={"StudyDate": "20200115"})) == [s["A"][0]]


def test_keys_by_tag_and_by_keyword_are_the_same(serve):
    g = serve()
    s = stored_people(g)
    a = qido(g, "/studies", {"00100020": "QA-771"}).json()
    b = qido(g, "/studies", {"PatientID": "QA-771"}).json()
    assert a == b and uids(a) == [s["A"][0]]


def test_list_of_uid_matching(serve):
    g = serve()
    s = stored_people(g)
    for sep in [",", "\\"]:
        r = qido(g, "/studies", {"StudyInstanceUID": sep.join([s["A"][0], s["C"][0]])})
        assert r.status_code == 200
        assert uids(r.json()) == sorted([s["A"][0], s["C"][0]])
    sops = [d.SOPInstanceUID for d in s["A"][1][:3]]
    r = qido(g, "/instances", {"SOPInstanceUID": ",".join(sops)})
    assert uids(r.json(), "SOPInstanceUID") == sorted(sops)


def test_universal_matching_returns_the_key(serve):
    g = serve()
    s = stored_people(g)
    r = qido(g, "/studies", {"StudyDescription": ""}).json()
    assert uids(r) == sorted(v[0] for v in s.values())
    # A universal key is returned although it is not a default attribute.
    assert sorted(value(x, "StudyDescription") for x in r) == [
        "QIDO STUDY A", "QIDO STUDY B", "QIDO STUDY C"]


def test_wildcard_matching(serve):
    g = serve()
    s = stored_people(g)
    c = g.client()
    assert uids(c.search_for_studies(search_filters={"PatientName": "QIDO^*"})) == sorted(
        [s["A"][0], s["B"][0]])
    assert uids(c.search_for_studies(search_filters={"PatientName": "QIDO*"})) == sorted(
        v[0] for v in s.values())
    assert uids(c.search_for_studies(search_filters={"AccessionNumber": "ACC-?1"})) == [s["A"][0]]
    assert uids(c.search_for_studies(search_filters={"PatientName": "*CAROL"})) == [s["C"][0]]


def test_date_and_time_range_matching(serve):
    g = serve()
    s = stored_people(g)
    c = g.client()
    only = {"PatientName": "QIDO*"}

    def studies(**f):
        return uids(c.search_for_studies(search_filters={**only, **f}))

    assert studies(StudyDate="20200101-20201231") == [s["A"][0]]
    assert studies(StudyDate="20200101-") == sorted([s["A"][0], s["B"][0]])
    assert studies(StudyDate="-20200114") == [s["C"][0]]
    assert studies(StudyTime="1500-1600") == [s["B"][0]]
    assert studies(StudyTime="10") == [s["A"][0]]
    assert studies(StudyDate="20210620", StudyTime="-1200") == []
    assert studies(PatientBirthDate="19450101-19451231") == sorted(v[0] for v in s.values())


def test_empty_value_matching(serve):
    g = serve()
    s = stored_people(g)
    r = qido(g, "/studies", {"PatientName": "QIDO*", "AccessionNumber": '""'}).json()
    assert uids(r) == [s["C"][0]]


def test_fuzzy_matching_of_person_names(serve):
    g = serve()
    s = stored_people(g)
    c = g.client()
    assert uids(c.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "ali"})) == [s["A"][0]]
    assert uids(c.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "qido^b"})) == [s["B"][0]]
    assert uids(c.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "qidoson"})) == [s["C"][0]]
    # Without fuzzy matching a part of a name matches nothing.
    assert c.search_for_studies(fuzzymatching=False, search_filters={"PatientName": "ali"}) == []
    assert c.search_for_studies(search_filters={"PatientName": "ali"}) == []


def test_modalities_in_study_and_counts(serve):
    g = serve()
    s = stored_people(g)
    c = g.client()
    [a] = c.search_for_studies(search_filters={"ModalitiesInStudy": "MR", "PatientName": "QIDO*"})
    assert value(a, "StudyInstanceUID") == s["A"][0]
    assert values(a, "ModalitiesInStudy") == ["CT", "MR"]
    assert values(a, "NumberOfStudyRelatedSeries") == [2]
    assert values(a, "NumberOfStudyRelatedInstances") == [4]
    series = c.search_for_series(study_instance_uid=s["A"][0])
    assert sorted(value(x, "Modality") for x in series) == ["CT", "MR"]
    assert all(values(x, "NumberOfSeriesRelatedInstances") == [2] for x in series)


def test_nested_routes(serve):
    g = serve()
    s = stored_people(g)
    c = g.client()
    study, dss = s["A"]
    series = c.search_for_series(study_instance_uid=study)
    assert uids(series, "SeriesInstanceUID") == sorted({d.SeriesInstanceUID for d in dss})
    inst = c.search_for_instances(study_instance_uid=study)
    assert uids(inst, "SOPInstanceUID") == sorted(d.SOPInstanceUID for d in dss)
    first = dss[0].SeriesInstanceUID
    inst = c.search_for_instances(study_instance_uid=study, series_instance_uid=first)
    assert uids(inst, "SOPInstanceUID") == sorted(
        d.SOPInstanceUID for d in dss if d.SeriesInstanceUID == first)
    assert value(inst[0], "RetrieveURL").endswith(
        f"/studies/{study}/series/{first}/instances/{value(inst[0], 'SOPInstanceUID')}")
    # A series of another study is not under this one; an unknown study has nothing.
    other = s["B"][1][0].SeriesInstanceUID
    assert c.search_for_instances(study_instance_uid=study, series_instance_uid=other) == []
    r = qido(g, f"/studies/{new_uid()}/series")
    assert r.status_code == 200 and r.json() == []
    assert r.headers["Content-Type"].startswith("application/dicom+json")
    # Matching under a nested route.
    r = qido(g, f"/studies/{study}/series", {"Modality": "MR"}).json()
    assert [value(x, "Modality") for x in r] == ["MR"]
    r = qido(g, f"/studies/{study}/instances", {"InstanceNumber": "2"}).json()
    assert len(r) == 2


def test_includefield(serve):
    g = serve()
    s = stored_people(g)
    c = g.client()
    [a] = c.search_for_studies(search_filters={"PatientID": "QA-771"})
    assert "00081030" not in a  # StudyDescription is not a default attribute
    [a] = c.search_for_studies(search_filters={"PatientID": "QA-771"},
                               fields=["StudyDescription", "00100021"])
    assert value(a, "StudyDescription") == "QIDO STUDY A"
    assert "00100021" in a
    r = qido(g, "/instances", {"PatientID": "QA-771", "includefield": "all", "limit": "1"}).json()
    assert value(r[0], "StudyDescription") == "QIDO STUDY A"
    assert value(r[0], "Modality") in ("CT", "MR")
    assert value(r[0], "Rows") == 128


def test_limit_and_offset(serve):
    g = serve()
    stored_people(g)
    everything = uids(qido(g, "/instances").json(), "SOPInstanceUID")
    assert len(everything) == 8
    pages = []
    for offset in range(0, 8, 3):
        r = qido(g, "/instances", {"limit": "3", "offset": str(offset)})
        assert r.status_code == 200
        got = r.json()
        assert len(got) == min(3, 8 - offset)
        if offset + 3 < 8:
            assert "299" in r.headers.get("Warning", "")
        pages += [value(x, "SOPInstanceUID") for x in got]
    assert sorted(pages) == everything and len(set(pages)) == 8
    assert qido(g, "/instances", {"offset": "8"}).json() == []
    # dicomweb-client pages with offset until an empty answer.
    assert len(g.client().search_for_instances(get_remaining=True, limit=4)) == 8


def test_bad_parameters_are_refused_without_echoing_them(serve):
    g = serve()
    stored_people(g)
    for params in [{"NoSuchKeywordQZ7": "1"}, {"limit": "QZ7"}, {"offset": "-QZ7"},
                   {"fuzzymatching": "QZ7"}, {"includefield": "NoSuchQZ7"},
                   {"StudyDate": "2020QZ7"}, {"StudyInstanceUID": "1.2.*QZ7"},
                   {"ReferencedStudySequence.StudyInstanceUID": "QZ7"}]:
        r = qido(g, "/studies", params)
        assert r.status_code == 400, params
        assert "QZ7" not in r.text, (params, r.text)
    # Only DICOM JSON is offered.
    r = requests.get(f"{g.url}/studies", timeout=30,
                     headers={"Accept": 'multipart/related; type="application/dicom+xml"'})
    assert r.status_code == 406
    # A key that cannot be matched at this level is ignored with a warning naming its tag.
    r = qido(g, "/studies", {"SOPInstanceUID": "1.2.3", "PatientID": "QA-771"})
    assert r.status_code == 200 and len(r.json()) == 1
    assert "(0008,0018)" in r.headers.get("Warning", "")


def test_the_catalogue_survives_a_restart_and_follows_deletions(serve, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    s = stored_people(g)
    c = g.client()
    before = c.search_for_instances()
    assert g.stop() == 0
    g = serve(data)
    c = g.client()
    after = c.search_for_instances()
    strip = lambda rs: sorted((sorted((k, str(v)) for k, v in r.items() if k != "00081190") for r in rs))
    assert strip(before) == strip(after) and len(after) == 8
    study, dss = s["A"]
    # An instance, a series, a study deleted: gone from the search at once.
    d0 = dss[0]
    assert requests.delete(f"{g.url}/studies/{study}/series/{d0.SeriesInstanceUID}/instances/"
                           f"{d0.SOPInstanceUID}", timeout=30).status_code == 204
    [a] = c.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert values(a, "NumberOfStudyRelatedInstances") == [3]
    mr = next(d for d in dss if d.Modality == "MR")
    assert requests.delete(f"{g.url}/studies/{study}/series/{mr.SeriesInstanceUID}",
                           timeout=30).status_code == 204
    [a] = c.search_for_studies(search_filters={"StudyInstanceUID": study})
    assert values(a, "ModalitiesInStudy") == ["CT"]
    assert requests.delete(f"{g.url}/studies/{study}", timeout=30).status_code == 204
    assert c.search_for_studies(search_filters={"StudyInstanceUID": study}) == []
    assert g.stop() == 0
    g = serve(data)
    assert g.client().search_for_studies(search_filters={"StudyInstanceUID": study}) == []
    assert len(g.client().search_for_instances()) == 4


def test_nothing_identifying_is_stored_in_plaintext_with_the_search_attributes(serve, tmp_path):
    data = tmp_path / "data"
    g = serve(data)
    s = stored_people(g)
    # The searches work, so the attributes are kept...
    assert len(g.client().search_for_studies(search_filters={"PatientName": "QIDO*"})) == 3
    assert g.stop() == 0
    # ...and none of them is on disk in plaintext.
    needles = set()
    for who, (name, pid, acc, date, time_, _) in PEOPLE.items():
        needles |= {name, pid, f"QIDO STUDY {who}", "QZREFERRER^PLANTED", "QZREFERRER"}
        needles |= {name.split("^")[1]}
        if acc:
            needles.add(acc)
        study, dss = s[who]
        needles.add(study)
        needles |= {d.SeriesInstanceUID for d in dss} | {d.SOPInstanceUID for d in dss}
    # Short values could occur by chance in ciphertext: only distinctive ones are sought.
    needles = [n.encode() for n in needles if len(n) >= 5]
    files = list(all_files(data))
    assert len(files) >= 4
    assert_no_plaintext(data, "".join(g.log), needles)


def dev_token(radveil_bin, data: Path, *args: str) -> str:
    r = subprocess.run([str(radveil_bin), "token", "--data", str(data), *args],
                       capture_output=True, text=True, env=clean_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_a_patient_token_finds_only_its_patient_at_every_level(serve, radveil_bin, tmp_path):
    data = tmp_path / "data"
    g = serve(data, "--dev")
    admin = dev_token(radveil_bin, data, "--role", "admin", "--scope", "user/ImagingStudy.cruds")
    s = {}
    for who in PEOPLE:
        study, dss = planted_study(who)
        body, ct = multipart([to_bytes(d) for d in dss])
        r = requests.post(g.url + "/studies", data=body, timeout=60,
                          headers={"Content-Type": ct, "Authorization": f"Bearer {admin}"})
        assert r.status_code == 200, r.text
        s[who] = (study, dss)
    alice = {"Authorization": f"Bearer {dev_token(radveil_bin, data, '--patient', 'QA-771')}",
             "Accept": "application/dicom+json"}
    staff = {"Authorization": f"Bearer {admin}", "Accept": "application/dicom+json"}

    def get(path, headers, **params):
        r = requests.get(g.url + path, params=params, headers=headers, timeout=30)
        assert r.status_code == 200, (path, r.status_code, r.text)
        return r.json()

    assert len(get("/studies", staff)) == 3
    mine, theirs = s["A"][0], s["B"][0]
    assert uids(get("/studies", alice)) == [mine]
    assert uids(get("/studies", alice, PatientName="QIDO*")) == [mine]
    assert get("/studies", alice, PatientID="QB-772") == []
    assert {value(x, "StudyInstanceUID") for x in get("/series", alice)} == {mine}
    assert {value(x, "StudyInstanceUID") for x in get("/instances", alice)} == {mine}
    assert len(get(f"/studies/{mine}/instances", alice)) == 4
    # Another patient's study is exactly as empty as one that does not exist.
    other = get(f"/studies/{theirs}/series", alice)
    assert other == get(f"/studies/{new_uid()}/series", alice) == []
    series = s["B"][1][0].SeriesInstanceUID
    assert get(f"/studies/{theirs}/series/{series}/instances", alice) == []
    assert len(get(f"/studies/{theirs}/series/{series}/instances", staff)) == 2
