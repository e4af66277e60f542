//! The tracing page's Origin/Target example (the seed's `greenlet.settrace` doctest), in Rust.
//!
//! Run it with `cargo run --example tracing`. It prints the same transcript as the Python
//! original, except that the unnamed main greenlet prints as this runtime shows it:
//!
//! ```text
//! Transfer from <greenlet #1 suspended active started main> to <origin> with switch
//! In origin
//! Transfer from <origin> to <target> with switch
//! Transfer from <target> to <origin> with switch
//! Returned to origin
//! Transfer from <origin> to <target> with throw
//! Transfer from <target> to <greenlet #1 current active started main> with switch
//! ```

use std::cell::OnceCell;
use std::rc::Rc;

use greenlet::{settrace, Error, Event, Greenlet, Tracer};

/// The seed's callback: unpack the arguments only for the events it knows.
fn callback(event: &Event) -> Result<(), Error> {
    let (origin, target, kind) = match event {
        Event::Switch { origin, target } => (origin, target, "switch"),
        Event::Throw { origin, target } => (origin, target, "throw"),
        _ => return Ok(()),
    };
    println!("Transfer from {origin} to {target} with {kind}");
    Ok(())
}

fn main() -> Result<(), Error> {
    // `origin` and `target` refer to each other, as the Python globals do.
    let target_cell: Rc<OnceCell<Greenlet>> = Rc::new(OnceCell::new());
    let origin_cell: Rc<OnceCell<Greenlet>> = Rc::new(OnceCell::new());

    let old_trace = settrace(Some(Tracer::new(callback)));
    let origin = Greenlet::builder().name("origin").build({
        let target = target_cell.clone();
        move |_| {
            let target = target.get().expect("target exists");
            println!("In origin");
            target.switch(())?;
            println!("Returned to origin");
            target.kill()
        }
    });
    let target = Greenlet::builder().name("target").build({
        let origin = origin_cell.clone();
        move |_| origin.get().expect("origin exists").switch(())
    });
    origin_cell.set(origin.clone()).ok();
    target_cell.set(target).ok();

    let _ = origin.switch(())?;

    settrace(old_trace);
    Ok(())
}
