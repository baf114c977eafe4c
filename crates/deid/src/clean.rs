//! Cleaning of free text (the C action of Clean Descriptors and Clean Structured Content,
//! and the scrub of text kept under other options): identifying values found elsewhere in
//! the same object are blanked wherever they appear, in the forms people write them, and so
//! are dates, long numbers (record numbers, phone numbers) and e-mail addresses.
//!
//! Text is decoded in its data set's Specific Character Set and compared in a folded form:
//! Unicode compatibility decomposition (NFKD) with combining marks dropped, lower case,
//! letters that have no decomposition mapped to their base (`ł` → `l`, `ø` → `o`, `ß` →
//! `ss`), katakana as hiragana; only letters and digits take part, so `GRZEŚKOWIAK`,
//! `Grzeskowiak` and `grześ-kowiak` are one word, `12.03.1958` and `12 03 1958` one date.
//! A match must start and end at word boundaries (a name inside a longer word is left),
//! except where it begins or ends with a CJK character: those scripts write names without
//! separators. What matched is blanked in the encoded bytes, character by character, with
//! a neutral character of the same length in the same set ([`TextChar::blank`]).
//!
//! Dates are recognised rather than listed: runs of digits and month names next to each
//! other (`12-Mar-1958`, `March 12th, 1958`, `1958/03/12`, `3.12.58`, `19580312`) are read
//! as day, month and year in each order they are written in, and blanked when they are one
//! of the object's dates (or, when cleaning rather than scrubbing kept text, any date).

use radveil_part10::charset::{CharacterSet, Decoded, TextChar};
use unicode_normalization::char::{decompose_compatible, is_combining_mark};

/// Identifying values collected from an object before it is de-identified (names, IDs,
/// addresses, kept folded) and its dates.
#[derive(Debug, Default, Clone)]
pub struct PhiTokens {
    /// Folded letters and digits of each value (distinct).
    tokens: Vec<String>,
    /// The object's dates (year, month, day), distinct.
    dates: Vec<(u16, u8, u8)>,
}

/// Month names and abbreviations, folded, as dates are written in English, German,
/// French, Spanish, Italian, Dutch, Portuguese and Polish (nominative and genitive).
const MONTH_NAMES: [&[&str]; 12] = [
    &[
        "january", "jan", "januar", "janvier", "janv", "enero", "ene", "gennaio", "gen", "januari",
        "janeiro", "styczen", "stycznia", "sty",
    ],
    &[
        "february",
        "feb",
        "febr",
        "februar",
        "fevrier",
        "fevr",
        "fev",
        "febrero",
        "febbraio",
        "februari",
        "fevereiro",
        "luty",
        "lutego",
        "lut",
    ],
    &[
        "march", "mar", "marz", "maerz", "mrz", "mars", "marzo", "maart", "marco", "marzec",
        "marca",
    ],
    &[
        "april", "apr", "avril", "avr", "abril", "abr", "aprile", "kwiecien", "kwietnia", "kwi",
    ],
    &[
        "may", "mai", "mayo", "maggio", "mag", "mei", "maio", "maj", "maja",
    ],
    &[
        "june", "jun", "juni", "juin", "junio", "giugno", "giu", "junho", "czerwiec", "czerwca",
        "cze",
    ],
    &[
        "july", "jul", "juli", "juillet", "juil", "julio", "luglio", "lug", "julho", "lipiec",
        "lipca", "lip",
    ],
    &[
        "august", "aug", "aout", "agosto", "ago", "augustus", "sierpien", "sierpnia", "sie",
    ],
    &[
        "september",
        "sep",
        "sept",
        "septembre",
        "septiembre",
        "settembre",
        "set",
        "setembro",
        "wrzesien",
        "wrzesnia",
        "wrz",
    ],
    &[
        "october",
        "oct",
        "oktober",
        "okt",
        "octobre",
        "octubre",
        "ottobre",
        "ott",
        "outubro",
        "out",
        "pazdziernik",
        "pazdziernika",
        "paz",
    ],
    &[
        "november",
        "nov",
        "novembre",
        "noviembre",
        "novembro",
        "listopad",
        "listopada",
        "lis",
    ],
    &[
        "december",
        "dec",
        "dezember",
        "dez",
        "decembre",
        "diciembre",
        "dic",
        "dicembre",
        "dezembro",
        "grudzien",
        "grudnia",
        "gru",
    ],
];

/// Folds one character into `out` (see the module's description).
pub fn fold_into(c: char, out: &mut String) {
    if c.is_ascii() {
        out.push(c.to_ascii_lowercase());
        return;
    }
    decompose_compatible(c, |d| {
        if is_combining_mark(d) {
            return;
        }
        for l in d.to_lowercase() {
            match l {
                'ł' | 'ŀ' => out.push('l'),
                'ø' => out.push('o'),
                'đ' | 'ð' => out.push('d'),
                'ħ' => out.push('h'),
                'ı' => out.push('i'),
                // Final sigma is sigma (an upper-case name lower-cases to σ).
                'ς' => out.push('σ'),
                'ŧ' => out.push('t'),
                'ß' => out.push_str("ss"),
                'æ' => out.push_str("ae"),
                'œ' => out.push_str("oe"),
                'þ' => out.push_str("th"),
                // Katakana as hiragana (ァ..ヶ → ぁ..ゖ).
                '\u{30A1}'..='\u{30F6}' => {
                    out.push(char::from_u32(u32::from(l) - 0x60).unwrap_or(l));
                }
                _ => out.push(l),
            }
        }
    });
}

