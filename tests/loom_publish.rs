//! loom model of commit-order publication (`src/publish.rs`): committers finish their durable waits in any order
//! and publish cumulative versions; readers must never see the published sequence go backwards, and the newest
//! version must end up published.
//!
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test --release --no-default-features --test loom_publish` (without the `cli` feature: the `cstore` binary is not built under loom)
#![cfg(loom)]

use std::sync::Arc;

use collection_store::publish::{Publisher, Versioned};

struct Version(u64);

impl Versioned for Version {
    fn seq(&self) -> u64 {
        self.0
    }
}

/// Two committers (sequence 1 and 2) publish in either order while a reader looks twice; each publication records
/// the sequence it saw published, as change delivery does.
fn model(publish: fn(&Publisher<Version, Vec<u64>>, u64)) {
    loom::model(move || {
        let publisher = Arc::new(Publisher::new(Arc::new(Version(0)), Vec::new()));
        let committers: Vec<_> = [1u64, 2]
            .into_iter()
            .map(|seq| {
                let publisher = Arc::clone(&publisher);
                loom::thread::spawn(move || publish(&publisher, seq))
            })
            .collect();
        let reader = {
            let publisher = Arc::clone(&publisher);
            loom::thread::spawn(move || {
                let first = publisher.load().seq();
                let second = publisher.load().seq();
                assert!(
                    second >= first,
                    "a reader saw the published sequence go from {first} back to {second}"
                );
            })
        };
        for handle in committers {
            handle.join().unwrap();
        }
        reader.join().unwrap();
        assert_eq!(
            publisher.seq(),
            2,
            "the newest version must end up published"
        );
        publisher.with_state(|delivered| {
            assert!(
                delivered.windows(2).all(|w| w[0] <= w[1]),
                "deliveries out of order: {delivered:?}"
            );
        });
    });
}

#[test]
fn published_sequence_never_goes_back_and_ends_at_the_newest() {
    model(|publisher, seq| {
        publisher.publish(Arc::new(Version(seq)), |delivered, published| {
            delivered.push(published)
        })
    });
}

/// The model catches the bug the "newer only" check prevents: publishing unconditionally lets a slow committer
/// overwrite a newer version.
#[test]
#[should_panic(expected = "the newest version must end up published")]
fn model_catches_unconditional_publication() {
    model(|publisher, seq| {
        publisher.replace_for_test(Arc::new(Version(seq)));
    });
}
