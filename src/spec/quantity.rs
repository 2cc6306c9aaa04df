//! Kubernetes-style sizes (`512Mi`, `8Gi`, `1Ti`) and durations (`90s`, `30m`, `24h`).

use std::time::Duration;

/// Parse a binary size into MiB. Accepts `Ki`, `Mi`, `Gi`, `Ti` suffixes and the decimal
/// `K`, `M`, `G`, `T`; a bare number is bytes.
pub fn parse_mib(s: &str) -> Result<u64, String> {
    Ok(parse_bytes(s)? / (1024 * 1024))
}

/// Parse a size into bytes, with the units of [`parse_mib`] (`700M` is 700 000 000 bytes,
/// `4Gi` is 4 GiB).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; write it like 512Mi, 8Gi or 1Ti"))?;
    let bytes: u128 = match unit {
        "" => n as u128,
        "Ki" => n as u128 * 1024,
        "Mi" => n as u128 * 1024 * 1024,
        "Gi" => n as u128 * 1024 * 1024 * 1024,
        "Ti" => n as u128 * 1024 * 1024 * 1024 * 1024,
        "K" | "k" => n as u128 * 1000,
        "M" => n as u128 * 1_000_000,
        "G" => n as u128 * 1_000_000_000,
        "T" => n as u128 * 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?} has unknown unit {unit:?}; use Mi, Gi or Ti (e.g. 8Gi)"
            ))
        }
    };
    u64::try_from(bytes).map_err(|_| format!("{s:?} is too large"))
}

/// Parse a duration like `250ms`, `90s`, `30m`, `24h`, `7d`, or a combination `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration; write it like 90s, 30m, 24h or 1h30m");
    let mut total_ms = 0u64;
    let mut num = String::new();
    let mut any = false;
    let mut chars = s.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        num.clear();
        let unit_ms = match c {
            // `ms` (short polls in tests); a lone `m` is minutes
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            's' => 1_000,
            'm' => 60_000,
            'h' => 3_600_000,
            'd' => 86_400_000,
            _ => return Err(bad()),
        };
        total_ms = n
            .checked_mul(unit_ms)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(bad)?;
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_mib("8Gi").unwrap(), 8192);
        assert_eq!(parse_mib("512Mi").unwrap(), 512);
        assert!(parse_mib("8GB").is_err());
        assert!(parse_mib("lots").is_err());
        assert_eq!(parse_bytes("700M").unwrap(), 700_000_000);
        assert_eq!(parse_bytes("4Gi").unwrap(), 4 << 30);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("24h").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(
            parse_duration("1m500ms").unwrap(),
            Duration::from_millis(60_500)
        );
        assert!(parse_duration("24").is_err());
        assert!(parse_duration("h").is_err());
    }
}