/// The folded letters and digits of `text`: how tokens are kept and texts compared.
pub fn folded_key(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut one = String::new();
    for c in text.chars() {
        one.clear();
        fold_into(c, &mut one);
        out.extend(one.chars().filter(|c| c.is_alphanumeric()));
    }
    out
}

/// Whether `c` belongs to a script that writes names without spaces (Han, kana, Hangul).
fn is_cjk(c: char) -> bool {
    matches!(u32::from(c),
        0x3040..=0x30FF | 0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF
        | 0xAC00..=0xD7AF | 0x1100..=0x11FF | 0x3130..=0x318F | 0x20000..=0x2FA1F)
}

impl PhiTokens {
    /// Adds one identifying value. Values of fewer than three letters and digits are
    /// ignored unless `short_ok` (name components, two), since blanking every short word
    /// would destroy descriptions; a value in a CJK script is kept from one character.
    pub fn add(&mut self, value: &str, short_ok: bool) {
        let key = folded_key(value);
        let n = key.chars().count();
        let cjk = key.chars().any(is_cjk);
        let min = if cjk {
            1
        } else if short_ok {
            2
        } else {
            3
        };
        if n < min {
            return;
        }
        if !self.tokens.contains(&key) {
            self.tokens.push(key);
        }
    }

    /// Adds a person name (one value of a PN element, decoded): every component group
    /// (alphabetic, ideographic, phonetic), each component, each part of a hyphenated or
    /// double-barrelled one, and family and given names joined in both orders.
    pub fn add_person_name(&mut self, value: &str) {
        self.add(value, false);
        for group in value.split('=') {
            self.add(group, false);
            let components: Vec<&str> = group.split('^').collect();
            for comp in &components {
                self.add(comp, true);
                for part in comp.split(|c: char| !c.is_alphanumeric()) {
                    self.add(part, true);
                }
            }
            if let [family, given, ..] = components[..] {
                self.add(&format!("{family}{given}"), false);
                self.add(&format!("{given}{family}"), false);
                // A part of a double-barrelled family name with the given name.
                for part in family.split(|c: char| !c.is_alphanumeric()) {
                    if part != family {
                        self.add(&format!("{given}{part}"), false);
                        self.add(&format!("{part}{given}"), false);
                    }
                }
            }
        }
    }

    /// Adds a date (DA, or the date of a DT: its first eight digits); anything else is
    /// added as a value. Dates are found in text in the forms people write them (see the
    /// module's description), not as listed strings.
    pub fn add_date(&mut self, value: &str) {
        let v = value.trim();
        let b = v.as_bytes();
        let date = (b.len() >= 8 && b[..8].iter().all(u8::is_ascii_digit))
            .then(|| {
                let y = v[..4].parse::<u16>().ok()?;
                let m = v[4..6].parse::<u8>().ok()?;
                let d = v[6..8].parse::<u8>().ok()?;
                ((1..=12).contains(&m) && (1..=31).contains(&d)).then_some((y, m, d))
            })
            .flatten();
        match date {
            Some(d) => {
                if !self.dates.contains(&d) {
                    self.dates.push(d);
                }
            }
            None => self.add(v, false),
        }
    }

    /// Number of distinct values and dates collected.
    pub fn len(&self) -> usize {
        self.tokens.len().saturating_add(self.dates.len())
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty() && self.dates.is_empty()
    }
}

/// What cleaning one value did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scrubbed {
    /// Some characters were blanked.
    pub changed: bool,
    /// Some bytes did not decode in the value's character set: what they say could not be
    /// checked, so the value cannot be called clean.
    pub undecodable: bool,
}

/// The decoded characters of a value and their folded letters and digits, with where each
/// folded character came from.
struct Folded {
    chars: Vec<TextChar>,
    /// Folded letters and digits.
    key: String,
    /// For each byte of `key`: the index in `chars` of the character it came from, and
    /// whether it is the first (and whether the last) folded character of it.
    origin: Vec<(usize, bool, bool)>,
}

impl Folded {
    fn of(decoded: Decoded) -> Folded {
        let mut key = String::with_capacity(decoded.chars.len());
        let mut origin = Vec::with_capacity(decoded.chars.len());
        let mut one = String::new();
        for (i, c) in decoded.chars.iter().enumerate() {
            one.clear();
            fold_into(c.ch, &mut one);
            let kept: Vec<char> = one.chars().filter(|c| c.is_alphanumeric()).collect();
            let n = kept.len();
            for (k, f) in kept.into_iter().enumerate() {
                for _ in 0..f.len_utf8() {
                    origin.push((i, k == 0, k + 1 == n));
                }
                key.push(f);
            }
        }
        Folded {
            chars: decoded.chars,
            key,
            origin,
        }
    }

    /// Whether the character before `i` ends a word there (none, or not a letter or digit).
    fn boundary_before(&self, i: usize) -> bool {
        i == 0
            || self
                .chars
                .get(i - 1)
                .is_none_or(|c| !c.ch.is_alphanumeric() && !is_combining_mark(c.ch))
    }

    fn boundary_after(&self, i: usize) -> bool {
        self.chars
            .get(i + 1)
            .is_none_or(|c| !c.ch.is_alphanumeric() && !is_combining_mark(c.ch))
    }
}

