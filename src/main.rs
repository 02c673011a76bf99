//! `sesame`: a thin shell over the library (see `sesame::cli`).

fn main() -> std::process::ExitCode {
    sesame::cli::main()
}
