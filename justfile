# Extra recipes. The two commands that matter need no just: `cargo run --release` and `cargo test --workspace`.

default:
    @just --list

# Every test, as CI runs it.
test:
    cargo test --workspace

# What CI runs on a clean clone: fmt, clippy, the docs with warnings denied, tests.
ci:
    bash .ci/run

# Format and lint.
lint:
    cargo fmt --all
    cargo clippy --workspace --all-targets -- -D warnings

# Every benchmark; each prints medians and, where it has one, its baseline.
bench:
    cargo bench -p cohost-benches

# decide+apply throughput of the pure core over 10k rooms.
bench-core:
    cargo bench -p cohost-benches --bench core

# The core's property test with many more cases (PROPTEST_CASES overrides the test's own count).
proptest cases="20000":
    PROPTEST_CASES={{cases}} cargo test --release -p cohost-core --test state-machine
    PROPTEST_CASES={{cases}} cargo test --release -p cohost-proto --test codec-props

# Rewrite proto/vectors from the values in proto/tests/golden.rs. Only for a deliberate contract change.
bless-vectors:
    COHOST_BLESS=1 cargo test -p cohost-proto --test golden

# The SIGKILL crash test with many more kill/restart rounds (COHOST_CRASH_SEED=<n> replays a schedule).
crash rounds="200":
    COHOST_CRASH_ROUNDS={{rounds}} cargo test --release -p cohost-tests --test crash-kill9 -- --nocapture

# The README's curl walkthrough against a fresh cohostd (release build, temp data dir, free port), step by step.
demo:
    bash scripts/demo.sh

# A cluster on this machine: 3 JetStream servers (R3) and 3 cohostd nodes on 127.0.0.1:7481..7483 (README,
# "Running a cluster"). Ctrl-C stops them all.
cluster:
    bash scripts/cluster.sh

# The deterministic simulator over many seeds (release build; COHOST_SIM_SEED=<n> cargo test -p cohost-sim
# replays one). `just sim 1000000` is a long campaign.
sim seeds="1000000" steps="200":
    cargo run --release -p cohost-sim -- {{seeds}} --steps {{steps}}
