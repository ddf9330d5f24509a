//! Test PKI made with the openssl CLI: a CA, the apiserver's serving certificate (IP SAN
//! 127.0.0.1), client certificates, and the service-account signing key.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;
use crate::util::run;

pub(crate) struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Result<Pki> {
        std::fs::create_dir_all(dir)?;
        let pki = Pki { dir: dir.to_path_buf() };
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=dumpwatch-test-ca", "-addext", "basicConstraints=critical,CA:TRUE"])
            .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"])
            .arg("-keyout")
            .arg(pki.path("ca.key"))
            .arg("-out")
            .arg(pki.path("ca.crt")))?;
        // The service-account token signing key (the apiserver reads the public half from it too).
        // ECDSA P-256 (ES256 tokens): much faster to generate than RSA.
        run(Command::new("openssl")
            .args(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"])
            .arg(pki.path("sa.key")))?;
        run(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(pki.path("sa.key"))
            .arg("-out")
            .arg(pki.path("sa.pub")))?;
        Ok(pki)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Issues `<name>.crt`/`<name>.key` signed by the CA.
    pub fn issue(&self, name: &str, subject: &str, san: Option<&str>, server: bool) -> Result<()> {
        let key = self.path(&format!("{name}.key"));
        let csr = self.path(&format!("{name}.csr"));
        let ext = self.path(&format!("{name}.ext"));
        run(Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", subject])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr))?;
        let mut extensions =
            String::from("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n");
        extensions.push_str(if server { "extendedKeyUsage=serverAuth\n" } else { "extendedKeyUsage=clientAuth\n" });
        if let Some(san) = san {
            extensions.push_str(&format!("subjectAltName={san}\n"));
        }
        std::fs::write(&ext, extensions)?;
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(self.path("ca.crt"))
            .arg("-CAkey")
            .arg(self.path("ca.key"))
            .arg("-extfile")
            .arg(&ext)
            .arg("-out")
            .arg(self.path(&format!("{name}.crt"))))?;
        Ok(())
    }
}
