//! [`Value`]: the type-erased payload carried by a switch.
//!
//! A greenlet switch carries one value of any `'static` type. Small values that greenlet code
//! passes all the time (unit, integers, floats, `bool`, `char`, `&'static str`, a [`Greenlet`]
//! handle) are stored inline, so a switch with such a payload never allocates; any other type
//! is boxed. Everything here is safe code: the inline variants are chosen with `Any` downcasts
//! on concrete types, which the compiler folds away for each monomorphised call.

use std::any::{type_name, Any, TypeId};
use std::fmt;
use std::mem::{self, ManuallyDrop};

use crate::Greenlet;

/// A value passed by [`Greenlet::switch`], returned by a greenlet's `run`, or received from a
/// pending `switch`.
///
/// The value passed is the value received: there is no argument packing as in Python
/// (`switch()` in Python delivers `()`; in Rust, switch with `()`).
///
/// ```
/// use greenlet::Value;
///
/// let v = Value::new(42_u64);
/// assert!(v.is::<u64>());
/// assert_eq!(v.downcast_ref::<u64>(), Some(&42));
/// assert_eq!(v.downcast::<u64>().unwrap(), 42);
///
/// let s = Value::new(String::from("hello"));
/// assert_eq!(s.downcast::<String>().unwrap(), "hello");
///
/// // A Value passed where a value is expected is not wrapped twice.
/// let unit = Value::new(Value::unit());
/// assert!(unit.is_unit());
/// ```
pub struct Value(ManuallyDrop<Repr>);

/// Dropping a `Value` that holds nothing to drop (every inline type but [`Greenlet`]) costs a
/// compare and a branch where it is dropped; the compiler's drop glue for the enum would be
/// an out-of-line call on every switch.
impl Drop for Value {
    #[inline]
    fn drop(&mut self) {
        if self.owns_something() {
            // Moved out by value, not passed by reference: the value's words need no home in
            // memory on the common path (a reference would make the compiler store them on
            // the stack before the test, 3 instructions per switch for a unit payload).
            drop_owned(self.take_repr());
        }
    }
}

#[inline(never)]
fn drop_owned(repr: Repr) {
    drop(repr);
}

