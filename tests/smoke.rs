use overflow_region::{EngineId, OverflowRegion};

#[test]
fn write_read_free_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r");
    let mut region = OverflowRegion::open_with_config(&path, 1 << 16, 1 << 24).unwrap();
    let mut slots = Vec::new();
    for i in 0..2000usize {
        let data = vec![(i % 251) as u8; i % 700];
        slots.push((region.write(&data, EngineId::ALL[i % 7]).unwrap(), data));
    }
    region.check_consistency().unwrap();
    for (slot, data) in &slots {
        assert_eq!(region.read(*slot).unwrap(), &data[..]);
    }
    for (slot, _) in slots.iter().step_by(3) {
        region.free(*slot).unwrap();
    }
    region.check_consistency().unwrap();
    let used = region.used_bytes();
    drop(region);
    let region = OverflowRegion::open_with_config(&path, 1 << 16, 1 << 24).unwrap();
    region.check_consistency().unwrap();
    assert_eq!(region.used_bytes(), used);
    assert_eq!(region.slot_count(), 2000);
    for (i, (slot, data)) in slots.iter().enumerate() {
        if i % 3 == 0 {
            assert!(region.read(*slot).is_err());
        } else {
            assert_eq!(region.read(*slot).unwrap(), &data[..]);
        }
    }
    println!("{:?}", region.recovery());
}
