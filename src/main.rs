//! contractd's binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    contractd::cli::main()
}
