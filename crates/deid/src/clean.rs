//! Cleaning of free text (the C action of Clean Descriptors and Clean Structured Content):
//! identifying values found elsewhere in the same object are blanked wherever they appear,
//! and so are dates, long numbers (record numbers, phone numbers) and e-mail addresses.

/// Identifying values collected from an object before it is de-identified: names, IDs,
/// dates, addresses. Matched case-insensitively at word boundaries.
#[derive(Debug, Default, Clone)]
pub struct PhiTokens {
    tokens: Vec<Vec<u8>>,
}

impl PhiTokens {
    /// Adds one identifying value. Very short values are ignored unless `short_ok` (name
    /// components), since blanking every two-letter word would destroy descriptions.
    pub fn add(&mut self, value: &[u8], short_ok: bool) {
        let v = radveil_part10::trim_text(value);
        let min = if short_ok { 2 } else { 3 };
        if v.len() < min || v.iter().all(|c| !c.is_ascii_alphanumeric()) {
            return;
        }
        let upper = v.to_ascii_uppercase();
        if !self.tokens.contains(&upper) {
            self.tokens.push(upper);
        }
    }

    /// Adds a person name: the whole value, each component and each word of it.
    pub fn add_person_name(&mut self, value: &[u8]) {
        self.add(value, false);
        for group in value.split(|&c| c == b'=') {
            self.add(group, false);
            for comp in group.split(|&c| c == b'^' || c == b' ' || c == b',') {
                self.add(comp, true);
            }
        }
    }

    /// Adds a date in the DICOM form and the common written forms of it.
    pub fn add_date(&mut self, value: &[u8]) {
        let v = radveil_part10::trim_text(value);
        if v.len() < 8 || !v[..8].iter().all(u8::is_ascii_digit) {
            self.add(v, false);
            return;
        }
        let (y, m, d) = (&v[..4], &v[4..6], &v[6..8]);
        let s = |parts: &[&[u8]], sep: u8| {
            let mut out = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    out.push(sep);
                }
                out.extend_from_slice(p);
            }
            out
        };
        self.add(&v[..8], false);
        for sep in [b'-', b'/', b'.'] {
            self.add(&s(&[y, m, d], sep), false);
            self.add(&s(&[m, d, y], sep), false);
            self.add(&s(&[d, m, y], sep), false);
        }
    }

    /// Number of tokens collected.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// Blanks every token occurrence in `text` with `X`s of the same length (keeping the VR's
    /// length limits). Returns whether anything changed.
    pub fn scrub(&self, text: &mut [u8]) -> bool {
        let mut changed = false;
        for t in &self.tokens {
            let n = t.len();
            if n > text.len() {
                continue;
            }
            let mut i = 0;
            while i + n <= text.len() {
                if text[i..i + n].eq_ignore_ascii_case(t)
                    && (i == 0 || !is_word(text[i - 1]) || !is_word(t[0]))
                    && (i + n == text.len() || !is_word(text[i + n]) || !is_word(t[n - 1]))
                {
                    text[i..i + n].fill(b'X');
                    changed = true;
                    i += n;
                } else {
                    i += 1;
                }
            }
        }
        changed
    }
}

fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c >= 0x80
}

/// Blanks patterns that identify whatever object they appear in: dates written with
/// separators or as eight digits, runs of five or more digits, and e-mail addresses.
/// Returns whether anything changed.
pub fn scrub_patterns(text: &mut [u8]) -> bool {
    let mut changed = false;
    let mut i = 0;
    while i < text.len() {
        if text[i].is_ascii_digit() && (i == 0 || !text[i - 1].is_ascii_alphanumeric()) {
            // A run of digits and date separators.
            let mut j = i;
            let mut ndigits = 0;
            let mut groups = vec![0usize];
            while j < text.len()
                && (text[j].is_ascii_digit() || matches!(text[j], b'-' | b'/' | b'.'))
            {
                if text[j].is_ascii_digit() {
                    ndigits += 1;
                    *groups.last_mut().unwrap_or(&mut 0) += 1;
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
                text[i..j]
                    .iter_mut()
                    .filter(|c| c.is_ascii_digit())
                    .for_each(|c| *c = b'X');
                changed = true;
            }
            i = j.max(i + 1);
        } else {
            i += 1;
        }
    }
    // e-mail addresses: blank the whole word around an '@'.
    let mut k = 0;
    while k < text.len() {
        if text[k] == b'@' {
            let mut s = k;
            while s > 0 && !text[s - 1].is_ascii_whitespace() {
                s -= 1;
            }
            let mut e = k + 1;
            while e < text.len() && !text[e].is_ascii_whitespace() {
                e += 1;
            }
            text[s..e].fill(b'X');
            changed = true;
            k = e;
        }
        k += 1;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_dates_found_elsewhere_are_blanked() {
        let mut t = PhiTokens::default();
        t.add_person_name(b"DOE^JANE^Q");
        t.add(b"MRN12345", false);
        t.add_date(b"19800314");
        let mut text = b"CT head for Jane Doe (mrn12345) born 03/14/1980, Q".to_vec();
        assert!(t.scrub(&mut text));
        let s = String::from_utf8(text).unwrap();
        assert!(!s.to_uppercase().contains("JANE"), "{s}");
        assert!(!s.to_uppercase().contains("DOE"), "{s}");
        assert!(!s.to_uppercase().contains("MRN12345"), "{s}");
        assert!(!s.contains("03/14/1980"), "{s}");
        assert!(s.starts_with("CT head for"));
    }

    #[test]
    fn tokens_match_whole_words_only() {
        let mut t = PhiTokens::default();
        t.add_person_name(b"LI^AN");
        let mut text = b"CLINICAL ANGIO".to_vec();
        assert!(!t.scrub(&mut text));
        assert_eq!(text, b"CLINICAL ANGIO");
    }

    #[test]
    fn patterns_are_blanked() {
        let mut text = b"seen 2021-04-05 id 8812345 mail a.b@c.org 5mm 1.25".to_vec();
        assert!(scrub_patterns(&mut text));
        let s = String::from_utf8(text).unwrap();
        assert!(
            !s.contains("2021") && !s.contains("8812345") && !s.contains("@"),
            "{s}"
        );
        assert!(s.contains("5mm") && s.contains("1.25"), "{s}");
    }
}
