//! Behaviour of the log through its public API: append, reopen, iterate, groups, segment roll, truncation,
//! poisoning, bad options and the directory lock.

mod common;

use std::sync::Arc;

use collection_store::Error;
use collection_store::wal::{Durability, MemStorage, RecordKind, RecoveryMode, Wal, WalOptions};

fn small() -> WalOptions {
    common::options(4096)
}

fn payloads(wal: &Wal) -> Vec<(u64, Vec<u8>)> {
    wal.iter_from(wal.start_lsn())
        .unwrap()
        .map(|r| r.map(|r| (r.lsn(), r.payload().to_vec())).unwrap())
        .collect()
}

#[test]
fn appended_records_survive_reopen_across_many_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    {
        let (wal, report) = Wal::open(dir.path(), small()).unwrap();
        assert!(report.created);
        for i in 0..500u32 {
            let payload = vec![(i % 251) as u8; (i as usize * 7) % 300];
            let lsn = wal
                .append(RecordKind::Data, &payload, Durability::Os)
                .unwrap();
            expected.push((lsn, payload));
        }
        assert_eq!(payloads(&wal), expected);
    }
    let (wal, report) = Wal::open(dir.path(), small()).unwrap();
    assert!(!report.created);
    assert_eq!(report.records, 500);
    assert!(report.segments > 10, "{report:?}");
    assert_eq!(payloads(&wal), expected);
    let next = wal
        .append(RecordKind::Commit, b"after", Durability::Sync)
        .unwrap();
    assert!(next >= expected.last().unwrap().0);
}

#[test]
fn every_payload_starts_16_byte_aligned_in_files_and_in_memory() {
    let dir = tempfile::tempdir().unwrap();
    let (on_disk, _) = Wal::open(dir.path(), small()).unwrap();
    let in_memory = Wal::open_in_memory(small()).unwrap();
    for wal in [&on_disk, &in_memory] {
        for i in 0..300usize {
            // Every payload length mod 16, alone and in groups, across segment rolls.
            let payload = vec![i as u8; i % 37];
            if i % 3 == 0 {
                wal.append_group(
                    &[(RecordKind::Data, &payload), (RecordKind::Commit, b"c")],
                    Durability::None,
                )
                .unwrap();
            } else {
                wal.append(RecordKind::Data, &payload, Durability::None)
                    .unwrap();
            }
        }
        let mut seen = 0;
        for record in wal.iter_from(wal.start_lsn()).unwrap() {
            let record = record.unwrap();
            assert_eq!(record.lsn() % 16, 0, "{record:?}");
            assert_eq!(record.payload().as_ptr().addr() % 16, 0, "{record:?}");
            let segment = record.written_segment();
            let at = record.payload_position();
            assert_eq!(
                &segment.bytes()[at..at + record.payload().len()],
                record.payload()
            );
            seen += 1;
        }
        assert_eq!(seen, 400);
    }
}

#[test]
fn readers_keep_their_bytes_when_segments_are_truncated() {
    for in_memory in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let wal = if in_memory {
            Wal::open_in_memory(small()).unwrap()
        } else {
            Wal::open(dir.path(), small()).unwrap().0
        };
        for i in 0..100u32 {
            wal.append(
                RecordKind::Data,
                &i.to_le_bytes().repeat(30),
                Durability::Os,
            )
            .unwrap();
        }
        // Records, and handles on their segments' written bytes that outlive them.
        let held: Vec<_> = wal
            .iter_from(0)
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                let segment = (r.written_segment(), r.payload_position());
                (r, segment)
            })
            .collect();
        let end = wal.next_lsn();
        wal.sync().unwrap();
        wal.truncate_before(end).unwrap();
        for _ in 0..200u32 {
            wal.append(RecordKind::Data, &[0xEE; 200], Durability::Os)
                .unwrap();
        }
        for (i, (record, _)) in held.iter().enumerate() {
            let expected = (i as u32).to_le_bytes().repeat(30);
            assert_eq!(
                record.payload(),
                &expected[..],
                "record {i}, in memory: {in_memory}"
            );
        }
        // The handles alone (records dropped) keep the bytes through more appends, rolls and truncation.
        let segments: Vec<_> = held.into_iter().map(|(_, segment)| segment).collect();
        let end = wal.next_lsn();
        wal.sync().unwrap();
        wal.truncate_before(end).unwrap();
        for _ in 0..200u32 {
            wal.append(RecordKind::Data, &[0xDD; 200], Durability::Os)
                .unwrap();
        }
        for (i, (segment, at)) in segments.iter().enumerate() {
            let expected = (i as u32).to_le_bytes().repeat(30);
            assert_eq!(
                &segment.bytes()[*at..at + expected.len()],
                &expected[..],
                "segment of record {i}, in memory: {in_memory}"
            );
        }
    }
}

