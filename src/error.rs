//! [`Error`]: what a switch can raise, and [`GreenletExit`], the error that asks a greenlet to
//! finish.

use std::borrow::Cow;
use std::fmt;

/// The error a switch, a throw or a greenlet's `run` can produce.
///
/// It plays the role of Python's exceptions for greenlet code: an error returned by `run` kills
/// the greenlet and comes out of its parent's pending `switch` (spec §5.1); [`Greenlet::throw`]
/// raises one inside another greenlet; the runtime's own refusals (a parent cycle, a stack that
/// cannot be allocated) are variants of it too, so one `?` handles everything.
///
/// Panics are not errors: a panic escaping `run` is carried to the parent and keeps unwinding
/// there.
///
/// ```
/// use greenlet::{Error, Greenlet};
///
/// let g = Greenlet::new(|_| -> Result<(), Error> { Err(Error::msg("no luck")) });
/// let err = g.switch(()).unwrap_err();
/// assert_eq!(err.to_string(), "no luck");
/// assert!(g.is_dead());
/// ```
///
/// # Not `Clone`, and never holding a greenlet: deliberately
/// - `Error` is `Send + Sync + 'static`, so it converts into `Box<dyn std::error::Error + Send +
///   Sync>` or `anyhow::Error`, leaves a thread through `JoinHandle::join`, and is what a
///   program's `main` returns. A [`Greenlet`](crate::Greenlet) is an `Rc` handle, neither
///   `Send` nor `Sync`, so an error cannot hold one. It would also keep the greenlet (and its
///   stack) alive for as long as the error is kept, and a kept handle changes when a greenlet
///   is killed (spec §8). Name the greenlet instead: put its [`id`](crate::Greenlet::id) or
///   name in the message or in your own error type, or pass the handle itself as a
///   [`Value`](crate::Value) in a switch.
/// - It is not `Clone` because what it wraps is not: a user error is any
///   `Box<dyn Error + Send + Sync>`, and `std::io::Error` (in
///   [`Error::StackAllocation`]) is not `Clone` either. Requiring `Clone` of every error a
///   greenlet returns would shut out most error types. To deliver one failure to several
///   places, keep it in an `Rc`/`Arc` of your own, or send copies of its message
///   ([`Error::msg`]`(e.to_string())`).
///
/// ```
/// use greenlet::{Error, Greenlet};
///
/// fn send_sync<E: Send + Sync + 'static>(_: &E) {}
/// let g = Greenlet::builder().name("fetch").build(|_| Err::<(), _>(Error::msg("timeout")));
/// let err = g.switch(()).unwrap_err();
/// send_sync(&err); // can leave the thread, or become a `Box<dyn Error + Send + Sync>`
/// let why = Error::msg(format!("greenlet #{} ({}): {err}", g.id(), g.name().unwrap()));
/// assert_eq!(why.to_string(), format!("greenlet #{} (fetch): timeout", g.id()));
/// let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(why);
/// # drop(boxed);
/// ```
///
/// [`Greenlet::throw`]: crate::Greenlet::throw
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A request to finish: see [`GreenletExit`]. When it escapes a greenlet's `run`, the parent
    /// receives it as a value, not as an error (spec §5.2).
    #[error(transparent)]
    Exit(#[from] GreenletExit),
    /// An error raised by greenlet code (or by a tracer).
    #[error(transparent)]
    User(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// [`Greenlet::set_parent`](crate::Greenlet::set_parent) would make a greenlet its own
    /// ancestor (Python: `ValueError: cyclic parent chain`).
    #[error("cyclic parent chain")]
    CyclicParent,
    /// [`Greenlet::set_parent`](crate::Greenlet::set_parent) on a main greenlet, which never has
    /// a parent.
    #[error("cannot set the parent of a main greenlet")]
    MainGreenletParent,
    /// A switch or a throw to a greenlet of a thread whose greenlets were torn down when it
    /// exited: from greenlet code that runs later on that thread, in another thread-local's
    /// destructor (Python: `GreenletError: cannot switch to a different thread (which
    /// happens to have exited)`). The greenlet was unstarted or dead then, and stays so.
    #[error("cannot switch to a greenlet of a thread that has exited")]
    ThreadExited,
    /// [`name_main`](crate::name_main) on a thread whose main greenlet exists already.
    #[error("this thread's main greenlet exists already: name it before any other greenlet call")]
    MainGreenletExists,
    /// The stack of a greenlet that was about to start could not be allocated. The greenlet
    /// stays unstarted; a finishing child whose parent cannot start passes this error on to the
    /// next ancestor (spec §5.3).
    #[error("cannot allocate a {size}-byte greenlet stack: {source}")]
    StackAllocation {
        /// The stack size that was asked for.
        size: usize,
        /// Why the allocation failed.
        #[source]
        source: std::io::Error,
    },
    /// A [`Value::downcast`](crate::Value::downcast) failed and its
    /// [`DowncastError`](crate::DowncastError) went through `?`: the
    /// [`TypeMismatch`] names the type sent and the type asked for.
    #[error(transparent)]
    Downcast(TypeMismatch),
}

impl From<crate::value::DowncastError> for Error {
    #[cold]
    fn from(error: crate::value::DowncastError) -> Error {
        Error::Downcast(TypeMismatch(Box::new((error.sent(), error.expected()))))
    }
}

/// What [`Error::Downcast`] carries: the [`std::any::type_name`] of the value that was sent,
/// and of the type that was asked for.
///
/// Boxed, so that every `Result<_, Error>` stays as small as before it existed: those are
/// moved on every switch.
#[derive(Clone, PartialEq, Eq)]
pub struct TypeMismatch(Box<(&'static str, &'static str)>);

impl TypeMismatch {
    /// The type of the value that was sent.
    pub fn sent(&self) -> &'static str {
        self.0 .0
    }

    /// The type that was asked for.
    pub fn expected(&self) -> &'static str {
        self.0 .1
    }
}

