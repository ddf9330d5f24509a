//! cert-manager v1.21.2 against a [`ControlPlane`]: its CRDs (fetched by `scripts/setup` from the
//! cert-manager Go module) and its controllers and CA injector as two local processes
//! (`e2e/certmanager`, built by `scripts/setup`), out of cluster with the admin kubeconfig.
//! cert-manager's own webhook is not run: it only validates and defaults cert-manager's objects,
//! which the controllers do not need.

use std::path::PathBuf;
use std::process::Command;

use crate::proc::Proc;
use crate::util::{cache_dir, e2e_bin};
use crate::{ControlPlane, Result};

/// The cert-manager version of the binary and the CRDs.
pub const CERT_MANAGER_VERSION: &str = "v1.21.2";

/// cert-manager's controller and CA injector; both stop on drop (drop it before the control plane).
pub struct CertManager {
    controller: Proc,
    cainjector: Proc,
}

impl CertManager {
    /// The CRD files of cert-manager that `scripts/setup` fetched, sorted.
    pub fn crds() -> Result<Vec<PathBuf>> {
        let dir = cache_dir().join("crds").join(format!("cert-manager-{CERT_MANAGER_VERSION}"));
        if !dir.join(".complete").exists() {
            return Err(format!("{} is missing: run scripts/setup", dir.display()).into());
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        Ok(files)
    }

    /// Applies the CRDs (server-side: the issuer CRDs exceed the client-side annotation limit),
    /// waits until they are served, and starts the controller and the CA injector.
    pub fn start(cp: &ControlPlane) -> Result<CertManager> {
        let mut names = Vec::new();
        for f in Self::crds()? {
            cp.kubectl(&["apply", "--server-side", "-f", &f.display().to_string()])?;
            // `<group>_<plural>.yaml` holds the CRD `<plural>.<group>`.
            let stem = f.file_stem().unwrap_or_default().to_string_lossy().into_owned();
            let (group, plural) =
                stem.split_once('_').ok_or_else(|| format!("{}: not <group>_<plural>", f.display()))?;
            names.push(format!("crd/{plural}.{group}"));
        }
        let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
        wait.extend(names.iter().map(String::as_str));
        cp.kubectl(&wait)?;
        let bin = e2e_bin("certmanager")?;
        let spawn = |mode: &str| -> Result<Proc> {
            let mut cmd = Command::new(&bin);
            cmd.arg(mode).arg("--kubeconfig").arg(cp.kubeconfig());
            let log = cp.dir().join(format!("cert-manager-{mode}.log"));
            Ok(Proc::spawn(&format!("cert-manager {mode}"), cmd, &log)?)
        };
        Ok(CertManager { controller: spawn("controller")?, cainjector: spawn("cainjector")? })
    }

    /// Fails with the log tail of a process that has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.controller.check_alive()?;
        self.cainjector.check_alive()?;
        Ok(())
    }

    /// The last `n` bytes of both logs, for error messages.
    pub fn logs(&self, n: usize) -> String {
        format!(
            "--- cert-manager controller:\n{}\n--- cert-manager cainjector:\n{}",
            self.controller.log_tail(n),
            self.cainjector.log_tail(n)
        )
    }
}