#[test]
fn groups_are_returned_with_their_continuation_flags() {
    let wal = Wal::open_in_memory(small()).unwrap();
    let g = wal
        .append_group(
            &[
                (RecordKind::Data, b"a"),
                (RecordKind::Data, b"bb"),
                (RecordKind::Commit, b""),
            ],
            Durability::None,
        )
        .unwrap();
    let records: Vec<_> = wal
        .iter_from(g.first_lsn)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let shape: Vec<_> = records
        .iter()
        .map(|r| (r.kind(), r.group_continues(), r.payload().len()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (RecordKind::Data, true, 1),
            (RecordKind::Data, true, 2),
            (RecordKind::Commit, false, 0)
        ]
    );
    assert_eq!(records.last().unwrap().end_lsn(), g.end_lsn);
}

#[test]
fn oversized_and_empty_groups_are_refused_without_poisoning() {
    let wal = Wal::open_in_memory(small()).unwrap();
    let big = vec![0u8; 4096];
    assert!(matches!(
        wal.append(RecordKind::Data, &big, Durability::None),
        Err(Error::RecordTooLarge { .. })
    ));
    assert!(matches!(
        wal.append_group(&[], Durability::None),
        Err(Error::InvalidOptions(_))
    ));
    assert!(matches!(
        wal.append(RecordKind::Pad, b"", Durability::None),
        Err(Error::InvalidOptions(_))
    ));
    let max = wal.max_group_bytes() as usize - 32;
    wal.append(RecordKind::Data, &vec![1u8; max], Durability::Os)
        .unwrap();
    assert!(!wal.is_poisoned());
}

#[test]
fn bad_options_are_typed_errors() {
    for opts in [
        WalOptions {
            segment_size_bytes: 5000,
            ..small()
        },
        WalOptions {
            segment_size_bytes: 1 << 31,
            ..small()
        },
        WalOptions {
            staging_buffer_bytes: 100,
            ..small()
        },
    ] {
        assert!(matches!(
            Wal::open_in_memory(opts),
            Err(Error::InvalidOptions(_))
        ));
    }
}

#[test]
fn second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_wal, _) = Wal::open(dir.path(), small()).unwrap();
    let err = Wal::open(dir.path(), small()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
}

#[test]
fn truncate_before_removes_whole_segments_and_recycles_them() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small()).unwrap();
    let mut lsns = Vec::new();
    for i in 0..300u32 {
        lsns.push(
            wal.append(
                RecordKind::Data,
                &i.to_le_bytes().repeat(20),
                Durability::Sync,
            )
            .unwrap(),
        );
    }
    let cut = lsns[200];
    let start = wal.truncate_before(cut).unwrap();
    assert!(start <= cut && start > 0 && start % 4096 == 0);
    let remaining = payloads(&wal);
    assert!(remaining.first().unwrap().0 >= start);
    assert_eq!(remaining.last().unwrap().0, lsns[299]);
    assert!(matches!(wal.iter_from(0), Err(Error::InvalidLsn { .. })));
    for i in 0..200u32 {
        wal.append(
            RecordKind::Data,
            &i.to_le_bytes().repeat(20),
            Durability::Os,
        )
        .unwrap();
    }
    assert!(wal.stats().segments_recycled > 0, "{:?}", wal.stats());
    let total = payloads(&wal).len();
    drop(wal);
    let (wal, report) = Wal::open(dir.path(), small()).unwrap();
    assert_eq!(report.start_lsn, start);
    assert_eq!(payloads(&wal).len(), total);
}

#[test]
fn failed_sync_poisons_and_reopen_recovers_the_synced_prefix() {
    let storage = Arc::new(MemStorage::simulated());
    let (wal, _) = Wal::open_with_storage(storage.clone(), small()).unwrap();
    wal.append(RecordKind::Data, b"kept", Durability::Sync)
        .unwrap();
    storage.fail_syncs_after(Some(0));
    let err = wal
        .append(RecordKind::Data, b"lost", Durability::Sync)
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(wal.is_poisoned());
    assert!(matches!(
        wal.append(RecordKind::Data, b"x", Durability::None),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(wal.sync(), Err(Error::Poisoned { .. })));
    drop(wal);
    let image = Arc::new(storage.crash_image(|_, _| false));
    let (wal, report) = Wal::open_with_storage(image, small()).unwrap();
    assert_eq!(report.records, 1);
    assert_eq!(payloads(&wal)[0].1, b"kept");
}

#[test]
fn failed_write_poisons() {
    let storage = Arc::new(MemStorage::simulated());
    let (wal, _) = Wal::open_with_storage(storage.clone(), small()).unwrap();
    storage.fail_writes_after(Some(0));
    assert!(wal.append(RecordKind::Data, b"x", Durability::Os).is_err());
    assert!(matches!(
        wal.append(RecordKind::Data, b"y", Durability::None),
        Err(Error::Poisoned { .. })
    ));
}

/// Group commit: with several threads waiting on fdatasync, one sync serves several commits.
#[test]
fn sync_commits_are_grouped_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let options = WalOptions {
        segment_size_bytes: 1 << 20,
        ..small()
    };
    let (wal, _) = Wal::open(dir.path(), options).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let wal = &wal;
            s.spawn(move || {
                for _ in 0..100 {
                    wal.append(RecordKind::Data, &[t; 40], Durability::Sync)
                        .unwrap();
                }
            });
        }
    });
    let stats = wal.stats();
    assert_eq!(stats.sync_requests, 400);
    // Without group commit every request would cost its own fdatasync (400); waiting threads share them.
    assert!(stats.syncs < stats.sync_requests, "{stats:?}");
    assert_eq!(payloads(&wal).len(), 400);
}

