//! Human-readable numbers: durations, counts, rates and shares.

/// A duration in nanoseconds, with three significant digits and a unit: `812ns`, `1.25µs`,
/// `37.0ms`, `2.50s`, `3m05s`.
pub fn duration_ns(ns: u64) -> String {
    let v = ns as f64;
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 999_500 {
        sig3(v / 1e3, "µs")
    } else if ns < 999_500_000 {
        sig3(v / 1e6, "ms")
    } else if ns < 60_000_000_000 {
        sig3(v / 1e9, "s")
    } else {
        let s = ns / 1_000_000_000;
        if s < 3600 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{}h{:02}m", s / 3600, (s / 60) % 60)
        }
    }
}

/// `v` with three significant digits followed by `unit`.
fn sig3(v: f64, unit: &str) -> String {
    if v >= 99.95 {
        format!("{v:.0}{unit}")
    } else if v >= 9.995 {
        format!("{v:.1}{unit}")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// A count with an SI suffix: `999`, `1.23k`, `45.6M`, `7.89G`.
pub fn count(n: u64) -> String {
    if n < 1_000 {
        return n.to_string();
    }
    rate(n as f64)
}

/// A non-negative rate with an SI suffix: `0`, `0.50`, `12.5`, `1.23k`, `4.56M`.
pub fn rate(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        return "0".into();
    }
    for (scale, suffix) in [(1e9, "G"), (1e6, "M"), (1e3, "k")] {
        if v >= scale * 0.9995 {
            return sig3(v / scale, suffix);
        }
    }
    if v >= 99.95 {
        format!("{v:.0}")
    } else if v >= 9.995 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A share of a CPU (1.0 = one CPU) as a percentage: `0.0%`, `12.3%`, `100%`.
pub fn percent(share: f64) -> String {
    let p = if share.is_finite() {
        share * 100.0
    } else {
        0.0
    };
    if p >= 99.95 {
        format!("{p:.0}%")
    } else {
        format!("{:.1}%", p.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ns(0), "0ns");
        assert_eq!(duration_ns(812), "812ns");
        assert_eq!(duration_ns(1_250), "1.25µs");
        assert_eq!(duration_ns(37_000_000), "37.0ms");
        assert_eq!(duration_ns(999_999_999), "1.00s");
        assert_eq!(duration_ns(999_600), "1.00ms");
        assert_eq!(duration_ns(2_500_000_000), "2.50s");
        assert_eq!(duration_ns(185_000_000_000), "3m05s");
        assert_eq!(duration_ns(7_500 * 1_000_000_000), "2h05m");
    }

    #[test]
    fn counts_and_rates() {
        assert_eq!(count(999), "999");
        assert_eq!(count(1_234), "1.23k");
        assert_eq!(count(45_600_000), "45.6M");
        assert_eq!(count(7_890_000_000), "7.89G");
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(f64::NAN), "0");
        assert_eq!(rate(0.5), "0.50");
        assert_eq!(rate(12.5), "12.5");
        assert_eq!(rate(999.0), "999");
        assert_eq!(rate(1_000_000.0), "1.00M");
    }

    #[test]
    fn percents() {
        assert_eq!(percent(0.0), "0.0%");
        assert_eq!(percent(0.1234), "12.3%");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(-0.1), "0.0%");
        assert_eq!(percent(f64::INFINITY), "0.0%");
    }
}
