//! The slice histogram as horizontal bars, one line per log2 bucket.

use gltop::loader::rates::{bucket_range, nonempty_span};

use crate::format::{count, duration_ns};

/// One text line per bucket from the first to the last non-empty one:
/// `[  1.02µs,   2.05µs) ████████▌ 1.23k`, bars scaled so the fullest is `width` cells.
pub fn lines(hist: &[u64], width: usize) -> Vec<String> {
    let Some(span) = nonempty_span(hist) else {
        return vec!["no completed slices yet".into()];
    };
    let max = span.clone().map(|i| hist[i]).max().unwrap_or(1).max(1);
    span.map(|i| {
        let (lo, hi) = bucket_range(i);
        let hi = hi.map_or("   ∞".to_string(), duration_ns);
        let eighths = (hist[i] as u128 * width as u128 * 8).div_ceil(max as u128) as usize;
        format!(
            "[{:>7}, {:>7}) {} {}",
            duration_ns(lo),
            hi,
            bar(eighths),
            count(hist[i])
        )
    })
    .collect()
}

/// A bar `eighths`/8 cells long.
fn bar(eighths: usize) -> String {
    const PARTS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    let mut s = "█".repeat(eighths / 8);
    s.push_str(PARTS[eighths % 8]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_fullest_bucket() {
        let mut h = vec![0u64; 40];
        h[10] = 100;
        h[12] = 50;
        let l = lines(&h, 10);
        assert_eq!(l.len(), 3, "buckets 10 to 12, the empty 11 included");
        assert!(
            l[0].starts_with("[ 1.02µs,  2.05µs) ██████████ 100"),
            "{}",
            l[0]
        );
        assert!(l[1].contains(")  0"), "{}", l[1]);
        assert!(l[2].contains("█████ 50"), "{}", l[2]);
        assert_eq!(lines(&[0; 40], 10), ["no completed slices yet"]);
    }

    #[test]
    fn partial_cells() {
        assert_eq!(bar(0), "");
        assert_eq!(bar(4), "▌");
        assert_eq!(bar(17), "██▏");
    }

    #[test]
    fn last_bucket_is_open() {
        let mut h = vec![0u64; 40];
        h[39] = 1;
        assert!(lines(&h, 4)[0].contains("∞"));
    }
}
