//! contractd's binary: the command line. It parses arguments, calls the library, prints the
//! results and turns failures into exit codes; nothing in the library knows it exists.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