/// Decodes `value` as `set` says, for cleaning: in the default repertoire, bytes above
/// ASCII (which files carry without declaring a set) are read as UTF-8 when the value is
/// valid UTF-8, else as Latin-1, so a name written so is still found.
pub fn decode_for_cleaning(set: &CharacterSet, value: &[u8]) -> Decoded {
    let d = set.decode(value);
    if d.undecodable == 0 || !set.is_default() {
        return d;
    }
    let fallback = if std::str::from_utf8(value).is_ok() {
        "ISO_IR 192"
    } else {
        "ISO_IR 100"
    };
    CharacterSet::from_terms([fallback])
        .map(|s| s.decode(value))
        .unwrap_or(d)
}

/// Cleans one text value in place: the tokens' values (when given) and, with `patterns`,
/// dates, long numbers and e-mail addresses are blanked. Its length does not change.
pub fn scrub(
    value: &mut [u8],
    set: &CharacterSet,
    tokens: Option<&PhiTokens>,
    patterns: bool,
) -> Scrubbed {
    let decoded = decode_for_cleaning(set, value);
    let undecodable = decoded.undecodable > 0;
    let folded = Folded::of(decoded);
    let mut blank = vec![false; folded.chars.len()];
    for token in tokens.map(|t| &t.tokens[..]).unwrap_or_default() {
        let (key, t) = (folded.key.as_bytes(), token.as_bytes());
        let Some(&lead) = t.first() else { continue };
        // A token starts with a UTF-8 lead byte, so a byte match starts at a character.
        for s in (0..key.len().saturating_sub(t.len() - 1)).filter(|&s| key[s] == lead) {
            if !key[s..].starts_with(t) {
                continue;
            }
            let e = s + t.len();
            let (Some(&(first, starts, _)), Some(&(last, _, ends))) =
                (folded.origin.get(s), folded.origin.get(e - 1))
            else {
                continue;
            };
            let cjk_start = token.chars().next().is_some_and(is_cjk);
            let cjk_end = token.chars().next_back().is_some_and(is_cjk);
            let start_ok = cjk_start || (starts && folded.boundary_before(first));
            let end_ok = cjk_end || (ends && folded.boundary_after(last));
            if start_ok && end_ok {
                mark_range(&folded.chars, &mut blank, first, last);
            }
        }
    }
    let dates = tokens.map(|t| &t.dates[..]).unwrap_or_default();
    if patterns || !dates.is_empty() {
        mark_dates(&folded.chars, &mut blank, dates, patterns);
    }
    if patterns {
        mark_patterns(&folded.chars, &mut blank);
    }
    let mut changed = false;
    for (c, b) in folded.chars.iter().zip(&blank) {
        if *b {
            c.blank(value);
            changed = true;
        }
    }
    Scrubbed {
        changed,
        undecodable,
    }
}

/// Marks the letters and digits of `first..=last` (and combining marks after the last):
/// separators stay (`XX-XXX-XXXX`).
fn mark_range(chars: &[TextChar], blank: &mut [bool], first: usize, mut last: usize) {
    while chars.get(last + 1).is_some_and(|c| is_combining_mark(c.ch)) {
        last += 1;
    }
    for (c, b) in chars[first..=last].iter().zip(&mut blank[first..=last]) {
        if c.ch.is_alphanumeric() || is_combining_mark(c.ch) {
            *b = true;
        }
    }
}

/// A run of digits or of letters in a text: its characters' span and its folded form.
struct Run {
    first: usize,
    last: usize,
    text: String,
    digits: bool,
}

/// The runs of digits and of letters, split where one kind ends and the other begins.
fn runs(chars: &[TextChar]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    let mut one = String::new();
    for (i, c) in chars.iter().enumerate() {
        one.clear();
        fold_into(c.ch, &mut one);
        for f in one.chars().filter(|f| f.is_alphanumeric()) {
            let digits = f.is_ascii_digit();
            match out.last_mut() {
                Some(r) if r.digits == digits && (r.last == i || r.last + 1 == i) => {
                    r.last = i;
                    r.text.push(f);
                }
                _ => out.push(Run {
                    first: i,
                    last: i,
                    text: f.to_string(),
                    digits,
                }),
            }
        }
    }
    out
}

/// The month a folded word names, if it names one.
fn month_of(word: &str) -> Option<u8> {
    MONTH_NAMES
        .iter()
        .position(|names| names.contains(&word))
        .and_then(|m| u8::try_from(m + 1).ok())
}

/// Whether the runs `a` and `b` are next to each other in a date: only spaces and date
/// punctuation between them, and not much of it.
fn adjacent(chars: &[TextChar], a: &Run, b: &Run) -> bool {
    b.first > a.last
        && b.first - a.last <= 3
        && chars[a.last + 1..b.first]
            .iter()
            .all(|c| matches!(c.ch, ' ' | '-' | '/' | '.' | ',' | '\'' | '_'))
}

/// Whether (year, month, day) read from text is `date`: a two-digit year is its last two.
fn same_date(y: u32, two_digit_year: bool, m: u32, d: u32, date: (u16, u8, u8)) -> bool {
    let year = u32::from(date.0);
    (if two_digit_year {
        y == year % 100
    } else {
        y == year
    }) && m == u32::from(date.1)
        && d == u32::from(date.2)
}

/// Whether the parts read as a date: of `dates`, or (with `any`) any valid date.
fn is_date(y: u32, yy: bool, m: u32, d: u32, dates: &[(u16, u8, u8)], any: bool) -> bool {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return false;
    }
    (any && (!yy || y < 100) && (yy || (1800..=2200).contains(&y)))
        || dates.iter().any(|&t| same_date(y, yy, m, d, t))
}

