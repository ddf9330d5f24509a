//! `store` against a real S3-compatible server (moto on loopback): presigned PUT/GET by a client
//! without credentials, multipart with small parts, checksums after download, delete, refusals.
//!
//! moto checks neither signatures nor expiry of presigned URLs (sigv4.rs's unit tests compare
//! signatures with AWS's documented example and with botocore); what it refuses is tested here.

use std::path::Path;
use std::time::Duration;

use harness::S3Server;
use store::{Credentials, Error, HttpClient, S3Config, S3Store, Store};

const MIB: u64 = 1 << 20;

fn store_for(s3: &S3Server, bucket: &str) -> S3Store {
    let config = S3Config {
        endpoint: s3.endpoint(),
        region: S3Server::REGION.into(),
        bucket: bucket.into(),
        prefix: "dumpwatch".into(),
        path_style: true,
    };
    let creds = Credentials {
        access_key_id: S3Server::ACCESS_KEY.into(),
        secret_access_key: S3Server::SECRET_KEY.into(),
        session_token: None,
    };
    S3Store::new(config, creds).unwrap()
}

/// Bytes that zstd cannot shrink much (an LCG), so a file keeps its size when compressed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

fn compress(dir: &Path, name: &str, data: &[u8]) -> (std::path::PathBuf, store::Compressed) {
    let raw = dir.join(name);
    std::fs::write(&raw, data).unwrap();
    let zst = dir.join(format!("{name}.zst"));
    let c = store::compress_file(&raw, &zst, u64::MAX).unwrap();
    (zst, c)
}

#[tokio::test]
async fn presigned_put_then_get_round_trips_a_compressed_artifact() {
    let s3 = S3Server::start("dumps").unwrap();
    let store = store_for(&s3, "dumps");
    let dir = tempfile::tempdir().unwrap();
    let mut data = noise(300_000, 1);
    data.extend(std::iter::repeat_n(7u8, 2_000_000));
    let (zst, c) = compress(dir.path(), "gcdump.nettrace", &data);

    let key = store.key(&["ns", "pod-a", "c1", "gcdump.nettrace.zst"]);
    assert_eq!(key, "dumpwatch/ns/pod-a/c1/gcdump.nettrace.zst");
    let url = store.presign_put(&key, c.size, Duration::from_secs(300));
    // The uploader holds no credentials: only the URL.
    let uploader = HttpClient::new();
    let etag = uploader.put_file_range(&url, &zst, 0, c.size).await.unwrap();
    assert!(!etag.is_empty());

    let head = store.head(&key).await.unwrap().expect("the object exists");
    assert_eq!(head.size, c.size);

    let downloaded = dir.path().join("downloaded.zst");
    let get = store.presign_get(&key, Duration::from_secs(300));
    assert_eq!(uploader.get_to_file(&get, &downloaded).await.unwrap(), c.size);
    let back = dir.path().join("back");
    store::verify_and_decompress_file(&downloaded, &c.sha256, &back).unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), data);

    // Delete through the one interface, by URI, twice (a finalizer may run again).
    let any = Store::S3(Box::new(store));
    let uri = format!("s3://dumps/{key}");
    any.delete(&uri).await.unwrap();
    assert!(any.head(&uri).await.unwrap().is_none());
    any.delete(&uri).await.unwrap();
    // And a download of what is gone is a typed refusal.
    let err = uploader.get_to_file(&get, &dir.path().join("gone")).await.unwrap_err();
    assert_eq!(err.s3_code(), Some("NoSuchKey"), "{err}");
    assert!(!err.is_transient(), "a missing object does not come back by waiting");
    assert!(!dir.path().join("gone").exists());
}

