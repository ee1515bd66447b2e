//! A file left with an end mark before its stored chain end, made by hand,
//! reopened on the same boot. The writer no longer leaves one when killed
//! (the chain end is stored after a write's live tag and before a
//! retraction's end mark: `a_kill_at_any_store_of_a_write_or_retraction_at_the_end_finds_no_extent_in_a_payload`
//! in src/region/fault_tests.rs), but a writer of this format that stored
//! them the other way round, or a power loss that kept one page of the two,
//! does; the walk then scans for intact headers past the mark.

use overflow_region::{DropReason, EngineId, OverflowRegion};

mod common;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// Where the data area starts, and where the header keeps the chain end.
const DATA_START: u64 = 4096;
const CHAIN_END_OFFSET: usize = 80;

fn open(path: &std::path::Path) -> OverflowRegion {
    OverflowRegion::open_with_config(path, 64 * KIB, MIB).unwrap()
}

/// The end mark of a retraction stored, its chain end not: the free that
/// retracted the tail returned, and nothing past the end mark comes back.
/// It did: a slot an earlier open had dropped (its payload torn by a power
/// loss) kept its live header inside free space, the walk scanned there
/// for one, and the torn slot read again with its torn bytes (found in
/// review). Recovery now stores a free tag over every live extent it drops
/// inside a run of free space.
#[test]
fn an_end_mark_before_the_chain_end_brings_back_no_dropped_slot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    // Extents of 144 bytes: A at 4096, B at 4240, C at 4384 (ends at 4528).
    let (b_offset, c_end) = (4240u64, 4528u64);
    {
        let mut region = open(&path);
        for (i, byte) in [0xAA, 0xBB, 0xCC].into_iter().enumerate() {
            assert_eq!(region.write(&[byte; 100], EngineId::Vector).unwrap(), i);
        }
        region.free(0).unwrap();
        region.sync().unwrap();
        assert_eq!(DATA_START + region.used_bytes() as u64, c_end);
    }
    // A power loss tore B's payload; after the reboot B is dropped.
    let mut image = std::fs::read(&path).unwrap();
    image[(b_offset + 32 + 50) as usize] ^= 0xFF;
    common::write_as_from_another_boot(&path, &image);
    {
        let mut region = open(&path);
        let dropped = &region.recovery().dropped;
        assert_eq!(dropped.len(), 1, "{dropped:?}");
        assert!(matches!(
            dropped[0].reason,
            DropReason::PayloadChecksum { .. }
        ));
        // Frees the last slot: the tail from A on is given back.
        region.free(2).unwrap();
    }
    // The chain end as it was before that retraction.
    let mut image = std::fs::read(&path).unwrap();
    image[CHAIN_END_OFFSET..CHAIN_END_OFFSET + 8].copy_from_slice(&c_end.to_le_bytes());
    std::fs::write(&path, &image).unwrap();

    let region = open(&path);
    assert!(
        region.read(1).is_err(),
        "slot 1, dropped as torn, is back: {:?}",
        region.recovery()
    );
    assert_eq!(region.live_slot_count(), 0);
    region.check_consistency().unwrap();
}
