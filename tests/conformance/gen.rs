//! A seeded generator of random scripts.
//!
//! Every generated script terminates: bodies are straight-line lists of steps, each greenlet's
//! body runs at most once (each `def` has exactly one `create` step, placed in `main` or in the
//! body of an earlier `def`), so every step runs at most once and every transfer is made by a
//! step, a body's end or a kill on drop. The Python and Rust interpreters therefore need no
//! step budget.

use crate::script::{Def, ErrSpec, Script, Step, TracerSpec, Val};

/// SplitMix64: small, fast, and the same sequence everywhere for a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.below(100) < percent as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// An index chosen with the given weights.
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u32 = weights.iter().sum();
        let mut x = self.below(total as usize) as u32;
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        unreachable!()
    }
}

/// The seed of script `index` in a run seeded with `seed`: each script can be regenerated alone.
pub fn script_seed(seed: u64, index: u64) -> u64 {
    Rng::new(seed ^ index.wrapping_mul(0xD134_2543_DE82_EF95)).next_u64()
}

pub fn value(rng: &mut Rng) -> Val {
    match rng.weighted(&[30, 40, 20, 10]) {
        0 => Val::Unit,
        1 => Val::Int(rng.below(10) as i64),
        2 => Val::Str(rng.pick(&["a", "b", "c"]).to_string()),
        _ => Val::Exit,
    }
}

pub fn error(rng: &mut Rng) -> ErrSpec {
    if rng.chance(40) {
        ErrSpec::Exit
    } else {
        ErrSpec::User(format!("E{}", 1 + rng.below(3)))
    }
}

/// One random step of the body of `me`; `names` holds main and every def.
fn step(rng: &mut Rng, me: &str, names: &[String]) -> Step {
    let target = |rng: &mut Rng| {
        if rng.chance(15) {
            me.to_string()
        } else {
            rng.pick(names).clone()
        }
    };
    let def_name = |rng: &mut Rng| names[1 + rng.below(names.len() - 1)].clone();
    match rng.weighted(&[34, 12, 7, 6, 7, 2, 2, 5]) {
        0 => Step::Switch {
            target: target(rng),
            value: value(rng),
            catch: rng.chance(85),
        },
        1 => Step::Throw {
            target: target(rng),
            error: error(rng),
            catch: rng.chance(85),
        },
        2 => Step::Drop { g: def_name(rng) },
        3 => Step::Reparent {
            g: target(rng),
            parent: rng.pick(names).clone(),
        },
        4 => Step::Settrace {
            tracer: match rng.weighted(&[3, 4, 3, 1, 2, 1]) {
                0 => TracerSpec::None,
                1 => TracerSpec::Record,
                2 => TracerSpec::FailOn(1 + rng.below(4) as u32),
                3 => TracerSpec::PanicOn(1 + rng.below(4) as u32),
                5 => TracerSpec::ExitOn(1 + rng.below(4) as u32),
                _ => TracerSpec::SwitchOn {
                    n: 1 + rng.below(4) as u32,
                    target: rng.pick(names).clone(),
                    value: value(rng),
                },
            },
        },
        5 => Step::Gettrace,
        6 => Step::Print {
            text: format!("p{}", rng.below(10)),
        },
        _ => Step::State { g: target(rng) },
    }
}

/// A random script; `seed` decides everything.
pub fn script(seed: u64) -> Script {
    let mut rng = Rng::new(seed);
    // Mostly small scripts (they shrink fast and hit the common paths), some large ones.
    let large = rng.chance(20);
    let (max_defs, max_steps) = if large { (8, 12) } else { (5, 7) };
    let ndefs = 1 + rng.below(max_defs);
    let mut names = vec!["main".to_string()];
    names.extend((1..=ndefs).map(|i| format!("g{i}")));

    let mut main = Vec::new();
    if rng.chance(40) {
        main.push(Step::Settrace {
            tracer: TracerSpec::Record,
        });
    }
    for _ in 0..2 + rng.below(max_steps + 2) {
        main.push(step(&mut rng, "main", &names));
    }
    let mut defs: Vec<Def> = names[1..]
        .iter()
        .map(|name| {
            let mut body: Vec<Step> = (0..rng.below(max_steps))
                .map(|_| step(&mut rng, name, &names))
                .collect();
            if rng.chance(40) {
                body.push(match rng.weighted(&[55, 35, 10]) {
                    0 => Step::Return {
                        value: value(&mut rng),
                    },
                    1 => Step::Raise {
                        error: error(&mut rng),
                    },
                    _ => Step::Panic {
                        tag: format!("P{}", 1 + rng.below(2)),
                    },
                });
            }
            Def {
                name: name.clone(),
                body,
            }
        })
        .collect();

    // One create step per def, in main or in an earlier def, early in the body (before the
    // steps that are likely to use it). An explicit parent is main or an earlier def, which
    // is more likely to exist by then.
    for i in 0..ndefs {
        let parent = if rng.chance(35) {
            Some(names[rng.below(i + 1)].clone())
        } else {
            None
        };
        let create = Step::Create {
            g: names[i + 1].clone(),
            parent,
        };
        let creator = if i == 0 || rng.chance(50) {
            0
        } else {
            1 + rng.below(i)
        };
        let body = if creator == 0 {
            &mut main
        } else {
            &mut defs[creator - 1].body
        };
        let at = rng.below(body.len() / 3 + 1);
        body.insert(at, create);
    }
    Script { defs, main }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_script_and_every_def_created_once() {
        for seed in 0..200 {
            let s = script(script_seed(7, seed));
            assert_eq!(s, script(script_seed(7, seed)));
            for d in &s.defs {
                let creates = std::iter::once(&s.main)
                    .chain(s.defs.iter().map(|d| &d.body))
                    .flatten()
                    .filter(|st| matches!(st, Step::Create { g, .. } if *g == d.name))
                    .count();
                assert_eq!(creates, 1, "{}", s.to_text());
            }
        }
    }
}
