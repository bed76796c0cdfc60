//! The cohostd binary; everything is in the library.

fn main() -> std::process::ExitCode {
    cohostd::main()
}
