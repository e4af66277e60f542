//! The stack-switching strategy (`src/switch.rs`): a greenlet resumes a parked target from its
//! own stack, so the greenlets of a thread form a chain, and a transfer to a greenlet further
//! down that chain wakes every greenlet above it on the way. These patterns stress what the
//! spec tests reach only by chance: long chains, transfers down several levels, deaths whose
//! parent is not the greenlet that resumed them, and greenlets resumed from a different
//! greenlet each time.

use std::cell::RefCell;
use std::rc::Rc;

use greenlet::{getcurrent, Error, Greenlet, Value};

type Log = Rc<RefCell<Vec<String>>>;

fn push(log: &Log, line: String) {
    log.borrow_mut().push(line);
}

/// `n` greenlets, each switching to the next one (parked, so each resumes the next from its
/// own stack: a chain of `n` above main); the last switches to main, which unwinds all of
/// them at once. Then main switches into the middle of the (now parked) set, in an order
/// unrelated to the chain they formed, and each answers main directly.
#[test]
fn a_long_chain_unwinds_in_one_transfer_and_its_members_park() {
    const N: usize = 200;
    let log: Log = Rc::default();
    let main = getcurrent();
    let ring: Rc<RefCell<Vec<Greenlet>>> = Rc::default();
    for i in 0..N {
        let (log, main, members) = (log.clone(), main.clone(), ring.clone());
        ring.borrow_mut()
            .push(Greenlet::new(move |v: Value| -> Result<(), Error> {
                let depth = v.downcast::<usize>().expect("a depth");
                let next = members.borrow().get(i + 1).cloned();
                // Down the chain: to the next greenlet, or (the last one) to main.
                let back = match next {
                    Some(next) => next.switch(depth + 1)?,
                    None => main.switch(depth + 1)?,
                };
                // Later, main switches to each directly.
                let round = back.downcast::<usize>().expect("a round");
                push(&log, format!("{i} woke in round {round}"));
                main.switch(i)?;
                Ok(())
            }));
    }
    let first = ring.borrow()[0].clone();
    let depth = first.switch(0_usize).expect("the chain runs");
    assert_eq!(depth.downcast::<usize>().expect("a depth"), N);
    assert!(ring.borrow().iter().all(Greenlet::is_active));
    // Every member is parked: main resumes them in a scrambled order.
    for round in 0..N {
        let i = (round * 7919) % N;
        let g = ring.borrow()[i].clone();
        let answer = g.switch(round).expect("a member answers");
        assert_eq!(answer.downcast::<usize>().expect("its index"), i);
    }
    let log = log.borrow();
    assert_eq!(log.len(), N);
    for (round, line) in log.iter().enumerate() {
        assert_eq!(
            *line,
            format!("{} woke in round {round}", (round * 7919) % N)
        );
    }
    // Each finishes when switched to once more (its run returns after its last switch).
    for g in ring.borrow().iter() {
        g.switch(()).expect("finishes");
        assert!(g.is_dead());
    }
}

/// A scripted walk through every kind of step: each greenlet, when it wakes, logs who sent it
/// there and switches to the next greenlet of its script, or returns when its script is done
/// (its result going to its parent). The comments give the chain after each step (main
/// first, the running greenlet last).
#[test]
fn transfers_up_down_and_across_the_chain() {
    use std::collections::HashMap;
    let log: Log = Rc::default();
    let all: Rc<RefCell<HashMap<&'static str, Greenlet>>> = Rc::default();
    all.borrow_mut().insert("main", getcurrent());
    let scripts: [(&'static str, &'static [&'static str]); 4] = [
        // a: -> b (started from a's stack: main a b); later woken by d, -> c.
        ("a", &["b", "c"]),
        // b: -> c (main a b c); woken by d, -> d (parked: main a b d).
        ("b", &["c", "d"]),
        // c: -> d (main a b c d); woken by a (parked since d went down to b), then returns:
        // its result goes to its parent d, parked, so a (its resumer) resumes d.
        ("c", &["d"]),
        // d: -> b (two levels down: main a b); woken by b, -> a (down: main a); woken by a
        // (c's result, via a), -> main (down through a: main).
        ("d", &["b", "a", "main"]),
    ];
    for (name, script) in scripts {
        let (log, peers) = (log.clone(), all.clone());
        let g = Greenlet::new(move |first: Value| -> Result<&'static str, Error> {
            let mut got = first;
            for to in script {
                push(
                    &log,
                    format!("{name} got {}", got.downcast_ref::<&str>().unwrap()),
                );
                let target = peers.borrow()[to].clone();
                got = target.switch(name)?;
            }
            push(
                &log,
                format!(
                    "{name} got {} and returns",
                    got.downcast_ref::<&str>().unwrap()
                ),
            );
            Ok(name)
        });
        all.borrow_mut().insert(name, g);
    }
    {
        let all = all.borrow();
        all["c"].set_parent(&all["d"]).expect("d is c's new parent");
    }
    let a = all.borrow()["a"].clone();
    let back = a.switch("main").expect("the walk runs");
    assert_eq!(back.downcast_ref::<&str>(), Some(&"d"));
    // Everyone but c is parked; each finishes when main switches to it.
    for name in ["b", "a", "d"] {
        let g = all.borrow()[name].clone();
        let result = g.switch("main").expect("finishes");
        assert_eq!(result.downcast_ref::<&str>(), Some(&name));
        assert!(g.is_dead(), "{name}");
    }
    assert!(all.borrow()["c"].is_dead());
    assert_eq!(
        *log.borrow(),
        [
            "a got main",
            "b got a",
            "c got b",
            "d got c",
            "b got d",
            "d got b",
            "a got d",
            "c got a and returns",
            // c's result, its name, to its parent d, resumed by a on the way.
            "d got c",
            "b got main and returns",
            "a got main and returns",
            "d got main and returns",
        ]
    );
}