/// Marks dates written in text: three runs (day, month, year in the orders people write
/// them; the month a number or a name; an ordinal suffix on the day) or one run of six or
/// eight digits.
fn mark_dates(chars: &[TextChar], blank: &mut [bool], dates: &[(u16, u8, u8)], any: bool) -> bool {
    let mut marked = false;
    let runs = runs(chars);
    let num = |r: &Run| -> Option<(u32, bool)> {
        (r.digits && (1..=4).contains(&r.text.len()))
            .then(|| r.text.parse::<u32>().ok().map(|n| (n, r.text.len() <= 2)))
            .flatten()
    };
    let mut i = 0;
    while i < runs.len() {
        let r0 = &runs[i];
        // One run of digits: YYYYMMDD, DDMMYYYY, MMDDYYYY, YYMMDD, DDMMYY, MMDDYY.
        if r0.digits && (r0.text.len() == 8 || r0.text.len() == 6) {
            let t = &r0.text;
            let p = |a: usize, b: usize| t[a..b].parse::<u32>().unwrap_or(0);
            let found = if t.len() == 8 {
                is_date(p(0, 4), false, p(4, 6), p(6, 8), dates, any)
                    || is_date(p(4, 8), false, p(2, 4), p(0, 2), dates, false)
                    || is_date(p(4, 8), false, p(0, 2), p(2, 4), dates, false)
            } else {
                is_date(p(0, 2), true, p(2, 4), p(4, 6), dates, false)
                    || is_date(p(4, 6), true, p(2, 4), p(0, 2), dates, false)
                    || is_date(p(4, 6), true, p(0, 2), p(2, 4), dates, false)
            };
            if found {
                mark_range(chars, blank, r0.first, r0.last);
                marked = true;
            }
            i += 1;
            continue;
        }
        // Three parts, an ordinal suffix allowed right after a day.
        let mut parts: Vec<&Run> = Vec::with_capacity(3);
        let mut j = i;
        while parts.len() < 3 && j < runs.len() {
            let r = &runs[j];
            if let Some(prev) = parts.last() {
                let suffix = !r.digits
                    && matches!(r.text.as_str(), "st" | "nd" | "rd" | "th")
                    && prev.digits
                    && r.first == prev.last + 1;
                if suffix {
                    j += 1;
                    continue;
                }
                let last_end = runs[j - 1].last;
                let gap_ok = r.first > last_end
                    && (r.first - last_end <= 3)
                    && adjacent(chars, &runs[j - 1], r);
                if !gap_ok {
                    break;
                }
            }
            parts.push(r);
            j += 1;
        }
        if parts.len() == 3 {
            let month_name = |r: &Run| (!r.digits).then(|| month_of(&r.text)).flatten();
            let (a, b, c) = (parts[0], parts[1], parts[2]);
            let mut found = false;
            // Day month year, month day year (either with the month a name or a number).
            if let (Some((d, _)), Some((y, yy))) = (num(a), num(c)) {
                let m = month_name(b).map(u32::from).or_else(|| num(b).map(|n| n.0));
                if let Some(m) = m {
                    // A month by name is a date whatever it is; numbers only when they are
                    // one of the object's (version numbers look like 1.5.10).
                    let named = month_name(b).is_some();
                    found |= is_date(y, yy, m, d, dates, any && named)
                        || (!named && is_date(y, yy, d, m, dates, false));
                }
            }
            if let (Some(m), Some((d, _)), Some((y, yy))) = (month_name(a), num(b), num(c)) {
                found |= is_date(y, yy, u32::from(m), d, dates, any);
            }
            // Year month day.
            if let (Some((y, false)), Some((d, _))) = (num(a), num(c)) {
                let m = month_name(b).map(u32::from).or_else(|| num(b).map(|n| n.0));
                if let Some(m) = m {
                    found |= is_date(y, false, m, d, dates, any && month_name(b).is_some());
                }
            }
            if found {
                let last = runs[j - 1].last.max(c.last);
                mark_range(chars, blank, a.first, last);
                marked = true;
                i = j;
                continue;
            }
        }
        i += 1;
    }
    marked
}

/// The ASCII digit a character stands for (fullwidth digits too), if any.
fn digit(c: char) -> Option<char> {
    if c.is_ascii_digit() {
        return Some(c);
    }
    let mut s = String::new();
    fold_into(c, &mut s);
    let mut it = s.chars();
    match (it.next(), it.next()) {
        (Some(d), None) if d.is_ascii_digit() => Some(d),
        _ => None,
    }
}