impl fmt::Debug for TypeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypeMismatch")
            .field("sent", &self.sent())
            .field("expected", &self.expected())
            .finish()
    }
}

impl fmt::Display for TypeMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the value sent is a `{}`, not the `{}` asked for",
            self.sent(),
            self.expected()
        )
    }
}

impl std::error::Error for TypeMismatch {}

impl Error {
    /// An error carrying a message.
    pub fn msg(message: impl Into<String>) -> Error {
        Error::User(message.into().into())
    }

    /// Wraps any error type, to return it from a greenlet or a tracer.
    pub fn user(error: impl std::error::Error + Send + Sync + 'static) -> Error {
        Error::User(Box::new(error))
    }

    /// Whether this is a [`GreenletExit`].
    pub fn is_exit(&self) -> bool {
        matches!(self, Error::Exit(_))
    }

    /// The wrapped user error, if it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        match self {
            Error::User(e) => e.downcast_ref(),
            _ => None,
        }
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Error {
        Error::msg(message)
    }
}

impl From<String> for Error {
    fn from(message: String) -> Error {
        Error::msg(message)
    }
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Error {
        Error::user(error)
    }
}

impl From<Box<dyn std::error::Error + Send + Sync + 'static>> for Error {
    fn from(error: Box<dyn std::error::Error + Send + Sync + 'static>) -> Error {
        Error::User(error)
    }
}

/// The request for a greenlet to finish (Python's `greenlet.GreenletExit`).
///
/// [`Greenlet::kill`](crate::Greenlet::kill) throws one; dropping the last handle to a
/// suspended greenlet throws one with the message
/// `"Killing the greenlet because all references have vanished."`. A `GreenletExit` that
/// escapes `run` is not an error for the parent: it arrives as a [`Value`](crate::Value)
/// holding the `GreenletExit`.
///
/// ```
/// use greenlet::{getcurrent, Error, Greenlet, GreenletExit};
///
/// let main = getcurrent();
/// let g = Greenlet::new(move |_| {
///     main.switch(())?; // the kill arrives here as Err(Error::Exit(..))
///     Ok(())
/// });
/// g.switch(())?;
/// let v = g.kill()?; // the exit escaped `run`: a value, not an error
/// assert_eq!(v.downcast::<GreenletExit>().unwrap(), GreenletExit::new());
/// assert!(g.is_dead());
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GreenletExit {
    message: Option<Cow<'static, str>>,
}

impl GreenletExit {
    /// A `GreenletExit` without a message.
    pub const fn new() -> GreenletExit {
        GreenletExit { message: None }
    }

    /// A `GreenletExit` with a message.
    pub fn with_message(message: impl Into<Cow<'static, str>>) -> GreenletExit {
        GreenletExit {
            message: Some(message.into()),
        }
    }

    /// The message, if any.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Display for GreenletExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => write!(f, "GreenletExit: {m}"),
            None => f.write_str("GreenletExit"),
        }
    }
}

impl std::error::Error for GreenletExit {}
