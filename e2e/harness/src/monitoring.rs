use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::Result;
use crate::proc::Proc;
use crate::util::{curl, free_port, run, wait_for};

/// Debian's Prometheus on a loopback port, scraping the given targets every second and
/// evaluating the given rules every second. Debian builds it without Kubernetes service
/// discovery: targets found by other means are handed over as a file (`file_sd`, job `pods`,
/// see [`Prometheus::set_pod_targets`]), which Prometheus watches.
pub struct Prometheus {
    proc: Proc,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// `targets` are `host:port` strings scraped at `/metrics` under `job="test"`; `rules` is a
    /// Prometheus rule file (YAML) or empty; `alertmanager` is a `host:port` to send alerts to.
    pub fn start(targets: &[String], rules: &str, alertmanager: Option<&str>) -> Result<Prometheus> {
        let dir = tempfile::Builder::new().prefix("dumpwatch-prom-").tempdir()?;
        let port = free_port();
        let rules_path = dir.path().join("rules.yml");
        std::fs::write(&rules_path, if rules.trim().is_empty() { "groups: []\n" } else { rules })?;
        let config = serde_json::json!({
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [rules_path],
            "alerting": {"alertmanagers": alertmanager.map(|a| vec![serde_json::json!({"static_configs": [{"targets": [a]}]})]).unwrap_or_default()},
            "scrape_configs": [
                {"job_name": "test", "static_configs": [{"targets": targets}]},
                {"job_name": "pods", "file_sd_configs": [{"files": [dir.path().join("pods/*.json")], "refresh_interval": "1s"}]},
            ],
        });
        std::fs::create_dir_all(dir.path().join("pods"))?;
        // JSON is YAML.
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        promtool(&["check", "config", &config_path.display().to_string()])?;
        let mut cmd = Command::new(prometheus_bin());
        cmd.arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--web.enable-lifecycle", "--log.level=warn"]);
        let mut proc = Proc::spawn("prometheus", cmd, &dir.path().join("prometheus.log"))?;
        let url = format!("http://127.0.0.1:{port}/-/ready");
        wait_for("prometheus /-/ready", Duration::from_secs(30), || {
            proc.check_alive()?;
            Ok((curl(&[], &url).0 == 200).then_some(()))
        })?;
        Ok(Prometheus { proc, port, dir })
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The file of job `pods`' targets, for [`write_targets`] (from another thread, say).
    pub fn pod_targets_file(&self) -> PathBuf {
        self.dir.path().join("pods/targets.json")
    }

    /// Replaces job `pods`' targets: `[{"targets": ["host:port"], "labels": {...}}]`.
    pub fn set_pod_targets(&self, groups: &Value) -> Result<()> {
        write_targets(&self.pod_targets_file(), groups)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.log_path()).unwrap_or_default()
    }

    /// An instant query through the HTTP API; returns `data.result`.
    pub fn query(&self, expr: &str) -> Result<Value> {
        let out = run(Command::new("curl")
            .args(["-sf", "-m", "5", "-G"])
            .arg(format!("{}/api/v1/query", self.url()))
            .arg("--data-urlencode")
            .arg(format!("query={expr}")))?;
        let v: Value = serde_json::from_str(&out)?;
        if v["status"] != "success" {
            return Err(format!("query {expr}: {v}").into());
        }
        Ok(v["data"]["result"].clone())
    }

    /// Waits until `expr` returns at least one sample; returns the result vector.
    pub fn wait_for_samples(&self, expr: &str, timeout: Duration) -> Result<Value> {
        wait_for(&format!("samples of `{expr}`"), timeout, || {
            let r = self.query(expr)?;
            Ok(r.as_array().is_some_and(|a| !a.is_empty()).then_some(r))
        })
    }

    /// `GET /api/v1/<path>` (for example `rules` or `alerts`), returning `data`.
    pub fn api(&self, path: &str) -> Result<Value> {
        let (code, body) = curl(&[], &format!("{}/api/v1/{path}", self.url()));
        if code != 200 {
            return Err(format!("GET /api/v1/{path}: {code} {body}").into());
        }
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["data"].clone())
    }
}

/// Debian's Alertmanager on a loopback port, clustering off.
pub struct Alertmanager {
    proc: Proc,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    /// Starts with the given configuration (YAML). A minimal one routes everything to a webhook:
    /// `route: {receiver: hook, group_wait: 1s}` / `receivers: [{name: hook, webhook_configs: [{url: ...}]}]`.
    pub fn start(config: &str) -> Result<Alertmanager> {
        let dir = tempfile::Builder::new().prefix("dumpwatch-am-").tempdir()?;
        let port = free_port();
        let cfg = dir.path().join("alertmanager.yml");
        std::fs::write(&cfg, config)?;
        run(Command::new("amtool").arg("check-config").arg(&cfg))?;
        let mut cmd = Command::new(alertmanager_bin());
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(["--cluster.listen-address=", "--log.level=warn"]);
        let mut proc = Proc::spawn("alertmanager", cmd, &dir.path().join("alertmanager.log"))?;
        let url = format!("http://127.0.0.1:{port}/-/ready");
        wait_for("alertmanager /-/ready", Duration::from_secs(30), || {
            proc.check_alive()?;
            Ok((curl(&[], &url).0 == 200).then_some(()))
        })?;
        Ok(Alertmanager { proc, port, _dir: dir })
    }

    /// `127.0.0.1:<port>`, as Prometheus' alerting config wants it.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The alerts Alertmanager holds (`GET /api/v2/alerts`).
    pub fn alerts(&self) -> Result<Value> {
        let (code, body) = curl(&[], &format!("{}/api/v2/alerts", self.url()));
        if code != 200 {
            return Err(format!("GET /api/v2/alerts: {code} {body}; log: {}", self.proc.log_tail(2000)).into());
        }
        Ok(serde_json::from_str(&body)?)
    }
}

/// Writes a `file_sd` target file whole (write, then rename): Prometheus never reads half of it.
pub fn write_targets(path: &Path, groups: &Value) -> Result<()> {
    let tmp = path.with_extension("json.partial");
    std::fs::write(&tmp, serde_json::to_vec(groups)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Runs Debian's `promtool` (`check rules`, `test rules`, `check config`, `query instant`, ...).
pub fn promtool(args: &[&str]) -> Result<String> {
    run(Command::new("promtool").args(args))
}

fn prometheus_bin() -> PathBuf {
    PathBuf::from("prometheus")
}

fn alertmanager_bin() -> PathBuf {
    // Debian names it prometheus-alertmanager.
    PathBuf::from("prometheus-alertmanager")
}