/// Marks patterns that identify whatever object they appear in: dates written with
/// separators or as eight digits, runs of five or more digits, and e-mail addresses.
fn mark_patterns(chars: &[TextChar], blank: &mut [bool]) -> Found {
    let mut found = Found::default();
    let n = chars.len();
    let alnum = |i: usize| chars[i].ch.is_alphanumeric();
    let mut i = 0;
    while i < n {
        if digit(chars[i].ch).is_some() && (i == 0 || !alnum(i - 1)) {
            // A run of digits and date separators.
            let mut j = i;
            let mut ndigits = 0;
            let mut groups = vec![0usize];
            while j < n && (digit(chars[j].ch).is_some() || matches!(chars[j].ch, '-' | '/' | '.'))
            {
                if digit(chars[j].ch).is_some() {
                    ndigits += 1;
                    if let Some(g) = groups.last_mut() {
                        *g += 1;
                    }
                } else {
                    groups.push(0);
                }
                j += 1;
            }
            let date_like = groups.len() == 3
                && groups.contains(&4)
                && groups.iter().all(|&g| (1..=4).contains(&g));
            let long_number = groups.iter().any(|&g| g >= 5);
            if (date_like || long_number) && ndigits >= 5 {
                found.dates |= date_like;
                found.numbers |= long_number;
                for k in i..j {
                    if digit(chars[k].ch).is_some() {
                        blank[k] = true;
                    }
                }
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    found.phones = mark_phones(chars, blank);
    found.addresses = mark_addresses(chars, blank);
    found.titled_names = mark_titled_names(chars, blank);
    found.names = mark_name_pairs(chars, blank);
    // e-mail addresses: blank the whole word around an '@'.
    let mut k = 0;
    while k < n {
        if matches!(chars[k].ch, '@' | '＠') {
            let mut s = k;
            while s > 0 && !chars[s - 1].ch.is_whitespace() {
                s -= 1;
            }
            let mut e = k + 1;
            while e < n && !chars[e].ch.is_whitespace() {
                e += 1;
            }
            blank[s..e].iter_mut().for_each(|b| *b = true);
            found.emails = true;
            k = e;
        }
        k += 1;
    }
    found
}

/// Which identifying patterns a text holds (see [`find_patterns`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    /// A date: with a month name in any order, or numeric with a four-digit year, or eight
    /// digits that read as one.
    pub dates: bool,
    /// A run of five or more digits (record numbers and other IDs).
    pub numbers: bool,
    /// An e-mail address.
    pub emails: bool,
    /// A phone number.
    pub phones: bool,
    /// A street address.
    pub addresses: bool,
    /// A name after a title (`Dr. Watson`).
    pub titled_names: bool,
    /// A first name and a surname of the lexicon next to each other (`John Smith`,
    /// `SMITH^JOHN`, `Kowalczyk, Anna`).
    pub names: bool,
}

/// The person-name lexicon (`tools/gen_names.py`): US Census 1990 first names and
/// surnames, and the words that are not taken as names on their own.
struct Lexicon {
    first: std::collections::HashSet<&'static str>,
    last: std::collections::HashSet<&'static str>,
    not: std::collections::HashSet<&'static str>,
}

fn lexicon() -> &'static Lexicon {
    static L: std::sync::OnceLock<Lexicon> = std::sync::OnceLock::new();
    L.get_or_init(|| {
        let set = |text: &'static str| {
            text.lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .collect()
        };
        Lexicon {
            first: set(include_str!("../data/first-names.txt")),
            last: set(include_str!("../data/surnames.txt")),
            not: set(include_str!("../data/not-names.txt")),
        }
    })
}

/// Marks people named by a first name and a surname of the lexicon next to each other:
/// `John Smith`, `John Q. Smith`, `JOHN SMITH`, `Smith, John`, `SMITH^JOHN`, `SMITH_JOHN`.
/// In text with lower-case letters both must be capitalised and at most one may be a word
/// that is also ordinary (`Mark Johnson`, not `Black White`); in capitals neither may
/// (`ZOE HEAD` is a name and a body part). A name alone is not
/// taken: without context it cannot be told from a word.
fn mark_name_pairs(chars: &[TextChar], blank: &mut [bool]) -> bool {
    let lex = lexicon();
    let ws = words(chars, |c| !c.is_alphabetic());
    if ws.len() < 2 {
        return false;
    }
    let mixed = chars.iter().any(|c| c.ch.is_lowercase());
    let folded: Vec<String> = ws.iter().map(|w| folded_key(&w.2)).collect();
    let ok = |k: usize| {
        let w = &ws[k].2;
        w.chars().count() >= 2 && (!mixed || w.chars().next().is_some_and(char::is_uppercase))
    };
    let gap = |a: usize, b: usize| -> String {
        chars[ws[a].1 + 1..ws[b].0].iter().map(|c| c.ch).collect()
    };
    let mut any = false;
    for i in 0..ws.len() - 1 {
        // An initial between first name and surname (`John Q. Smith`).
        let mut j = i + 1;
        if ws[j].2.chars().count() == 1
            && j + 1 < ws.len()
            && matches!(gap(j, j + 1).as_str(), " " | ". ")
        {
            j += 1;
        }
        if !ok(i) || !ok(j) {
            continue;
        }
        let (a, b) = (folded[i].as_str(), folded[j].as_str());
        // Two different words; a first name of at least three letters (`PA PA`, `In Der`).
        if a == b {
            continue;
        }
        // In capitals (`ZOE HEAD`) an ordinary word is never half a name; in mixed case
        // capitalisation tells, so one of the two may be (`Mark Johnson`).
        let ordinary = usize::from(lex.not.contains(a)) + usize::from(lex.not.contains(b));
        if ordinary > usize::from(mixed) {
            continue;
        }
        let g = gap(i, i + 1);
        let forward = matches!(g.as_str(), " " | "_" | "  ")
            && a.chars().count() >= 3
            && lex.first.contains(a)
            && lex.last.contains(b);
        let inverted = matches!(g.as_str(), ", " | "," | "^" | "_" | " ")
            && j == i + 1
            && lex.last.contains(a)
            && b.chars().count() >= 3
            && lex.first.contains(b)
            && (g != " " || !mixed);
        if forward || inverted {
            mark_range(chars, blank, ws[i].0, ws[j].1);
            any = true;
        }
    }
    any
}

