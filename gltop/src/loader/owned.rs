//! A libbpf-rs skeleton together with the storage of its BPF object, freed with it.
//!
//! A skeleton (`GreenletSkel<'obj>` ...) borrows, for its whole life, the
//! `MaybeUninit<OpenObject>` it was opened in; the loaders keep a skeleton for as long as
//! they are attached, inside a struct that also holds its links, so that borrow cannot be
//! expressed as a lifetime of the struct. [`Owned`] boxes the storage, hands the skeleton a
//! `'static` borrow of it, and frees the box only after dropping the skeleton: one per
//! attach, where `gltop --exe` or `--children` attaches to a new worker for as long as a
//! prefork server recycles them.

use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

use libbpf_rs::OpenObject;

/// A value `S` (a skeleton) that borrows the heap storage `T` this holds, dropped in that
/// order: `S`, then `T`.
pub(crate) struct Owned<S, T: 'static = MaybeUninit<OpenObject>> {
    value: ManuallyDrop<S>,
    /// From `Box::into_raw`; freed in `drop`, after `value`.
    storage: NonNull<T>,
}

impl<S, T: 'static> Owned<S, T> {
    /// Boxes `storage` and makes the value from a borrow of it (`make`'s error, if any, is
    /// returned after the storage is freed).
    ///
    /// # Safety
    /// The borrow handed to `make` is `'static` in name only: it lives as long as this
    /// `Owned`. What `make` returns (and its error) must keep every borrow of it inside the
    /// value, and the value must never be moved out of this `Owned` (`std::mem::swap`,
    /// `replace` or `take` through [`DerefMut`]), as with `Pin::new_unchecked`.
    pub(crate) unsafe fn new<E>(
        storage: T,
        make: impl FnOnce(&'static mut T) -> Result<S, E>,
    ) -> Result<Self, E> {
        let storage = NonNull::from(Box::leak(Box::new(storage)));
        // SAFETY: `storage` comes from a leaked box, so it is valid, aligned and not borrowed
        // elsewhere; the caller promised that every borrow made from this one stays in the
        // value, which `drop` disposes of before freeing the box.
        let borrow: &'static mut T = unsafe { &mut *storage.as_ptr() };
        match make(borrow) {
            Ok(value) => Ok(Owned {
                value: ManuallyDrop::new(value),
                storage,
            }),
            Err(e) => {
                // SAFETY: the box was leaked above and is freed once; `make` returned no
                // value, and the caller promised its error keeps no borrow of the storage.
                drop(unsafe { Box::from_raw(storage.as_ptr()) });
                Err(e)
            }
        }
    }
}

impl<S, T: 'static> Drop for Owned<S, T> {
    fn drop(&mut self) {
        // SAFETY: `value` is dropped here only, once, and never used after; then the box,
        // leaked in `new` and freed nowhere else, is freed once nothing borrows it (`new`'s
        // contract: every borrow of it was in `value`).
        unsafe {
            ManuallyDrop::drop(&mut self.value);
            drop(Box::from_raw(self.storage.as_ptr()));
        }
    }
}

impl<S, T: 'static> Deref for Owned<S, T> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.value
    }
}

impl<S, T: 'static> DerefMut for Owned<S, T> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.value
    }
}

// SAFETY: an `Owned` owns its value and its boxed storage as a `(S, Box<T>)` would, and
// shares neither: sending it sends both.
unsafe impl<S: Send, T: Send + 'static> Send for Owned<S, T> {}
// SAFETY: as above; `&Owned` only gives `&S` (`Deref`), never access to the storage.
unsafe impl<S: Sync, T: Sync + 'static> Sync for Owned<S, T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    type Log = Rc<RefCell<Vec<&'static str>>>;

    /// Stands for the BPF object storage: says when it is dropped, and is checked alive.
    struct Storage {
        alive: u64,
        log: Log,
    }

    const ALIVE: u64 = 0x5eed_cafe;

    impl Drop for Storage {
        fn drop(&mut self) {
            self.alive = 0;
            self.log.borrow_mut().push("storage");
        }
    }

    /// Stands for the skeleton: borrows the storage, and reads it when dropped (as the
    /// skeleton closes its object).
    struct Skeleton {
        storage: &'static mut Storage,
        log: Log,
    }

    impl Drop for Skeleton {
        fn drop(&mut self) {
            assert_eq!(
                self.storage.alive, ALIVE,
                "storage freed before the skeleton"
            );
            self.log.borrow_mut().push("skeleton");
        }
    }

    fn storage(log: &Log) -> Storage {
        Storage {
            alive: ALIVE,
            log: log.clone(),
        }
    }

    #[test]
    fn drops_the_value_then_frees_the_storage() {
        let log = Log::default();
        // SAFETY: the skeleton keeps the borrow and is never moved out.
        let owned = unsafe {
            Owned::new(storage(&log), |s| {
                Ok::<_, ()>(Skeleton {
                    storage: s,
                    log: log.clone(),
                })
            })
        }
        .expect("made");
        let skeleton: &Skeleton = &owned;
        assert_eq!(skeleton.storage.alive, ALIVE);
        // Moving the `Owned` does not move the storage the skeleton points to.
        let moved = vec![owned];
        assert!(log.borrow().is_empty());
        drop(moved);
        assert_eq!(*log.borrow(), ["skeleton", "storage"]);
    }

    #[test]
    fn a_failed_make_frees_the_storage() {
        let log = Log::default();
        // SAFETY: nothing is made; the error borrows nothing.
        let made = unsafe {
            Owned::<Skeleton, Storage>::new(storage(&log), |s| {
                assert_eq!(s.alive, ALIVE);
                Err("cannot open")
            })
        };
        assert_eq!(made.err(), Some("cannot open"));
        assert_eq!(*log.borrow(), ["storage"]);
    }
}