#[test]
fn salvage_recovers_the_prefix_before_mid_log_damage() {
    let storage = Arc::new(MemStorage::simulated());
    let mut lsns = Vec::new();
    {
        let (wal, _) = Wal::open_with_storage(storage.clone(), small()).unwrap();
        for i in 0..100u32 {
            lsns.push(
                wal.append(
                    RecordKind::Data,
                    &i.to_le_bytes().repeat(25),
                    Durability::Sync,
                )
                .unwrap(),
            );
        }
    }
    // Damage a record in the first segment: later segments still hold valid records, so this is corruption.
    let victim = lsns[3];
    storage.poke(
        collection_store::wal::SegmentName::Live(0),
        victim + 40,
        &[0xFF],
    );
    let err = Wal::open_with_storage(storage.clone(), small()).unwrap_err();
    match err {
        Error::Corruption { offset, .. } => assert_eq!(offset, victim),
        other => panic!("expected corruption, got {other}"),
    }
    let (wal, report) = Wal::open_with_storage(
        storage.clone(),
        WalOptions {
            recovery: RecoveryMode::Salvage,
            ..small()
        },
    )
    .unwrap();
    assert_eq!(report.records, 3);
    assert!(report.salvaged.is_some());
    assert_eq!(payloads(&wal).len(), 3);
    wal.append(RecordKind::Data, b"fresh", Durability::Sync)
        .unwrap();
    drop(wal);
    let (wal, report) = Wal::open_with_storage(storage, small()).unwrap();
    assert_eq!(report.records, 4);
    assert_eq!(payloads(&wal)[3].1, b"fresh");
}

/// Regression: a preparation request queued before `truncate_before` used to re-create a truncated segment.
#[test]
fn truncation_is_not_undone_by_late_segment_preparation() {
    use collection_store::wal::{LogStorage, SegmentName};
    for _ in 0..50 {
        let storage = Arc::new(MemStorage::new());
        let options = WalOptions {
            max_free_segments: 0,
            ..small()
        };
        let (wal, _) = Wal::open_with_storage(storage.clone(), options).unwrap();
        for _ in 0..30 {
            wal.append(RecordKind::Data, &[1u8; 300], Durability::None)
                .unwrap();
        }
        wal.sync().unwrap();
        let start = wal.truncate_before(2 * 4096 + 100).unwrap();
        assert_eq!(start, 8192);
        drop(wal);
        let below: Vec<_> = storage
            .list_segments()
            .unwrap()
            .into_iter()
            .filter(|n| matches!(n, SegmentName::Live(base) if *base < start))
            .collect();
        assert!(
            below.is_empty(),
            "segments below the start after truncation: {below:?}"
        );
    }
}

/// Regression: the in-memory backend's own reference to a segment used to make every segment look "still read",
/// so truncation never recycled on it (and the power-loss simulator never saw recycled segments).
#[test]
fn in_memory_truncation_recycles_unread_segments() {
    let wal = Wal::open_in_memory(small()).unwrap();
    for _ in 0..100 {
        wal.append(RecordKind::Data, &[7u8; 200], Durability::Sync)
            .unwrap();
    }
    wal.truncate_before(wal.durable_lsn()).unwrap();
    for _ in 0..100 {
        wal.append(RecordKind::Data, &[8u8; 200], Durability::Sync)
            .unwrap();
    }
    assert!(wal.stats().segments_recycled > 0, "{:?}", wal.stats());
    assert!(
        payloads(&wal)
            .iter()
            .all(|(_, p)| p == &[8u8; 200] || p == &[7u8; 200])
    );
}

#[test]
fn a_log_of_the_previous_format_version_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    drop(Wal::open(dir.path(), small()).unwrap());
    // Version 1 (records aligned to 8 bytes): same meta with its version field and CRC rewritten.
    let path = dir.path().join("meta");
    let mut meta = std::fs::read(&path).unwrap();
    meta[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32fast::hash(&meta[..60]);
    meta[60..64].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &meta).unwrap();
    match Wal::open(dir.path(), small()) {
        Err(Error::FormatVersion {
            found: 1,
            expected: 2,
            ..
        }) => {}
        other => panic!("expected a format version error, got {other:?}"),
    }
}

