//! Throughput of the artifact codec (`compress_file`, `verify_and_decompress_file`) on a
//! synthetic heap-like file (runs of repeated words between incompressible stretches), against a
//! baseline measured in the same run: SHA-256 of the same file alone (`sha256_file`), what an
//! uncompressed format checked by its hash would cost. Run with `--release`:
//! `cargo run --release -p store --example codec_throughput -- 256`
use std::time::Instant;

fn main() {
    let mib: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(256);
    let dir = tempfile::tempdir().unwrap();
    let (raw, zst, back) = (dir.path().join("core"), dir.path().join("core.zst"), dir.path().join("back"));
    let mut x = 1u64;
    let mut data = Vec::with_capacity(mib << 20);
    while data.len() < mib << 20 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        if x >> 62 == 0 {
            // An incompressible stretch (a quarter of the chunks).
            data.extend((0..4096).map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (x >> 56) as u8
            }));
        } else {
            data.extend(std::iter::repeat_n((x >> 40).to_le_bytes(), 512).flatten()); // pointer-like runs
        }
    }
    data.truncate(mib << 20);
    std::fs::write(&raw, &data).unwrap();
    let mb = (mib << 20) as f64 / 1e6;
    let t = Instant::now();
    store::sha256_file(&raw).unwrap();
    let hash = mb / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let c = store::compress_file(&raw, &zst, u64::MAX).unwrap();
    let comp = mb / t.elapsed().as_secs_f64();
    let t = Instant::now();
    store::verify_and_decompress_file(&zst, &c.sha256, &back).unwrap();
    let dec = mb / t.elapsed().as_secs_f64();
    println!(
        "{mib} MiB -> {:.1} MiB stored (ratio {:.1}, zstd level {}); SHA-256 alone {hash:.0} MB/s (baseline); \
         compress+hash {comp:.0} MB/s ({:.2}x the baseline); verify+decompress {dec:.0} MB/s ({:.2}x)",
        c.size as f64 / (1 << 20) as f64,
        c.raw_size as f64 / c.size as f64,
        store::codec::LEVEL,
        comp / hash,
        dec / hash,
    );
}
