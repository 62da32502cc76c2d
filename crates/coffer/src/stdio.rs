//! Where the binary's printing goes. `print!`, `println!`, `eprint!` and `eprintln!` are
//! shadowed for the whole crate (main.rs declares this module first, with `#[macro_use]`), so
//! every path that prints, today's and tomorrow's, gets the same rule without remembering it:
//!
//! - stdout closed by its reader (`coffer secrets list | head -1`): the process ends at once with
//!   status 0 and prints nothing more. The reader chose to stop reading; that is not an error,
//!   and std's own macros would panic with a backtrace instead.
//! - stdout failing otherwise (a full disk behind a redirect): one line on stderr, status 1.
//! - stderr failing: ignored, as there is nobody left to tell.
//!
//! What it does not do: catch writes made through `std::io::stdout()` directly; those go through
//! [`stdout_bytes`] (completion scripts) or handle their own errors.

use std::io::Write as _;

/// Ends the process the way a reader that closed the pipe expects: quietly, status 0.
fn closed_pipe_exit() -> ! {
    std::process::exit(0)
}

fn handle(result: std::io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => closed_pipe_exit(),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "Error: cannot write to standard output: {e}");
            std::process::exit(1)
        }
    }
}

/// What `print!`/`println!` expand to.
pub(crate) fn stdout_fmt(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    handle(out.write_fmt(args).and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) }));
}

/// Raw bytes to stdout, under the same rule, flushed (nothing is left for exit to lose).
pub(crate) fn stdout_bytes(bytes: &[u8]) {
    let mut out = std::io::stdout().lock();
    handle(out.write_all(bytes).and_then(|()| out.flush()));
}

/// What `eprint!`/`eprintln!` expand to.
pub(crate) fn stderr_fmt(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| if newline { err.write_all(b"\n") } else { Ok(()) });
}

macro_rules! print {
    ($($arg:tt)*) => { $crate::stdio::stdout_fmt(format_args!($($arg)*), false) };
}

macro_rules! println {
    () => { $crate::stdio::stdout_fmt(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::stdio::stdout_fmt(format_args!($($arg)*), true) };
}

macro_rules! eprint {
    ($($arg:tt)*) => { $crate::stdio::stderr_fmt(format_args!($($arg)*), false) };
}

macro_rules! eprintln {
    () => { $crate::stdio::stderr_fmt(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::stdio::stderr_fmt(format_args!($($arg)*), true) };
}
