//! What erasure costs the paths that serve events (SSE, the relay, webhooks): each envelope passes through
//! the engine's erased users before it is encoded. Times, per envelope, the JSON encoding alone (what those
//! paths do anyway), then the rewrite plus the encoding with 10,000 users erased, for envelopes that name none
//! of them and for envelopes whose actor and candidate are erased. Prints medians of rounds and the ratios.
//!
//! `cargo bench -p cohost-benches --bench erasure`.

use std::hint::black_box;
use std::time::Instant;

use cohost_benches::median;
use cohost_engine::ErasedUsers;
use cohost_proto::{
    Envelope, Event, Invitation, InvitationId, InvitationKind, InvitationStatus, RoomId, UserId,
};

const ENVELOPES: usize = 200_000;
const ERASED: usize = 10_000;
const ROUNDS: usize = 7;

fn user(name: &str) -> UserId {
    UserId::new(name).expect("a valid id")
}

/// An `invitation_created` as the mix writes it most: the host's invite to a candidate.
fn envelope(n: usize, host: &str, candidate: &str) -> Envelope {
    let room_id = RoomId::new(&format!("room-{}", n % 10_000)).expect("a valid id");
    let invitation = Invitation {
        invitation_id: InvitationId::new(room_id.clone(), 1 + n as u64 / 10_000)
            .expect("a valid id"),
        room_id: room_id.clone(),
        kind: InvitationKind::Invite,
        host: user(host),
        user_id: user(candidate),
        status: InvitationStatus::Pending,
        created_ms: 1_767_225_600_000,
        updated_ms: 1_767_225_600_000,
        expires_ms: 1_767_225_900_000,
        seat: None,
    };
    Envelope {
        seq: n as u64 + 1,
        room_id,
        version: 3,
        at_ms: 1_767_225_600_000,
        actor: Some(user(host)),
        service: None,
        command_id: None,
        event: Event::InvitationCreated { invitation },
    }
}

/// ns per envelope of `serve` then JSON, median of the rounds.
fn time(envelopes: &[Envelope], serve: impl Fn(Envelope) -> Envelope) -> f64 {
    let mut rounds = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let batch = envelopes.to_vec();
        let started = Instant::now();
        for envelope in batch {
            black_box(serde_json::to_vec(&serve(envelope)).expect("encodes"));
        }
        rounds.push(started.elapsed().as_nanos() as f64 / envelopes.len() as f64);
    }
    median(&mut rounds)
}

fn main() {
    let erased = ErasedUsers::new();
    for n in 0..ERASED {
        erased.insert(
            user(&format!("gone-{n}")),
            user(&format!("erased-{n:024x}")),
        );
    }
    let plain: Vec<Envelope> = (0..ENVELOPES)
        .map(|n| {
            envelope(
                n,
                &format!("host-{}", n % 5_000),
                &format!("user-{}", n % 50_000),
            )
        })
        .collect();
    let named: Vec<Envelope> = (0..ENVELOPES)
        .map(|n| {
            envelope(
                n,
                &format!("gone-{}", n % ERASED),
                &format!("gone-{}", (n + 1) % ERASED),
            )
        })
        .collect();
    let nobody = ErasedUsers::new();
    println!(
        "erasure: JSON encoding of {ENVELOPES} invitation_created envelopes, {ROUNDS} rounds, medians"
    );
    let base = time(&plain, |e| e);
    let empty = time(&plain, |e| nobody.serve(e));
    let others = time(&plain, |e| erased.serve(e));
    let theirs = time(&named, |e| erased.serve(e));
    let rows = [
        ("encoding alone", base),
        ("nobody erased (one atomic load), then encoding", empty),
        ("users erased, the envelope names none of them", others),
        ("users erased, its host and candidate are", theirs),
    ];
    println!("  ({ERASED} users erased where it says so)");
    for (what, ns) in rows {
        println!("  {what:<48} {ns:>5.0} ns/envelope ({:.2}x)", ns / base);
    }
}
