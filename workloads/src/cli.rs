//! Command-line parsing for the examples: `--help` and `--version` print and exit 0; a bad
//! option prints one line on stderr (`NAME: what is wrong`, no usage block) and exits 2.

use clap::Parser;

/// Parses this process's arguments into `T`, or exits as described above.
pub fn parse_or_exit<T: Parser>(name: &str) -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            std::process::exit(0)
        }
        Err(e) => {
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            eprintln!("{name}: {}", first.trim_start_matches("error: "));
            std::process::exit(2)
        }
    }
}