macro_rules! inline_types {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        // A tag as wide as a word: the receiver of a switch copies a value as whole words, and
        // a word-sized load of a tag the sender wrote as one byte would wait for the store to
        // reach the cache (a failed store-to-load forward: a third of a main<->child switch).
        #[repr(u64)]
        enum Repr {
            $($variant($ty),)*
            Greenlet(Greenlet),
            Boxed(Box<dyn Boxed>),
        }

        impl Value {
            /// Whether dropping it has anything to free: a [`Greenlet`] or a box. Written as
            /// "not inline" (the inline variants come first, so this is one compare of the
            /// tag against their count, folded into the load) rather than as a match on the
            /// two owning variants (a load, a mask and a compare).
            #[inline(always)]
            fn owns_something(&self) -> bool {
                !matches!(*self.0, $(Repr::$variant(_))|*)
            }

            /// Wraps `value`. Unit, the primitive numbers, `bool`, `char`, `&'static str` and
            /// [`Greenlet`] are stored inline (no allocation); other types are boxed. Passing
            /// a `Value` returns it unchanged.
            #[inline]
            pub fn new<T: 'static>(value: T) -> Value {
                let mut slot = Some(value);
                let any: &mut dyn Any = &mut slot;
                if let Some(v) = any.downcast_mut::<Option<Value>>() {
                    return take(v);
                }
                $(
                    if let Some(v) = any.downcast_mut::<Option<$ty>>() {
                        return Value::from_repr(Repr::$variant(take(v)));
                    }
                )*
                if let Some(v) = any.downcast_mut::<Option<Greenlet>>() {
                    return Value::from_repr(Repr::Greenlet(take(v)));
                }
                Value::from_repr(Repr::Boxed(Box::new(take(&mut slot))))
            }

            /// Takes the value out if it is a `T`; otherwise a [`DowncastError`] that names the
            /// type that was sent and the type asked for, and gives the value back
            /// ([`DowncastError::into_value`]). With `?` in a greenlet, the failure becomes
            /// [`Error::Downcast`](crate::Error::Downcast).
            ///
            /// A switch passes exactly the type it was given: `g.switch(5)` sends an `i32`
            /// (Rust's default integer type), which `downcast::<i64>()` does not accept.
            ///
            /// ```
            /// use greenlet::{Error, Greenlet};
            ///
            /// let g = Greenlet::new(|v| Ok(v.downcast::<i64>()? * 2));
            /// let err = g.switch(5).unwrap_err(); // `5` is an `i32`
            /// let Error::Downcast(mismatch) = &err else { panic!("{err:?}") };
            /// assert_eq!((mismatch.sent(), mismatch.expected()), ("i32", "i64"));
            /// assert_eq!(err.to_string(), "the value sent is a `i32`, not the `i64` asked for");
            ///
            /// let g = Greenlet::new(|v| Ok(v.downcast::<i64>()? * 2));
            /// assert_eq!(g.switch(5_i64)?.downcast::<i64>()?, 10); // say the type you send
            /// # Ok::<(), Error>(())
            /// ```
            #[inline(always)]
            pub fn downcast<T: 'static>(mut self) -> Result<T, DowncastError> {
                // For an inline `T` this folds to one tag test (the type tests are constant).
                $(
                    if TypeId::of::<T>() == TypeId::of::<$ty>() {
                        if let Repr::$variant(v) = *self.0 {
                            if let Ok(t) = cast::<$ty, T>(v) {
                                // An inline primitive: nothing to drop (and no drop test).
                                mem::forget(self);
                                return Ok(t);
                            }
                        }
                        return Err(DowncastError::new::<T>(self));
                    }
                )*
                let back = match self.take_repr() {
                    Repr::Greenlet(g) => match cast(g) {
                        Ok(t) => return Ok(t),
                        Err(g) => Repr::Greenlet(g),
                    },
                    Repr::Boxed(b) => {
                        if (*b).as_any().is::<T>() {
                            if let Ok(t) = b.into_any().downcast::<T>() {
                                return Ok(*t);
                            }
                            unreachable!("the type was tested just before");
                        }
                        Repr::Boxed(b)
                    }
                    $(Repr::$variant(v) => match cast(v) {
                        Ok(t) => return Ok(t),
                        Err(v) => Repr::$variant(v),
                    },)*
                };
                Err(DowncastError::new::<T>(Value::from_repr(back)))
            }

            /// The name of the type of the value ([`std::any::type_name`] of what was sent).
            ///
            /// ```
            /// assert_eq!(greenlet::Value::new(5).type_name(), "i32");
            /// assert_eq!(greenlet::Value::new(vec![1_u8]).type_name(), "alloc::vec::Vec<u8>");
            /// ```
            pub fn type_name(&self) -> &'static str {
                match &*self.0 {
                    $(Repr::$variant(_) => type_name::<$ty>(),)*
                    Repr::Greenlet(_) => type_name::<Greenlet>(),
                    Repr::Boxed(b) => (**b).type_name(),
                }
            }

            /// Borrows the value if it is a `T`.
            #[inline]
            pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
                match &*self.0 {
                    $(Repr::$variant(v) => (v as &dyn Any).downcast_ref(),)*
                    Repr::Greenlet(g) => (g as &dyn Any).downcast_ref(),
                    Repr::Boxed(b) => (**b).as_any().downcast_ref(),
                }
            }

            /// Whether the value is a `T`.
            #[inline]
            pub fn is<T: 'static>(&self) -> bool {
                self.downcast_ref::<T>().is_some()
            }
        }

        impl fmt::Debug for Value {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match &*self.0 {
                    $(Repr::$variant(v) => write!(f, "Value({:?}: {})", v, type_name::<$ty>()),)*
                    Repr::Greenlet(g) => write!(f, "Value({g:?})"),
                    Repr::Boxed(b) => {
                        if let Some(s) = (**b).as_any().downcast_ref::<String>() {
                            write!(f, "Value({s:?}: String)")
                        } else if let Some(e) = (**b).as_any().downcast_ref::<crate::GreenletExit>() {
                            write!(f, "Value({e:?})")
                        } else {
                            write!(f, "Value(<{}>)", (**b).type_name())
                        }
                    }
                }
            }
        }
    };
}

inline_types! {
    Unit(()),
    Bool(bool),
    Char(char),
    U8(u8),
    U16(u16),
    U32(u32),
    U64(u64),
    Usize(usize),
    I8(i8),
    I16(i16),
    I32(i32),
    I64(i64),
    Isize(isize),
    F32(f32),
    F64(f64),
    Str(&'static str),
}

/// A boxed value: `Any`, and the name of its type, for [`DowncastError`].
trait Boxed: Any {
    fn as_any(&self) -> &dyn Any;
    fn into_any(self: Box<Self>) -> Box<dyn Any>;
    fn type_name(&self) -> &'static str;
}

impl<T: Any> Boxed for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
    fn type_name(&self) -> &'static str {
        type_name::<T>()
    }
}

/// A [`Value::downcast`] to a type the value is not: names both types, and holds the value.
///
/// `?` turns it into [`Error::Downcast`](crate::Error::Downcast) (the value is dropped then);
/// [`DowncastError::into_value`] gives the value back, to try another type:
///
/// ```
/// use greenlet::Value;
///
/// let v = Value::new("done");
/// let err = v.downcast::<u32>().unwrap_err();
/// assert_eq!((err.sent(), err.expected()), ("&str", "u32"));
/// assert_eq!(err.into_value().downcast::<&str>().unwrap(), "done");
/// ```
///
/// It is one pointer (the failure is boxed), so that `Result<u64, DowncastError>` comes back
/// in two registers and a successful downcast costs what it did before the error had a type.
/// Test with [`Value::is`] first where a failing downcast is the common case.
pub struct DowncastError(Box<Failed>);

