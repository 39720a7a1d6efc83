//! Standard output for a command-line tool: when its reader goes away (`churnwatch query watch |
//! head`), the command ends quietly instead of panicking the way `println!` does.

use std::fmt;
use std::io::{self, Write};

/// Prints to standard output; see [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*), false)
    };
}

/// Prints a line to standard output, like `println!`, but ends the process quietly (exit code
/// 0) when the reader has closed the pipe.
macro_rules! outln {
    () => {
        $crate::stdout::write(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*), true)
    };
}

pub(crate) use {out, outln};

/// Writes `args` (and a newline) to standard output and flushes it; see [`outln!`].
pub(crate) fn write(args: fmt::Arguments<'_>, newline: bool) {
    // One write of the whole line, so a reader tailing the output never sees half of one
    // (a line and its newline written apart reach the file in two writes).
    let mut text = args.to_string();
    if newline {
        text.push('\n');
    }
    let mut stdout = io::stdout().lock();
    let written = stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush());
    if let Err(e) = written {
        end_unless_broken_pipe(&e);
    }
}

/// Ends the process quietly when `e` is a closed pipe; otherwise reports it and exits 1 (what
/// `println!` would have panicked on: standard output cannot be written).
fn end_unless_broken_pipe(e: &io::Error) -> ! {
    if e.kind() == io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("Error: cannot write to standard output: {e}");
    std::process::exit(1);
}

/// Returns whether an error comes from writing to a reader that went away.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
