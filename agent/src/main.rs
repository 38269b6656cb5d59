//! The `pom` binary: parse the command line, hand over to the library, exit with its code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    pom::cli::main(pom::cli::Cli::parse())
}