struct Failed {
    value: Value,
    expected: &'static str,
}

impl DowncastError {
    #[cold]
    #[inline(never)]
    fn new<T: 'static>(value: Value) -> DowncastError {
        DowncastError(Box::new(Failed {
            value,
            expected: type_name::<T>(),
        }))
    }

    /// The name of the type that was sent (the value's type).
    pub fn sent(&self) -> &'static str {
        self.0.value.type_name()
    }

    /// The name of the type that was asked for.
    pub fn expected(&self) -> &'static str {
        self.0.expected
    }

    /// The value, untouched.
    pub fn into_value(self) -> Value {
        self.0.value
    }
}

impl fmt::Debug for DowncastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DowncastError")
            .field("value", &self.0.value)
            .field("expected", &self.0.expected)
            .finish()
    }
}

impl fmt::Display for DowncastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the value sent is a `{}`, not the `{}` asked for",
            self.sent(),
            self.0.expected
        )
    }
}

impl std::error::Error for DowncastError {}

impl Value {
    /// The unit value, `()`: what a switch with no meaningful payload carries.
    #[inline]
    pub const fn unit() -> Value {
        Value::from_repr(Repr::Unit(()))
    }

    #[inline]
    const fn from_repr(repr: Repr) -> Value {
        Value(ManuallyDrop::new(repr))
    }

    /// Moves the contents out, leaving a unit behind (whose drop does nothing).
    #[inline]
    fn take_repr(&mut self) -> Repr {
        ManuallyDrop::into_inner(mem::replace(&mut self.0, ManuallyDrop::new(Repr::Unit(()))))
    }

    /// Whether this is the unit value.
    #[inline]
    pub fn is_unit(&self) -> bool {
        matches!(*self.0, Repr::Unit(()))
    }
}

impl Default for Value {
    fn default() -> Self {
        Value::unit()
    }
}

#[inline]
fn take<T>(slot: &mut Option<T>) -> T {
    slot.take().expect("the slot was filled just before")
}

/// Moves `s` into a `T` when `S` and `T` are the same type.
#[inline]
fn cast<S: 'static, T: 'static>(s: S) -> Result<T, S> {
    let mut slot = Some(s);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<T>>() {
        Some(t) => Ok(take(t)),
        None => Err(take(&mut slot)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_values_are_inline_and_round_trip() {
        assert!(matches!(*Value::new(()).0, Repr::Unit(())));
        assert!(matches!(*Value::new(7_u64).0, Repr::U64(7)));
        assert!(matches!(*Value::new("x").0, Repr::Str("x")));
        assert_eq!(Value::new(-3_i32).downcast::<i32>().unwrap(), -3);
        assert_eq!(Value::new(1.5_f64).downcast::<f64>().unwrap(), 1.5);
    }

    #[test]
    fn wrong_type_gives_the_value_back() {
        let v = Value::new(5_u32);
        let e = v.downcast::<u64>().unwrap_err();
        assert_eq!((e.sent(), e.expected()), ("u32", "u64"));
        assert_eq!(e.into_value().downcast::<u32>().unwrap(), 5);
        let b = Value::new(vec![1, 2, 3]);
        let e = b.downcast::<String>().unwrap_err();
        assert_eq!(
            (e.sent(), e.expected()),
            ("alloc::vec::Vec<i32>", "alloc::string::String")
        );
        assert_eq!(
            e.to_string(),
            "the value sent is a `alloc::vec::Vec<i32>`, not the `alloc::string::String` asked for"
        );
        assert_eq!(
            e.into_value().downcast::<Vec<i32>>().unwrap(),
            vec![1, 2, 3]
        );
        let g = Value::new(Greenlet::new(|_| Ok(())));
        let e = g.downcast::<u8>().unwrap_err();
        assert_eq!(
            (e.sent(), e.expected()),
            ("greenlet::greenlet::Greenlet", "u8")
        );
        assert!(e.into_value().downcast::<Greenlet>().is_ok());
        let e = Value::unit().downcast::<Greenlet>().unwrap_err();
        assert_eq!(
            (e.sent(), e.expected()),
            ("()", "greenlet::greenlet::Greenlet")
        );
    }

    #[test]
    fn value_in_value_is_not_nested() {
        let v = Value::new(Value::new(9_u8));
        assert_eq!(v.downcast::<u8>().unwrap(), 9);
    }

    #[test]
    fn value_stays_three_words() {
        assert!(std::mem::size_of::<Value>() <= 24);
    }

    #[test]
    fn debug_shows_inline_contents() {
        assert_eq!(format!("{:?}", Value::new(3_i64)), "Value(3: i64)");
        assert_eq!(
            format!("{:?}", Value::new(String::from("s"))),
            "Value(\"s\": String)"
        );
        assert_eq!(
            format!("{:?}", Value::new(vec![1_u8])),
            "Value(<alloc::vec::Vec<u8>>)"
        );
    }
}
