//! Presigned PUTs sign their `Content-Length`, so a server that checks signatures refuses a body
//! of another size by itself: the sidecar cannot store more than the operator planned (and
//! `limits.maxBytes` counted). moto checks no signatures; `s3s-fs` does (`harness::S3sServer`).

use std::time::Duration;

use harness::S3sServer;
use store::{Credentials, HttpClient, S3Config, S3Store};

fn store_for(s3: &S3sServer) -> S3Store {
    let config = S3Config {
        endpoint: s3.endpoint(),
        region: S3sServer::REGION.into(),
        bucket: s3.bucket().into(),
        prefix: "dw".into(),
        path_style: true,
    };
    let creds = Credentials {
        access_key_id: S3sServer::ACCESS_KEY.into(),
        secret_access_key: S3sServer::SECRET_KEY.into(),
        session_token: None,
    };
    S3Store::new(config, creds).unwrap()
}

/// `curl -X PUT` of `body` to `url`: what a pod ignoring the planned size would send.
fn put_raw(url: &str, body: &std::path::Path) -> u16 {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "PUT",
            "-H",
            "Content-Type: application/octet-stream",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .arg(url)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[tokio::test]
async fn oversized_upload_is_refused_by_s3_itself() {
    let s3 = S3sServer::start("dumps").unwrap();
    let store = store_for(&s3);
    let dir = tempfile::tempdir().unwrap();
    let planned = dir.path().join("planned");
    std::fs::write(&planned, vec![1u8; 1000]).unwrap();
    let bigger = dir.path().join("bigger");
    std::fs::write(&bigger, vec![2u8; 1_000_000]).unwrap();

    // The URL for 1000 bytes stores 1000 bytes...
    let key = store.key(&["shop", "cart-1", "c1", "core.1.zst"]);
    let url = store.presign_put(&key, 1000, Duration::from_secs(300));
    HttpClient::new().put_file_range(&url, &planned, 0, 1000).await.expect("the planned size is accepted");
    assert_eq!(store.head(&key).await.unwrap().map(|o| o.size), Some(1000));

    // ... and refuses a million, sent to the same URL or a fresh one, leaving what was there.
    let fresh = store.key(&["shop", "cart-1", "c2", "core.1.zst"]);
    let fresh_url = store.presign_put(&fresh, 1000, Duration::from_secs(300));
    for (url, what) in [(&url, "the used URL"), (&fresh_url, "a fresh URL")] {
        let status = put_raw(url, &bigger);
        assert_eq!(status, 403, "{what}: a body larger than signed must be refused by the server");
    }
    assert_eq!(store.head(&key).await.unwrap().map(|o| o.size), Some(1000), "the stored object is unchanged");
    assert_eq!(store.head(&fresh).await.unwrap(), None, "nothing stored under the fresh key");

    // The check is the signature's: a smaller body is refused too.
    let smaller = dir.path().join("smaller");
    std::fs::write(&smaller, vec![3u8; 10]).unwrap();
    assert_eq!(put_raw(&fresh_url, &smaller), 403);
}