#[test]
fn stamped_groups_carry_their_end_lsn_where_asked_and_refuse_stamps_outside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (wal, _) = Wal::open(dir.path(), small()).unwrap();
        wal.append(RecordKind::Data, b"before", Durability::None)
            .unwrap();
        let first = vec![7u8; 24];
        let second = vec![9u8; 16];
        let group = wal
            .append_group_stamped(
                &[(RecordKind::Data, &first), (RecordKind::Commit, &second)],
                Durability::Sync,
                &[(0, 0), (0, 16), (1, 4)],
            )
            .unwrap();
        let end = group.end_lsn.to_le_bytes();
        let mut want_first = first.clone();
        want_first[..8].copy_from_slice(&end);
        want_first[16..].copy_from_slice(&end);
        let mut want_second = second.clone();
        want_second[4..12].copy_from_slice(&end);
        let read = payloads(&wal);
        assert_eq!(read[1], (group.first_lsn, want_first.clone()));
        assert_eq!(read[2].1, want_second);
        for bad in [(0, 17), (2, 0), (1, usize::MAX)] {
            let err = wal
                .append_group_stamped(
                    &[(RecordKind::Data, &first), (RecordKind::Commit, &second)],
                    Durability::None,
                    &[bad],
                )
                .unwrap_err();
            assert!(matches!(err, Error::InvalidOptions(_)), "{bad:?}: {err}");
        }
        drop(wal);
        // The stamps are in the checksummed records: they come back after a reopen.
        let (wal, report) = Wal::open(dir.path(), small()).unwrap();
        assert_eq!(report.records, 3);
        assert_eq!(payloads(&wal)[1].1, want_first);
    }
}

/// `start_writeback` hands the records to the OS (and the device) but promises nothing: a crash before the sync
/// may lose them, the sync that follows keeps them, and a failed write poisons as any flush does.
#[test]
fn start_writeback_writes_early_but_only_the_sync_makes_durable() {
    let storage = Arc::new(MemStorage::simulated());
    let (wal, _) = Wal::open_with_storage(storage.clone(), small()).unwrap();
    let end = wal
        .append_group(&[(RecordKind::Data, b"early")], Durability::None)
        .unwrap()
        .end_lsn;
    let before = wal.stats();
    wal.start_writeback().unwrap();
    assert_eq!(wal.written_lsn(), end, "the records are handed to the OS");
    assert!(wal.durable_lsn() < end, "but not synced");
    assert_eq!(wal.stats().writes, before.writes + 1);
    assert_eq!(wal.stats().syncs, before.syncs);
    let lost = Arc::new(storage.crash_image(|_, _| false));
    let (crashed, report) = Wal::open_with_storage(lost, small()).unwrap();
    assert_eq!(report.records, 0, "a crash before the sync may lose them");
    drop(crashed);

    wal.wait_durable(end, Durability::Sync).unwrap();
    assert_eq!(
        wal.stats().writes,
        before.writes + 1,
        "nothing written twice"
    );
    let kept = Arc::new(storage.crash_image(|_, _| false));
    let (recovered, _) = Wal::open_with_storage(kept, small()).unwrap();
    let kept: Vec<Vec<u8>> = payloads(&recovered).into_iter().map(|(_, p)| p).collect();
    assert_eq!(kept, vec![b"early".to_vec()]);

    storage.fail_writes_after(Some(0));
    wal.append_group(&[(RecordKind::Data, b"x")], Durability::None)
        .unwrap();
    let result = wal.start_writeback();
    assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
    assert!(wal.is_poisoned());
}

/// On files, the early write-back (sync_file_range on Linux) leaves one pwrite and one fdatasync per commit, and
/// what was synced is there after reopening.
#[test]
fn start_writeback_on_files_keeps_one_write_and_one_sync_per_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(dir.path(), small()).unwrap();
    let before = wal.stats();
    for i in 0..20u8 {
        let end = wal
            .append_group(&[(RecordKind::Data, &[i; 100])], Durability::None)
            .unwrap()
            .end_lsn;
        wal.start_writeback().unwrap();
        wal.wait_durable(end, Durability::Sync).unwrap();
    }
    let stats = wal.stats();
    assert_eq!(stats.writes - before.writes, 20);
    assert_eq!(stats.syncs - before.syncs, 20);
    drop(wal);
    let (wal, _) = Wal::open(dir.path(), small()).unwrap();
    let got: Vec<Vec<u8>> = payloads(&wal).into_iter().map(|(_, p)| p).collect();
    let want: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 100]).collect();
    assert_eq!(got, want);
}
