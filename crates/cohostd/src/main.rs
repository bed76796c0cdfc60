//! The cohostd binary; everything is in the library.

/// mimalloc rather than glibc's malloc: allocation was ~14% of the daemon's CPU on the HTTP path.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cohostd::main()
}
