//! gltop's exporter (`--listen`) as its tests read it: the address it serves on, and a
//! scrape parsed strictly.

use std::collections::BTreeMap;
use std::time::Duration;

use super::rules::Proc;

/// The samples of a classic text exposition: (name, labels as written) -> value. Refuses a
/// line it cannot read and a series given twice.
pub fn samples(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"))),
            None => (series, ""),
        };
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line:?}"));
        let old = out.insert((name.to_string(), labels.to_string()), value);
        assert!(old.is_none(), "series given twice: {line:?}");
    }
    out
}

/// One scrape of `http://ADDR/metrics` in the classic text format, parsed by [`samples`].
pub fn scrape(addr: &str) -> BTreeMap<(String, String), f64> {
    let mut r = ureq::get(format!("http://{addr}/metrics"))
        .call()
        .expect("a scrape");
    samples(&r.body_mut().read_to_string().unwrap())
}

/// The address in gltop's "serving metrics on http://ADDR/metrics" line.
pub fn serving_addr(g: &Proc) -> String {
    let serving = g
        .wait_stderr_line(Duration::from_secs(60), |l| {
            l.contains("serving metrics on")
        })
        .unwrap_or_else(|| panic!("gltop never served: {}", g.stderr_so_far()));
    serving
        .split("http://")
        .nth(1)
        .and_then(|s| s.split("/metrics").next())
        .expect("the address in the serving line")
        .to_string()
}
