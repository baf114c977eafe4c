//! The size of a run's memory budget: parsed from the command line (`4G`, `512MiB`), or by
//! default half of what this process may use (available memory, the cgroup's limit, the
//! address-space limit, whichever is least).

/// Why a memory size was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// Not a number followed by an optional unit.
    #[error("not a memory size (write it like 4G, 512M, 1.5GiB or 1000000)")]
    Malformed,
    /// Zero bytes: nothing could ever be read.
    #[error("a memory size must be more than zero")]
    Zero,
    /// More than 2^64 bytes.
    #[error("memory size too large")]
    TooLarge,
}

/// Parses a size in bytes: a number (decimals allowed) and an optional binary unit `K`, `M`,
/// `G`, `T` (each 1024 times the last; `KB`, `KiB` and lower case are the same).
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return Err(SizeError::Malformed),
    };
    if number.is_empty() || number.starts_with('.') || number.matches('.').count() > 1 {
        return Err(SizeError::Malformed);
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let whole: u64 = whole.parse().map_err(|_| SizeError::TooLarge)?;
    let mut bytes = whole
        .checked_mul(1u64 << shift)
        .ok_or(SizeError::TooLarge)?;
    // The fraction, to the byte: digits beyond 1/10^9 are below a byte for every unit.
    let digits: String = frac.chars().take(9).collect();
    if !digits.is_empty() {
        let scale = 10u128.pow(digits.len() as u32);
        let f: u128 = digits.parse().map_err(|_| SizeError::Malformed)?;
        let part = (f * (1u128 << shift)) / scale;
        bytes = bytes
            .checked_add(u64::try_from(part).map_err(|_| SizeError::TooLarge)?)
            .ok_or(SizeError::TooLarge)?;
    }
    if bytes == 0 {
        return Err(SizeError::Zero);
    }
    Ok(bytes)
}

/// Used when nothing about the machine can be read.
const FALLBACK: u64 = 1 << 30;

/// The default budget: half of the least of available memory (`MemAvailable` in
/// `/proc/meminfo`), the cgroup's memory limit, and the address-space limit (`ulimit -v`).
/// Half, because the parse trees, encoders and the program itself need room beside the
/// buffers the budget counts.
pub fn default_limit() -> u64 {
    let candidates = [
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| meminfo_available(&t)),
        cgroup_limit(),
        address_space_limit(),
    ];
    candidates
        .into_iter()
        .flatten()
        .min()
        .map_or(FALLBACK, |least| (least / 2).max(1))
}

/// `MemAvailable` from the text of `/proc/meminfo`, in bytes.
fn meminfo_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let mut words = line.split_whitespace().skip(1);
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => n.checked_mul(1024),
        _ => None,
    }
}

/// The memory limit of this process's cgroup (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`); `None` when unlimited or unknown.
fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        });
    let mut paths = Vec::new();
    if let Some(rel) = own {
        let rel = rel.trim().trim_start_matches('/');
        if !rel.is_empty() && !rel.contains("..") {
            paths.push(format!("/sys/fs/cgroup/{rel}/memory.max"));
        }
    }
    paths.push("/sys/fs/cgroup/memory.max".into());
    paths.push("/sys/fs/cgroup/memory/memory.limit_in_bytes".into());
    paths
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| cgroup_value(&t))
}

/// A cgroup limit file's value; `max` and absurdly large values mean no limit.
fn cgroup_value(text: &str) -> Option<u64> {
    let v: u64 = text.trim().parse().ok()?;
    (v < 1 << 60).then_some(v)
}

/// The soft address-space limit (`RLIMIT_AS`), when there is one.
fn address_space_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::As).current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_with_units() {
        assert_eq!(parse_size("4G"), Ok(4 << 30));
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("4 gb"), Ok(4 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in [
            "", "G", "lots", "-1G", "1.2.3G", ".5G", "4X", "1e9", "4 G B",
        ] {
            assert_eq!(parse_size(bad), Err(SizeError::Malformed), "{bad:?}");
        }
        assert_eq!(parse_size("0"), Err(SizeError::Zero));
        assert_eq!(parse_size("0.0000000001K"), Err(SizeError::Zero));
        assert_eq!(parse_size("99999999999P"), Err(SizeError::TooLarge));
        assert_eq!(
            parse_size("99999999999999999999999"),
            Err(SizeError::TooLarge)
        );
    }

    #[test]
    fn meminfo_and_cgroup_values() {
        let text = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   2000000 kB\n";
        assert_eq!(meminfo_available(text), Some(2_000_000 * 1024));
        assert_eq!(meminfo_available("MemTotal: 5 kB\n"), None);
        assert_eq!(cgroup_value("max\n"), None);
        assert_eq!(cgroup_value("1073741824\n"), Some(1 << 30));
        assert_eq!(cgroup_value("9223372036854771712\n"), None);
    }

    #[test]
    fn the_default_is_half_of_the_least() {
        let d = default_limit();
        assert!(d > 0);
        if let Some(a) = address_space_limit() {
            assert!(d <= a / 2);
        }
        if let Some(m) = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| meminfo_available(&t))
        {
            assert!(d <= m / 2);
        }
    }
}
