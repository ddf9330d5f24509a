use std::process::Command;
use std::time::Duration;

use crate::Result;
use crate::proc::Proc;
use crate::util::{cache_dir, curl, free_port, wait_for};

/// moto's S3-compatible server on a loopback port with one bucket. Path-style addressing,
/// region `us-east-1`, any access key (moto does not check signatures). Beware: moto stores an
/// empty body for a PUT sent as `application/x-www-form-urlencoded`; send
/// `application/octet-stream` and compare what you read back.
pub struct S3Server {
    _proc: Proc,
    host: String,
    port: u16,
    bucket: String,
    _dir: tempfile::TempDir,
}

impl S3Server {
    pub const REGION: &'static str = "us-east-1";
    pub const ACCESS_KEY: &'static str = "testing";
    pub const SECRET_KEY: &'static str = "testing";

    pub fn start(bucket: &str) -> Result<S3Server> {
        Self::start_on("127.0.0.1", bucket)
    }

    /// Listening on `host`: the real node's bridge address
    /// ([`crate::node::config::NODE_IP`]) for pods to reach it.
    pub fn start_on(host: &str, bucket: &str) -> Result<S3Server> {
        let moto = cache_dir().join("s3-venv/bin/moto_server");
        if !moto.exists() {
            return Err(format!("{} is missing: run scripts/setup", moto.display()).into());
        }
        let dir = tempfile::Builder::new().prefix("dumpwatch-s3-").tempdir()?;
        let port = free_port();
        let mut cmd = Command::new(moto);
        cmd.args(["-H", host, "-p", &port.to_string()]);
        let mut proc = Proc::spawn("moto_server", cmd, &dir.path().join("moto.log"))?;
        let endpoint = format!("http://{host}:{port}");
        wait_for("moto_server", Duration::from_secs(30), || {
            proc.check_alive()?;
            Ok((curl(&[], &format!("{endpoint}/")).0 == 200).then_some(()))
        })?;
        let (code, body) = curl(&["-X", "PUT"], &format!("{endpoint}/{bucket}"));
        if code != 200 {
            return Err(format!("creating bucket {bucket}: {code} {body}").into());
        }
        Ok(S3Server { _proc: proc, host: host.to_string(), port, bucket: bucket.to_string(), _dir: dir })
    }

    /// `http://<host>:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

/// `s3s-fs` (crates.io, the `s3s` project's file-system S3 server) on a loopback port with one
/// bucket: unlike moto it checks SigV4 signatures, presigned ones included, so what a presigned
/// URL signs (the `Content-Length` of a PUT) is enforced by the server itself. Path-style, region
/// `us-east-1`, credentials [`S3sServer::ACCESS_KEY`]/[`S3sServer::SECRET_KEY`]. The binary is
/// `<cache>/bin/s3s-fs` (`cargo install s3s-fs --features binary --root <cache>`), or
/// `$DUMPWATCH_S3S_FS`.
pub struct S3sServer {
    _proc: Proc,
    port: u16,
    bucket: String,
    _dir: tempfile::TempDir,
}

impl S3sServer {
    pub const REGION: &'static str = "us-east-1";
    pub const ACCESS_KEY: &'static str = "dumpwatch-test";
    pub const SECRET_KEY: &'static str = "dumpwatch-test-secret";

    pub fn start(bucket: &str) -> Result<S3sServer> {
        let bin = std::env::var_os("DUMPWATCH_S3S_FS")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| cache_dir().join("bin/s3s-fs"));
        if !bin.exists() {
            return Err(format!("{} is missing: run scripts/setup (it installs s3s-fs)", bin.display()).into());
        }
        let dir = tempfile::Builder::new().prefix("dumpwatch-s3s-").tempdir()?;
        // A bucket of s3s-fs is a directory of its root.
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join(bucket))?;
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", Self::ACCESS_KEY, "--secret-key", Self::SECRET_KEY])
            .arg(&root);
        let mut proc = Proc::spawn("s3s-fs", cmd, &dir.path().join("s3s-fs.log"))?;
        let endpoint = format!("http://127.0.0.1:{port}");
        // Anonymous requests are refused (403): any HTTP answer means it listens.
        wait_for("s3s-fs", Duration::from_secs(30), || {
            proc.check_alive()?;
            Ok((curl(&[], &format!("{endpoint}/")).0 != 0).then_some(()))
        })?;
        Ok(S3sServer { _proc: proc, port, bucket: bucket.to_string(), _dir: dir })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}
