//! Issue 14: a real Prometheus (Debian's `prometheus`, which `.ci/deps.sh` installs) scrapes
//! `gltop --listen` attached to the oracle `workload`, every second; queried through its HTTP
//! API once the workload has finished its work, the counters equal the workload's own
//! settrace totals, `up` is 1, the metadata has the right types and `histogram_quantile` over
//! the slice histogram is plausible. `promtool check metrics` accepts the classic text format.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use support::exposition::{scrape, serving_addr};
use support::*;

/// A port free now on 127.0.0.1 (for Prometheus's own web server).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("gltop-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A map that refuses a key given twice (serde's maps keep the last one silently).
fn unique_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct Unique<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Unique<V> {
        type Value = BTreeMap<String, V>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map without duplicate keys")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some((k, v)) = m.next_entry::<String, V>()? {
                if out.contains_key(&k) {
                    return Err(serde::de::Error::custom(format!("duplicate key {k:?}")));
                }
                out.insert(k, v);
            }
            Ok(out)
        }
    }
    d.deserialize_map(Unique(std::marker::PhantomData))
}

/// `/api/v1/query`'s answer for an instant vector.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueryResponse {
    status: String,
    data: QueryData,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct QueryData {
    result_type: String,
    result: Vec<Sample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sample {
    #[serde(deserialize_with = "unique_map")]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// `/api/v1/metadata`'s answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataResponse {
    status: String,
    #[serde(deserialize_with = "unique_map")]
    data: BTreeMap<String, Vec<Metadata>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metadata {
    #[serde(rename = "type")]
    kind: String,
    help: String,
    unit: String,
}

/// Prometheus, started on 127.0.0.1 with a data directory of its own, scraping `target`
/// every second; stopped (by PID, through its [`Proc`] guard) when dropped.
struct Prometheus {
    proc: Proc,
    base: String,
    _dir: TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = dir.0.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: gltop\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write the config");
        let port = free_port();
        let proc = Proc::spawn(
            Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.0.join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        Prometheus {
            proc,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    fn get(&self, path_and_query: &str) -> Option<String> {
        let url = format!("{}{path_and_query}", self.base);
        let mut resp = ureq::get(&url).call().ok()?;
        resp.body_mut().read_to_string().ok()
    }

    /// The instant vector `expr` evaluates to now (None while Prometheus is not up).
    fn query(&self, expr: &str) -> Option<Vec<Sample>> {
        let mut q = String::new();
        for b in expr.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => q.push(b as char),
                _ => q.push_str(&format!("%{b:02X}")),
            }
        }
        let body = self.get(&format!("/api/v1/query?query={q}"))?;
        let r: QueryResponse = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("unexpected answer to {expr}: {e}: {body}"));
        assert_eq!(r.status, "success", "{body}");
        assert_eq!(r.data.result_type, "vector", "{body}");
        Some(r.data.result)
    }

    /// The value of `expr`, which must be one series (None while it has none).
    fn value(&self, expr: &str) -> Option<f64> {
        let v = self.query(expr)?;
        assert!(v.len() <= 1, "{expr}: one series expected, got {v:?}");
        v.first().map(|s| s.value.1.parse().expect("a number"))
    }
}

/// The label sets of gltop's own series by metric name, as Prometheus stored them from the
/// last scrape (labels `job` and `instance` left out).
fn series(p: &Prometheus) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for s in p
        .query("{job=\"gltop\",__name__=~\"greenlet_.*|gltop_.*\"}")
        .expect("Prometheus answers")
    {
        let mut labels = s.metric;
        let name = labels.remove("__name__").expect("a name");
        labels.remove("job");
        labels.remove("instance");
        out.entry(name).or_default().push(labels);
    }
    out
}

