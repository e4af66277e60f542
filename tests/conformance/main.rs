//! Differential conformance tests (temporary: Python side only).
mod gen;
mod oracle;
mod script;
mod shrink;

#[test]
fn python_smoke() {
    oracle::available().unwrap();
    let n: u64 = std::env::var("CONFORMANCE_N").ok().and_then(|s| s.parse().ok()).unwrap_or(2000);
    let scripts: Vec<_> = (0..n).map(|i| gen::script(gen::script_seed(1, i))).collect();
    if let Ok(p) = std::env::var("DUMP") { std::fs::write(p, scripts.iter().map(|s| serde_json::to_string(s).unwrap() + "\n").collect::<String>()).unwrap(); }
    let mut o = oracle::Oracle::start();
    let t = std::time::Instant::now();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    let mut lens = 0;
    o.run_batch(&scripts, |i, tr| {
        lens += tr.len();
        for l in &tr {
            let k: String = l.split(' ').take(2).collect::<Vec<_>>().join(" ");
            let k = if k.starts_with('[') { l.split(' ').nth(1).unwrap().to_string() } else { k };
            *kinds.entry(k).or_default() += 1;
            if l.starts_with("internal") { panic!("{}\n{}", scripts[i].to_text(), tr.join("\n")); }
        }
        if i == 5 { eprintln!("{}\n{}", scripts[i].to_text(), tr.join("\n")); }
    });
    eprintln!("{n} scripts in {:?}, {lens} lines; {kinds:#?}", t.elapsed());
}