/// The identifying patterns in a decoded text, as cleaning finds them (for checking text
/// that some other tool wrote).
pub fn find_patterns(chars: &[TextChar]) -> Found {
    let mut blank = vec![false; chars.len()];
    let mut found = mark_patterns(chars, &mut blank);
    found.dates |= mark_dates(chars, &mut blank, &[], true);
    found
}

/// Marks phone numbers: digits in groups separated by spaces, dashes, dots or
/// parentheses, optionally after `+`, seven to fifteen digits in at least two groups, no
/// group longer than five (longer runs are record numbers).
fn mark_phones(chars: &[TextChar], blank: &mut [bool]) -> bool {
    let n = chars.len();
    let ch = |i: usize| chars[i].ch;
    let mut any = false;
    let mut i = 0;
    while i < n {
        let starts = digit(ch(i)).is_some() || ch(i) == '+' || ch(i) == '(';
        if !starts || (i > 0 && ch(i - 1).is_alphanumeric()) {
            i += 1;
            continue;
        }
        let mut j = i;
        let (mut digits, mut groups, mut longest, mut run) = (0usize, 0usize, 0usize, 0usize);
        while j < n
            && (digit(ch(j)).is_some() || matches!(ch(j), '+' | '(' | ')' | '-' | '.' | ' '))
        {
            if digit(ch(j)).is_some() {
                if run == 0 {
                    groups += 1;
                }
                run += 1;
                digits += 1;
                longest = longest.max(run);
            } else {
                run = 0;
                if ch(j) == ' ' && j + 1 < n && ch(j + 1) == ' ' {
                    break;
                }
            }
            j += 1;
        }
        let ends_clean = j >= n || !ch(j).is_alphanumeric();
        if ends_clean && (7..=15).contains(&digits) && groups >= 2 && longest <= 5 {
            for (c, b) in chars[i..j].iter().zip(&mut blank[i..j]) {
                *b |= digit(c.ch).is_some();
            }
            any = true;
        }
        i = j.max(i + 1);
    }
    any
}