#[test]
fn prometheus_scrapes_the_exact_counts_of_the_oracle() {
    if !bpf_or_skip("prometheus_scrapes_the_exact_counts_of_the_oracle")
        || !require(
            "prometheus_scrapes_the_exact_counts_of_the_oracle",
            tool("prometheus", "--version").and(tool("promtool", "--version")),
        )
    {
        return;
    }
    let _serial = serial();
    let started = Instant::now();
    // Two threads, throws and kills (every outcome), then it lingers with its final counts
    // until its stdin closes.
    let mut w = target(&[
        "--threads",
        "2",
        "--greenlets",
        "6",
        "--switches",
        "4000",
        "--throws",
        "300",
        "--kills",
        "2",
        "--iterations",
        "3",
        "--linger",
        "stdin",
    ]);
    let mut g = Proc::spawn(
        gltop()
            .args(["--listen", "127.0.0.1:0", "-p", &w.pid().to_string()])
            .args(["--hit-cost-ns", "500", "-d", "0.5"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let serving = g
        .wait_stderr_line(Duration::from_secs(60), |l| {
            l.contains("serving metrics on")
        })
        .unwrap_or_else(|| panic!("gltop never served: {}", g.stderr_so_far()));
    let addr = serving
        .split("http://")
        .nth(1)
        .and_then(|s| s.split("/metrics").next())
        .expect("the address in the serving line")
        .to_string();
    let prom = Prometheus::start(&addr);

    // The workload's report: printed once its work is done, while it lingers.
    let line = w
        .wait_stdout_line(Duration::from_secs(120), |l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no report; stderr: {}", w.stderr_so_far()));
    let report = Report::parse(&line);
    let want = &report.totals;
    assert!(want.switch >= 20_000 && want.throw > 0, "{want:?}");

    // Scraped after the last event: the final counts reach Prometheus.
    let switches = poll_until(Instant::now() + Duration::from_secs(30), || {
        prom.value("greenlet_switches_total")
            .filter(|&v| v == want.switch as f64)
    });
    assert_eq!(
        switches,
        Some(want.switch as f64),
        "greenlet_switches_total never reached the workload's count; Prometheus: {}",
        prom.proc.stderr_so_far()
    );
    assert_eq!(prom.value("up{job=\"gltop\"}"), Some(1.0));
    assert_eq!(prom.value("greenlet_throws_total"), Some(want.throw as f64));
    assert_eq!(prom.value("greenlet_created_total"), Some(want.new as f64));
    assert_eq!(
        prom.value("sum(greenlet_finished_total)"),
        Some(want.dead as f64)
    );
    for outcome in greenlet::probes::Outcome::ALL {
        let n = report.deaths.get(outcome.name()).copied().unwrap_or(0);
        assert_eq!(
            prom.value(&format!(
                "greenlet_finished_total{{outcome=\"{}\"}}",
                outcome.name()
            )),
            Some(n as f64),
            "deaths by {}",
            outcome.name()
        );
    }
    assert_eq!(
        prom.value("greenlet_finished_total{outcome=\"other\"}"),
        Some(0.0)
    );
    assert_eq!(
        prom.value("greenlet_live"),
        Some(0.0),
        "every greenlet ended"
    );
    assert_eq!(prom.value("gltop_dropped_total"), Some(0.0));
    let hits = want.switch + want.throw + want.new + want.dead;
    assert_eq!(prom.value("gltop_probe_hits_total"), Some(hits as f64));

    // Every series, and no other: the bounded default labels.
    let all = series(&prom);
    let process = BTreeMap::from([("process".to_string(), "workload".to_string())]);
    for name in [
        "greenlet_switches_total",
        "greenlet_throws_total",
        "greenlet_created_total",
        "greenlet_live",
        "greenlet_slice_seconds_sum",
        "greenlet_slice_seconds_count",
        "gltop_probe_hits_total",
        "gltop_tracing_cpu_ratio",
        "gltop_dropped_total",
        "greenlet_blocking_episodes_total",
        "greenlet_blocking_seconds_total",
    ] {
        assert_eq!(
            all.get(name),
            Some(&vec![process.clone()]),
            "{name}: {all:?}"
        );
    }
    assert_eq!(
        all["greenlet_finished_total"].len(),
        greenlet::probes::Outcome::ALL.len() + 1
    );
    assert_eq!(all["greenlet_slice_seconds_bucket"].len(), 40);
    assert_eq!(
        all["gltop_build_info"],
        vec![BTreeMap::from([(
            "version".to_string(),
            env!("CARGO_PKG_VERSION").to_string()
        )])]
    );
    let target_info = BTreeMap::from([
        ("pid".to_string(), w.pid().to_string()),
        ("process".to_string(), "workload".to_string()),
        (
            "exe".to_string(),
            std::fs::read_link(format!("/proc/{}/exe", w.pid()))
                .unwrap()
                .display()
                .to_string(),
        ),
        ("runtime".to_string(), "rust-greenlet".to_string()),
    ]);
    assert_eq!(all["gltop_target_info"], vec![target_info]);
    for name in [
        "gltop_refreshes_total",
        "gltop_refresh_seconds_total",
        "gltop_refresh_max_seconds",
    ] {
        assert_eq!(
            all.get(name),
            Some(&vec![BTreeMap::new()]),
            "{name}: {all:?}"
        );
    }
    // How many processes gltop keeps: by state, and those released (exited, then let go).
    let state = |s: &str| BTreeMap::from([("state".to_string(), s.to_string())]);
    let mut watched = all["gltop_watched_processes"].clone();
    watched.sort();
    assert_eq!(watched, vec![state("exited"), state("running")]);
    assert_eq!(
        all.get("gltop_released_processes_total"),
        Some(&vec![BTreeMap::new()])
    );
    assert_eq!(all.len(), 20, "{:?}", all.keys().collect::<Vec<_>>());
    // gltop refreshed at least every half second, each refresh shorter than that.
    let refreshes = prom.value("gltop_refreshes_total").unwrap();
    let longest = prom.value("gltop_refresh_max_seconds").unwrap();
    let spent = prom.value("gltop_refresh_seconds_total").unwrap();
    assert!(refreshes >= 4.0, "{refreshes} refreshes");
    assert!(
        longest > 0.0 && longest < 0.5 && spent >= longest && spent < refreshes * 0.5,
        "refreshes: {refreshes}, {spent} s in all, longest {longest} s"
    );
    // The oracle switches often: none of its greenlets runs 100 ms without switching.
    assert_eq!(prom.value("greenlet_blocking_episodes_total"), Some(0.0));

    // The slice histogram: every transfer ends a slice of its origin (and a thread's exit
    // the last slice of its main greenlet); its median is a plausible switch time.
    let count = prom.value("greenlet_slice_seconds_count").unwrap();
    let transfers = (want.switch + want.throw) as f64;
    assert!(
        (transfers..=transfers + f64::from(report.threads)).contains(&count),
        "{count} slices for {transfers} transfers"
    );
    let median = prom
        .value("histogram_quantile(0.5, sum by (le) (greenlet_slice_seconds_bucket))")
        .unwrap();
    let mean = prom
        .value("greenlet_slice_seconds_sum / greenlet_slice_seconds_count")
        .unwrap();
    assert!(
        (1e-8..1e-2).contains(&median) && (1e-8..1e-1).contains(&mean),
        "median {median} s, mean {mean} s"
    );

    // The types, as Prometheus recorded them from the OpenMetrics text it was served.
    let body = prom.get("/api/v1/metadata").expect("the metadata");
    let meta: MetadataResponse =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("metadata: {e}: {body}"));
    assert_eq!(meta.status, "success");
    let kind = |name: &str| -> String {
        let m = meta
            .data
            .get(name)
            .unwrap_or_else(|| panic!("no metadata for {name}: {:?}", meta.data.keys()));
        assert_eq!(m.len(), 1, "{name}: {m:?}");
        m[0].kind.clone()
    };
    for (name, want) in [
        ("greenlet_switches", "counter"),
        ("greenlet_throws", "counter"),
        ("greenlet_created", "counter"),
        ("greenlet_finished", "counter"),
        ("greenlet_live", "gauge"),
        ("greenlet_slice_seconds", "histogram"),
        ("gltop_probe_hits", "counter"),
        ("gltop_tracing_cpu_ratio", "gauge"),
        ("gltop_dropped", "counter"),
        ("greenlet_blocking_episodes", "counter"),
        ("greenlet_blocking_seconds", "counter"),
        ("gltop_refreshes", "counter"),
        ("gltop_refresh_seconds", "counter"),
        ("gltop_refresh_max_seconds", "gauge"),
        ("gltop_build", "info"),
        ("gltop_target", "info"),
    ] {
        assert_eq!(kind(name), want, "the type of {name}");
    }
    assert_eq!(meta.data["greenlet_slice_seconds"][0].unit, "seconds");
    assert!(!meta.data["greenlet_switches"][0].help.is_empty());

    // The classic text format for a scraper that does not ask for OpenMetrics, which
    // promtool accepts; OpenMetrics for one that does.
    let mut classic = ureq::get(format!("http://{addr}/metrics"))
        .call()
        .expect("classic");
    assert_eq!(
        classic.headers().get("content-type").unwrap(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let classic = classic.body_mut().read_to_string().unwrap();
    assert!(!classic.contains("# EOF"));
    assert!(classic.contains("# TYPE greenlet_switches_total counter\n"));
    assert!(classic.contains(&format!(
        "greenlet_switches_total{{process=\"workload\"}} {}\n",
        want.switch
    )));
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(classic.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {} {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut om = ureq::get(format!("http://{addr}/metrics"))
        .header("Accept", "application/openmetrics-text; version=1.0.0")
        .call()
        .expect("OpenMetrics");
    assert!(om
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    let om = om.body_mut().read_to_string().unwrap();
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE gltop_target info\n"));

    // The workload exits: gltop says so in one line and exits 0.
    drop(w.child.stdin.take());
    assert!(w
        .wait_for(Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    let status = g.wait("gltop", Duration::from_secs(30));
    let err = g.stderr_text();
    assert!(status.success(), "gltop: {status}: {err}");
    assert_eq!(
        err.lines().last(),
        Some(format!("gltop: process {} (workload) exited", report.pid).as_str()),
        "{err}"
    );
    prom.proc.signal(nix::sys::signal::Signal::SIGTERM);
    eprintln!(
        "Prometheus scraped {} switches exactly; median slice {median:.3e} s, mean {mean:.3e} s; {:.1} s",
        want.switch,
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn several_processes_with_per_pid_and_name_labels_and_one_exiting_first() {
    if !bpf_or_skip("several_processes_with_per_pid_and_name_labels_and_one_exiting_first") {
        return;
    }
    let _serial = serial();
    let args = |switches: &'static str| {
        [
            "--threads",
            "1",
            "--greenlets",
            "3",
            "--switches",
            switches,
            "--throws",
            "40",
            "--kills",
            "1",
            "--iterations",
            "2",
            "--linger",
            "stdin",
        ]
    };
    let mut a = target(&args("2000"));
    let mut b = target(&args("3000"));
    let pids = format!("{},{}", a.pid(), b.pid());
    let mut g = Proc::spawn(
        gltop()
            .args(["--listen", "127.0.0.1:0", "-p", &pids, "--per-pid"])
            .args(["--greenlet-names", "2", "--hit-cost-ns", "500", "-d", "0.5"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let serving = g
        .wait_stderr_line(Duration::from_secs(60), |l| {
            l.contains("serving metrics on")
        })
        .unwrap_or_else(|| panic!("gltop never served: {}", g.stderr_so_far()));
    let addr = serving
        .split("http://")
        .nth(1)
        .unwrap()
        .split("/metrics")
        .next()
        .unwrap()
        .to_string();
    let report = |p: &Proc| {
        let line = p
            .wait_stdout_line(Duration::from_secs(120), |l| l.starts_with('{'))
            .expect("a report");
        Report::parse(&line)
    };
    let (ra, rb) = (report(&a), report(&b));

    // A exits first: gltop says so and goes on serving B, with A's final counts.
    drop(a.child.stdin.take());
    assert!(a.wait_for(Duration::from_secs(30)).is_some());
    assert!(
        g.wait_stderr(
            &format!("process {} (workload) exited", ra.pid),
            Duration::from_secs(10)
        ),
        "{}",
        g.stderr_so_far()
    );
    let m = scrape(&addr);
    for r in [&ra, &rb] {
        let l = format!("process=\"workload\",pid=\"{}\"", r.pid);
        let get = |name: &str| m[&(name.to_string(), l.clone())];
        assert_eq!(
            get("greenlet_switches_total"),
            r.totals.switch as f64,
            "{}",
            r.pid
        );
        assert_eq!(get("greenlet_created_total"), r.totals.new as f64);
        assert_eq!(get("greenlet_live"), 0.0);
        // Per name: `hub`, `worker` and `main` share 2 names and `_other`; they add up.
        let named: Vec<(&str, f64)> = m
            .iter()
            .filter(|((n, labels), _)| {
                n == "greenlet_named_switches_total" && labels.starts_with(&l)
            })
            .map(|((_, labels), v)| (labels.as_str(), *v))
            .collect();
        assert_eq!(named.len(), 3, "{named:?}");
        assert!(named
            .iter()
            .any(|(l, _)| l.ends_with("greenlet=\"_other\"")));
        assert_eq!(
            named.iter().map(|(_, v)| v).sum::<f64>(),
            r.totals.switch as f64
        );
    }
    let infos = m.keys().filter(|(n, _)| n == "gltop_target_info").count();
    assert_eq!(infos, 2);

    drop(b.child.stdin.take());
    assert!(b.wait_for(Duration::from_secs(30)).is_some());
    let status = g.wait("gltop", Duration::from_secs(30));
    let err = g.stderr_text();
    assert!(status.success(), "{status}: {err}");
    assert!(
        err.ends_with(&format!("gltop: process {} (workload) exited\n", rb.pid)),
        "{err}"
    );
}

#[test]
fn blocking_episodes_and_seconds_are_the_blockers_own() {
    if !bpf_or_skip("blocking_episodes_and_seconds_are_the_blockers_own") {
        return;
    }
    let _serial = serial();
    let go = std::env::temp_dir().join(format!("gltop-prom-blocking-{}", std::process::id()));
    let _ = std::fs::remove_file(&go);
    // Two processes of `blocker`: three 300 ms spins (on the CPU) and two 250 ms sleeps (off
    // it), each episode measured from inside by the workload.
    let blocker = |scenario: &[&str]| {
        let p = Proc::spawn(
            Command::new(example("blocker"))
                .args(scenario)
                .arg("--wait-for-file")
                .arg(&go)
                .args(["--linger-ms", "60000"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped()),
        );
        assert!(
            p.wait_stderr("waiting for", Duration::from_secs(60)),
            "blocker: {}",
            p.stderr_so_far()
        );
        p
    };
    let spin = blocker(&["--scenario", "spin", "--ms", "300", "--repeat", "3"]);
    let sleep = blocker(&["--scenario", "sleep", "--ms", "250", "--repeat", "2"]);
    let pids = format!("{},{}", spin.pid(), sleep.pid());
    let g = Proc::spawn(
        gltop()
            .args(["--listen", "127.0.0.1:0", "-p", &pids, "--per-pid"])
            .args(["--hit-cost-ns", "500", "-d", "0.25"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let addr = serving_addr(&g);
    let err = g.stderr_so_far();
    assert_eq!(
        err.matches(", blocking detector").count(),
        2,
        "both processes get the detector: {err}"
    );
    // Nothing has blocked yet: both series are there, at 0.
    let m = scrape(&addr);
    for p in [&spin, &sleep] {
        let l = format!("process=\"blocker\",pid=\"{}\"", p.pid());
        assert_eq!(
            m.get(&("greenlet_blocking_episodes_total".into(), l.clone())),
            Some(&0.0),
            "{m:?}"
        );
        assert_eq!(
            m.get(&("greenlet_blocking_seconds_total".into(), l)),
            Some(&0.0)
        );
    }
    std::fs::write(&go, b"").expect("create the go file");
    let report = |p: &Proc| -> serde_json::Value {
        let line = p
            .wait_stdout_line(Duration::from_secs(60), |l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no report: {}", p.stderr_so_far()));
        serde_json::from_str(&line).expect("blocker's JSON report")
    };
    let (rs, rl) = (report(&spin), report(&sleep));
    let _ = std::fs::remove_file(&go);
    for (p, r, n) in [(&spin, &rs, 3usize), (&sleep, &rl, 2)] {
        let episodes = r["episodes"].as_array().expect("episodes");
        assert_eq!(episodes.len(), n, "{r}");
        let measured: f64 = episodes
            .iter()
            .map(|e| e["measured_ns"].as_f64().unwrap() * 1e-9)
            .sum();
        let l = format!("process=\"blocker\",pid=\"{}\"", p.pid());
        // Every episode has ended once the report is out (the scenario switched back).
        let m = poll_until(Instant::now() + Duration::from_secs(10), || {
            let m = scrape(&addr);
            (m[&("greenlet_blocking_episodes_total".into(), l.clone())] == n as f64).then_some(m)
        })
        .unwrap_or_else(|| panic!("{n} episodes never counted: {:?}", scrape(&addr)));
        let seconds = m[&("greenlet_blocking_seconds_total".into(), l)];
        eprintln!(
            "{}: {n} episodes, {seconds:.3} s exported, {measured:.3} s measured inside",
            r["scenario"]
        );
        // The detector sees an episode from the first sample after its start to the switch
        // that ends it: within 30 ms each of the time measured inside.
        assert!(
            (seconds - measured).abs() <= 0.030 * n as f64,
            "{}: {seconds} s exported, {measured} s measured",
            r["scenario"]
        );
    }
}
