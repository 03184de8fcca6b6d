// SPDX-License-Identifier: GPL-2.0

//! Units on the command line: sizes, link rates and durations, so a user
//! writes `1Gbit` or `0.1ms` instead of counting zeros.

fn split(s: &str) -> Result<(f64, String), String> {
    let s = s.trim();
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(end);
    let num = num.replace('_', "");
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    if !v.is_finite() {
        return Err(format!("{s:?} is not a finite number"));
    }
    Ok((v, unit.trim().to_string()))
}

/// A size in bytes: `4096`, `512MiB`, `1GiB`, `1G` (binary), `1GB`
/// (decimal).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (v, unit) = split(s)?;
    let mult: f64 = match unit.as_str() {
        "" | "B" => 1.0,
        "K" | "KiB" | "k" => 1024.0,
        "M" | "MiB" => 1024.0 * 1024.0,
        "G" | "GiB" => 1024.0 * 1024.0 * 1024.0,
        "T" | "TiB" => 1024f64.powi(4),
        "KB" | "kB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "TB" => 1e12,
        u => {
            return Err(format!(
                "unknown size unit {u:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB)"
            ))
        }
    };
    let b = v * mult;
    if b >= 1.8e19 {
        return Err(format!("{s:?} is too large"));
    }
    Ok(b.round() as u64)
}

/// A link rate in bytes/s: `1Gbit`, `10Gbit/s`, `100Mbps`, `125MB/s`,
/// `1GiB/s`. A unit is required: bits and bytes are too easy to confuse.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let (v, unit) = split(s)?;
    let unit = unit
        .strip_suffix("/s")
        .or_else(|| unit.strip_suffix("ps"))
        .unwrap_or(&unit);
    let (prefix, bits) = if let Some(p) = unit.strip_suffix("bit") {
        (p, true)
    } else if let Some(p) = unit.strip_suffix('b') {
        (p, true)
    } else if let Some(p) = unit.strip_suffix('B') {
        (p, false)
    } else {
        return Err(format!(
            "{s:?} needs a unit: bits (Gbit, Mbit, Gbps) or bytes (MB/s, GiB/s)"
        ));
    };
    let mult = match prefix {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        p => return Err(format!("unknown rate prefix {p:?} in {s:?}")),
    };
    let r = v * mult / if bits { 8.0 } else { 1.0 };
    if r < 1.0 {
        return Err(format!("{s:?} is below one byte per second"));
    }
    Ok(r)
}

/// A duration in seconds: `300ms`, `0.1ms`, `100us`, `2s`, `1min`.
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let (v, unit) = split(s)?;
    let mult = match unit.as_str() {
        "s" | "" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "min" => 60.0,
        u => return Err(format!("unknown time unit {u:?} (use s, ms, us, ns, min)")),
    };
    Ok(v * mult)
}

/// Bytes for people: `1.50 GiB`.
pub fn fmt_bytes(b: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.2} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(parse_rate("1Gbit").unwrap(), 125e6);
        assert_eq!(parse_rate("10Gbit/s").unwrap(), 1.25e9);
        assert_eq!(parse_rate("100Mbps").unwrap(), 12.5e6);
        assert_eq!(parse_rate("125MB/s").unwrap(), 125e6);
        assert_eq!(parse_rate("1GiB/s").unwrap(), 1073741824.0);
        assert!(parse_rate("1G").unwrap_err().contains("unit"));
        assert!(parse_rate("fast").is_err());
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1GiB").unwrap(), 1 << 30);
        assert_eq!(parse_size("64G").unwrap(), 64 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("1Gb").is_err());
        assert!((parse_duration("0.1ms").unwrap() - 1e-4).abs() < 1e-15);
        assert_eq!(parse_duration("300ms").unwrap(), 0.3);
        assert!(parse_duration("-1s").is_err());
        assert_eq!(fmt_bytes(3 << 29), "1.50 GiB");
    }
}