/// Words of a text: runs of letters and digits (and `'`, `.` inside), with their span.
fn words(chars: &[TextChar], split: impl Fn(char) -> bool) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in chars.iter().enumerate() {
        if split(c.ch) {
            if let Some(s) = start.take() {
                out.push((s, i - 1, chars[s..i].iter().map(|c| c.ch).collect()));
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((
            s,
            chars.len() - 1,
            chars[s..].iter().map(|c| c.ch).collect(),
        ));
    }
    out
}

/// Titles people's names follow in clinical text.
const TITLES: &[&str] = &[
    "dr",
    "doctor",
    "mr",
    "mrs",
    "ms",
    "miss",
    "prof",
    "professor",
    "herr",
    "frau",
    "pan",
    "pani",
    "mme",
    "mlle",
    "dott",
    "sig",
    "sra",
    "sr",
];

/// Marks a capitalised word after a title (`Dr Smith`, `Mrs. O'Brien`, `Prof. Nowak`).
/// `MR`, `DR` and `MS` in capitals without a dot are modalities (`MR BRAIN`), not titles.
fn mark_titled_names(chars: &[TextChar], blank: &mut [bool]) -> bool {
    let ws = words(chars, char::is_whitespace);
    let mut any = false;
    for pair in ws.windows(2) {
        let (t, (s, e, w)) = (&pair[0].2, &pair[1]);
        let dotted = t.ends_with('.');
        let title = folded_key(t.trim_end_matches('.'));
        if !TITLES.contains(&title.as_str()) || (!dotted && t.chars().all(|c| !c.is_lowercase())) {
            continue;
        }
        let first_upper = w.chars().next().is_some_and(char::is_uppercase);
        let letters = w.chars().filter(|c| c.is_alphabetic()).count();
        let blanked = folded_key(w).chars().all(|c| c == 'x');
        if first_upper && letters >= 2 && !blanked && !w.chars().any(|c| c.is_ascii_digit()) {
            mark_range(chars, blank, *s, *e);
            any = true;
        }
    }
    any
}

/// Street words, folded.
const STREET: &[&str] = &[
    "street",
    "st",
    "road",
    "rd",
    "avenue",
    "ave",
    "lane",
    "ln",
    "drive",
    "boulevard",
    "blvd",
    "court",
    "place",
    "square",
    "strasse",
    "str",
    "weg",
    "gasse",
    "allee",
    "platz",
    "rue",
    "calle",
    "via",
    "viale",
    "piazza",
    "ulica",
    "ul",
    "aleja",
    "al",
    "straat",
    "laan",
];

/// Marks street addresses: a house number, one or two capitalised words and a street word
/// (`12 Baker Street`), a street word, a name and a number (`ul. Długa 5`), or a compound
/// street name and a number (`Hauptstraße 12`).
fn mark_addresses(chars: &[TextChar], blank: &mut [bool]) -> bool {
    let ws = words(chars, |c| !c.is_alphanumeric());
    let w = |k: usize| ws.get(k).map_or("", |x| x.2.as_str());
    let number = |w: &str| {
        let digits = w.chars().take_while(char::is_ascii_digit).count();
        (1..=5).contains(&digits) && w.chars().count() - digits <= 1
    };
    let cap = |w: &str| {
        w.chars().next().is_some_and(char::is_uppercase)
            && w.chars().filter(|c| c.is_alphabetic()).count() >= 2
    };
    let street = |w: &str| STREET.contains(&folded_key(w).as_str());
    let compound = |w: &str| {
        let f = folded_key(w);
        f.len() > 6
            && [
                "strasse", "weg", "gasse", "allee", "platz", "straat", "laan",
            ]
            .iter()
            .any(|s| f.ends_with(s))
    };
    let mut any = false;
    for i in 0..ws.len() {
        let mut span = None;
        for names in 1..=2 {
            let caps = |from: usize| (from..from + names).all(|k| cap(w(k)));
            let a = number(w(i)) && caps(i + 1) && street(w(i + 1 + names));
            let b = street(w(i)) && caps(i + 1) && number(w(i + 1 + names));
            if a || b {
                span = Some(i + 1 + names);
                break;
            }
        }
        if span.is_none() && compound(w(i)) && number(w(i + 1)) {
            span = Some(i + 1);
        }
        if let Some(last) = span {
            mark_range(chars, blank, ws[i].0, ws[last].1);
            any = true;
        }
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &str) -> CharacterSet {
        CharacterSet::from_value(v.as_bytes()).unwrap()
    }

    /// Cleans `text` (UTF-8) with the tokens and patterns; returns the result.
    fn clean(t: &PhiTokens, text: &str) -> String {
        let mut b = text.as_bytes().to_vec();
        scrub(&mut b, &set("ISO_IR 192"), Some(t), true);
        String::from_utf8(b).unwrap()
    }

    fn name(n: &str) -> PhiTokens {
        let mut t = PhiTokens::default();
        t.add_person_name(n);
        t
    }

    #[test]
    fn names_ids_and_dates_found_elsewhere_are_blanked() {
        let mut t = name("DOE^JANE^Q");
        t.add("MRN12345", false);
        t.add_date("19800314");
        let s = clean(&t, "CT head for Jane Doe (mrn12345) born 03/14/1980, Q");
        assert!(!s.to_uppercase().contains("JANE"), "{s}");
        assert!(!s.to_uppercase().contains("DOE"), "{s}");
        assert!(!s.to_uppercase().contains("MRN12345"), "{s}");
        assert!(!s.contains("03/14/1980"), "{s}");
        assert!(s.starts_with("CT head for"));
    }

    #[test]
    fn tokens_match_whole_words_only() {
        let t = name("LI^AN");
        assert_eq!(clean(&t, "CLINICAL ANGIO"), "CLINICAL ANGIO");
    }

    #[test]
    fn case_and_accents_fold() {
        let t = name("Grześkowiak^Łucja");
        assert_eq!(clean(&t, "GRZEŚKOWIAK ŁUCJA"), "XXXXXXXXXXXX XXXXXX");
        assert_eq!(clean(&t, "grzeskowiak lucja"), "XXXXXXXXXXX XXXXX");
        let t = name("Lefèvre^Zoë");
        assert_eq!(clean(&t, "MR LEFEVRE ZOE brain"), "MR XXXXXXX XXX brain");
        let t = name("Straße^Jörg");
        assert_eq!(clean(&t, "STRASSE J"), "XXXXXXX J");
        // Decomposed accents (a letter then a combining mark) are one letter.
        let t = name("Διονυσιος");
        assert_eq!(clean(&t, "ΔΙΟΝΥΣΙΟΣ"), "XXXXXXXXXXXXXXXXXX");
        let t = name("Müller");
        let s = clean(&t, "Mu\u{308}ller knee");
        assert_eq!(s, "XXXXXXXX knee"); // the mark's two bytes blanked too
    }

    #[test]
    fn parts_and_joins() {
        let t = name("Kowalczyk-Ashby^Anna");
        assert_eq!(clean(&t, "Ashby knee"), "XXXXX knee");
        assert_eq!(clean(&t, "ANNA_KOWALCZYK"), "XXXX_XXXXXXXXX");
        assert_eq!(clean(&t, "Kowalczyk-Ashby, Anna"), "XXXXXXXXX-XXXXX, XXXX");
        assert_eq!(clean(&t, "Ashby's scan"), "XXXXX's scan");
        assert_eq!(clean(&t, "AnnaKowalczyk"), "XXXXXXXXXXXXX");
        // Not inside a longer word.
        assert_eq!(clean(&t, "Ashbyville"), "Ashbyville");
    }

    #[test]
    fn cjk_names_without_separators_and_phonetic_groups() {
        let t = name("Yamada^Hanako=山田^花子=やまだ^はなこ");
        assert_eq!(clean(&t, "山田花子様 頭部"), "XXXXXXXXXXXX様 頭部");
        assert_eq!(clean(&t, "ヤマダ ハナコ"), "XXXXXXXXX XXXXXXXXX");
        assert_eq!(clean(&t, "YAMADA"), "XXXXXX");
    }

    #[test]
    fn dates_in_written_forms() {
        let mut t = PhiTokens::default();
        t.add_date("19580312");
        for form in [
            "12-Mar-1958",
            "12.03.1958",
            "March 12, 1958",
            "1958/03/12",
            "12th March 1958",
            "3/12/1958",
            "12 MAR 58",
            "120358",
            "Mar-12-1958",
            "12 Mar. 1958",
            "1958-3-12",
            "12. März 1958",
            "12 marca 1958",
            "12 mars 1958",
            "３/１２/１９５８",
        ] {
            let s = clean(&t, &format!("born {form} ok"));
            assert!(s.starts_with("born ") && s.ends_with(" ok"), "{form}: {s}");
            assert!(
                !s[5..s.len() - 3].chars().any(|c| c.is_ascii_digit()),
                "{form}: {s}"
            );
            assert!(!s.to_lowercase().contains("mar"), "{form}: {s}");
        }
        // Not a number that merely shares digits.
        assert_eq!(clean(&t, "1958 mm"), "1958 mm");
        // Cleaning (not scrubbing kept text) blanks any date written with a month name,
        // and leaves numbers that are not dates of the object.
        assert_eq!(clean(&t, "seen 5 June 2021"), "seen X XXXX XXXX");
        assert_eq!(clean(&t, "v1.5.10 3 mm"), "v1.5.10 3 mm");
        let mut b = b"seen 5 June 2021".to_vec();
        scrub(&mut b, &set("ISO_IR 192"), Some(&t), false);
        assert_eq!(b, b"seen 5 June 2021");
    }

    #[test]
    fn ids_and_phone_numbers_with_other_separators() {
        let mut t = PhiTokens::default();
        t.add("555-123-4567", false);
        t.add("AB-1234", false);
        assert_eq!(clean(&t, "tel 555.123.4567"), "tel XXX.XXX.XXXX");
        assert_eq!(clean(&t, "tel (555) 123 4567"), "tel (XXX) XXX XXXX");
        assert_eq!(clean(&t, "id AB1234"), "id XXXXXX");
    }

    #[test]
    fn clinical_words_stay() {
        let t = name("Brown^Head");
        assert_eq!(clean(&t, "TK JAMY BRZUSZNEJ"), "TK JAMY BRZUSZNEJ");
        assert_eq!(clean(&t, "SAG T2"), "SAG T2");
        let t = name("Smith^John");
        assert_eq!(clean(&t, "HEAD Brown White"), "HEAD Brown White");
    }

    #[test]
    fn phones_addresses_and_titled_names_are_blanked() {
        let t = PhiTokens::default();
        assert_eq!(clean(&t, "call (555) 123-4567"), "call (XXX) XXX-XXXX");
        assert_eq!(clean(&t, "tel +48 12 345 67 89"), "tel +XX XX XXX XX XX");
        assert_eq!(
            clean(&t, "512 x 512, 1.25 mm, 120 kV"),
            "512 x 512, 1.25 mm, 120 kV"
        );
        assert_eq!(
            clean(&t, "lives at 12 Baker Street"),
            "lives at XX XXXXX XXXXXX"
        );
        assert_eq!(clean(&t, "ul. Długa 5"), "XX. XXXXXX X"); // ł is two bytes
        assert_eq!(clean(&t, "ST segment 2"), "ST segment 2");
        assert_eq!(clean(&t, "read by Dr. Watson"), "read by Dr. XXXXXX");
        assert_eq!(clean(&t, "MR BRAIN W/O"), "MR BRAIN W/O");
        assert_eq!(clean(&t, "DR CHEST PA"), "DR CHEST PA");
    }

    #[test]
    fn people_named_nowhere_else_are_blanked() {
        let t = PhiTokens::default();
        assert_eq!(clean(&t, "plan by John Smith v2"), "plan by XXXX XXXXX v2");
        assert_eq!(clean(&t, "JOHN Q. SMITH"), "XXXX X. XXXXX");
        assert_eq!(clean(&t, "reviewed: Smith, John"), "reviewed: XXXXX, XXXX");
        assert_eq!(clean(&t, "SMITH^JOHN"), "XXXXX^XXXX");
        assert_eq!(clean(&t, "Mark Johnson"), "XXXX XXXXXXX");
        // Ordinary words and imaging text stay.
        for keep in [
            "Black White",
            "Chest PA PA",
            "Weißenkirchen In Der Wachau",
            "HEAD NECK",
            "CHEST PA",
            "MR BRAIN W/O",
            "the long axis",
            "AX T2 FLAIR",
            "Brown White Head",
            "SAG T1 MPRAGE",
            "left knee",
        ] {
            assert_eq!(clean(&t, keep), keep);
        }
    }

    #[test]
    fn patterns_are_blanked() {
        let s = clean(
            &PhiTokens::default(),
            "seen 2021-04-05 id 8812345 mail a.b@c.org 5mm 1.25",
        );
        assert!(
            !s.contains("2021") && !s.contains("8812345") && !s.contains('@'),
            "{s}"
        );
        assert!(s.contains("5mm") && s.contains("1.25"), "{s}");
    }

    #[test]
    fn iso_2022_text_is_blanked_in_its_own_set() {
        let cs = set("\\ISO 2022 IR 87");
        let mut t = PhiTokens::default();
        let name = cs.decode_to_string(b"\x1b$B;3ED\x1b(B^\x1b$B2V;R\x1b(B");
        t.add_person_name(&name);
        // 山田花子 頭部 1958 (the digits are ASCII bytes inside the JIS run? no: in ASCII).
        let mut v = b"\x1b$B;3ED2V;R\x1b(B CT 20\x1b$B!<\x1b(B".to_vec();
        let before = v.len();
        let r = scrub(&mut v, &cs, Some(&t), true);
        assert!(r.changed && !r.undecodable);
        assert_eq!(v.len(), before);
        let after = cs.decode(&v);
        assert_eq!(after.undecodable, 0);
        assert!(after.text().starts_with("ＸＸＸＸ CT"), "{}", after.text());
    }

    #[test]
    fn undeclared_latin1_and_utf8_are_read() {
        let t = name("Lefèvre");
        let mut v = b"LEF\xc8VRE knee".to_vec();
        let r = scrub(&mut v, &CharacterSet::default(), Some(&t), false);
        assert!(r.changed && !r.undecodable);
        assert_eq!(v, b"XXXXXXX knee");
    }
}
