use std::os::unix::fs::MetadataExt;
use std::time::Instant;
fn main() {
    let dir = std::env::temp_dir().join(format!("zzc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("r");
    let data: Vec<u8> = (0..(1usize << 20)).map(|i| (i * 31 + 7) as u8).collect();
    let mut r =
        overflow_region::OverflowRegion::open_with_config(&path, 64 << 20, 1 << 30).unwrap();
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let mut size = || {
        let (lo, hi) = ((96u64 << 10) as f64, (1u64 << 20) as f64);
        (lo * (hi / lo).powf((rnd() % 10000) as f64 / 10000.0)) as usize
    };
    let mut live = Vec::new();
    let mut live_bytes = 0usize;
    while live_bytes < 64 << 20 {
        let n = size();
        live.push((
            r.write(&data[..n], overflow_region::EngineId::Vector)
                .unwrap(),
            n,
        ));
        live_bytes += n;
    }
    let mut pick = 12345u64;
    let ops = 20000;
    let t = Instant::now();
    for _ in 0..ops {
        pick = pick
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let v = (pick >> 33) as usize % live.len();
        let (slot, n) = live.swap_remove(v);
        r.free(slot).unwrap();
        live_bytes -= n;
        let n = size();
        live.push((
            r.write(&data[..n], overflow_region::EngineId::Vector)
                .unwrap(),
            n,
        ));
        live_bytes += n;
    }
    let secs = t.elapsed().as_secs_f64();
    r.sync().unwrap();
    let blocks = std::fs::metadata(&path).unwrap().blocks() * 512;
    println!(
        "{ops} ops of long churn in {secs:.2} s ({:.1} k/s), used/live {:.3}, st_blocks/live {:.3}",
        ops as f64 / secs / 1e3,
        r.used_bytes() as f64 / live_bytes as f64,
        blocks as f64 / live_bytes as f64
    );
    drop(r);
    std::fs::remove_dir_all(&dir).unwrap();
}