#[tokio::test]
async fn multipart_upload_of_three_parts_is_completed_by_the_credential_holder() {
    let s3 = S3Server::start("dumps").unwrap();
    // moto, like S3, refuses parts under 5 MiB except the last.
    let store = store_for(&s3, "dumps").with_part_size(5 * MIB);
    let dir = tempfile::tempdir().unwrap();
    let data = noise(12 * MIB as usize, 2);
    let (zst, c) = compress(dir.path(), "core.1", &data);
    assert!(c.size > 10 * MIB, "noise does not compress: {c:?}");

    let key = store.key(&["ns", "pod-a", "c2", "core.1.zst"]);
    let up = store.create_multipart(&key, c.size, Duration::from_secs(300)).await.unwrap();
    assert_eq!((up.part_size, up.parts.len()), (5 * MIB, 3));
    let uploader = HttpClient::new();
    let mut etags = Vec::new();
    for (i, url) in up.parts.iter().enumerate() {
        let offset = i as u64 * up.part_size;
        let len = up.part_size.min(c.size - offset);
        etags.push(uploader.put_file_range(url, &zst, offset, len).await.unwrap());
    }
    store.complete_multipart(&key, &up.upload_id, &etags).await.unwrap();
    assert_eq!(store.head(&key).await.unwrap().unwrap().size, c.size);

    let downloaded = dir.path().join("d.zst");
    uploader.get_to_file(&store.presign_get(&key, Duration::from_secs(60)), &downloaded).await.unwrap();
    assert_eq!(store::sha256_file(&downloaded).unwrap(), (c.size, c.sha256.clone()));
    let back = dir.path().join("back");
    store::verify_and_decompress_file(&downloaded, &c.sha256, &back).unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), data);
    // A download that does not match the recorded checksum is refused, and leaves nothing.
    let err = store::verify_and_decompress_file(&downloaded, &"ab".repeat(32), &dir.path().join("bad")).unwrap_err();
    assert!(matches!(err, Error::ChecksumMismatch { .. }));
    assert!(!dir.path().join("bad").exists());
}

#[tokio::test]
async fn refusals_are_typed_errors_with_s3s_code() {
    let s3 = S3Server::start("dumps").unwrap();
    let uploader = HttpClient::new();

    // A bucket that does not exist, for the credential holder and for a presigned URL.
    let wrong = store_for(&s3, "no-such-bucket");
    let err = wrong.create_multipart("k", 10, Duration::from_secs(60)).await.unwrap_err();
    assert_eq!(err.s3_code(), Some("NoSuchBucket"), "{err}");
    assert!(matches!(err, Error::S3 { status: 404, .. }));
    let url = wrong.presign_put("k", 1, Duration::from_secs(60));
    let err = uploader.put_bytes(&url, "x".into(), Duration::from_secs(30)).await.unwrap_err();
    assert_eq!(err.s3_code(), Some("NoSuchBucket"), "{err}");
    assert!(!err.is_transient(), "{err}");
    assert_eq!(wrong.delete("k").await.unwrap_err().s3_code(), Some("NoSuchBucket"));

    // Aborting an upload that was never started.
    let store = store_for(&s3, "dumps").with_part_size(MIB);
    let err = store.abort_multipart("k", "no-such-upload").await.unwrap_err();
    assert_eq!(err.s3_code(), Some("NoSuchUpload"), "{err}");

    // Parts under S3's 5 MiB minimum: the upload is refused at completion, then aborted.
    let up = store.create_multipart("small-parts", 3 * MIB, Duration::from_secs(60)).await.unwrap();
    assert_eq!(up.parts.len(), 3);
    let mut etags = Vec::new();
    for url in &up.parts {
        etags.push(uploader.put_bytes(url, vec![1u8; MIB as usize].into(), Duration::from_secs(60)).await.unwrap());
    }
    let err = store.complete_multipart("small-parts", &up.upload_id, &etags).await.unwrap_err();
    assert_eq!(err.s3_code(), Some("EntityTooSmall"), "{err}");
    store.abort_multipart("small-parts", &up.upload_id).await.unwrap();
    assert!(store.head("small-parts").await.unwrap().is_none());

    // A server that is not there: an HTTP error, not a panic.
    let config = S3Config { endpoint: "http://127.0.0.1:9".into(), ..store.config().clone() };
    let creds = Credentials { access_key_id: "a".into(), secret_access_key: "b".into(), session_token: None };
    let err = S3Store::new(config, creds).unwrap().head("k").await.unwrap_err();
    assert!(matches!(err, Error::Http { .. }), "{err:?}");
    assert!(err.is_transient(), "a server that is away may come back");
}
