//! Test PKI for the control plane: one CA (serving + client certificates), the apiserver's serving
//! certificate, client certificates (CN = user, O = group) and the ServiceAccount signing key.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

use super::Error;

/// A certificate and its key as PEM files on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM certificate.
    pub cert: PathBuf,
    /// PEM (PKCS#8) private key.
    pub key: PathBuf,
}

/// The CA that signs every certificate of one control plane.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate file (`certificate-authority` of kubeconfigs, `--client-ca-file`).
    pub cert: PathBuf,
}

fn pki_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |e| Error::Pki(format!("{what}: {e}"))
}

fn write(path: &Path, data: &str) -> Result<(), Error> {
    std::fs::write(path, data).map_err(|e| Error::Io(format!("write {}", path.display()), e))
}

impl Ca {
    /// Generate a CA and write its certificate to `dir/ca.crt`.
    pub fn generate(dir: &Path) -> Result<Ca, Error> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(pki_err("CA params"))?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kres-test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(pki_err("CA key"))?;
        let issuer =
            CertifiedIssuer::self_signed(params, key).map_err(pki_err("CA certificate"))?;
        let cert = dir.join("ca.crt");
        write(&cert, &issuer.pem())?;
        Ok(Ca { issuer, cert })
    }

    /// A serving certificate for `ips` and `dns` names, written as `dir/<name>.crt|.key`.
    pub fn serving(
        &self,
        dir: &Path,
        name: &str,
        ips: &[IpAddr],
        dns: &[&str],
    ) -> Result<CertFiles, Error> {
        let mut params =
            CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(pki_err("serving params"))?;
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(dir, name, params)
    }

    /// A client certificate authenticating as `user` (CN) in `group` (O), written as `dir/<file>.crt|.key`.
    pub fn client(
        &self,
        dir: &Path,
        file: &str,
        user: &str,
        group: Option<&str>,
    ) -> Result<CertFiles, Error> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(pki_err("client params"))?;
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(g) = group {
            params.distinguished_name.push(DnType::OrganizationName, g);
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(dir, file, params)
    }

    fn sign(&self, dir: &Path, name: &str, params: CertificateParams) -> Result<CertFiles, Error> {
        let key = KeyPair::generate().map_err(pki_err("key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(pki_err("sign certificate"))?;
        let files = CertFiles {
            cert: dir.join(format!("{name}.crt")),
            key: dir.join(format!("{name}.key")),
        };
        write(&files.cert, &cert.pem())?;
        write(&files.key, &key.serialize_pem())?;
        Ok(files)
    }
}

/// The ServiceAccount token signing key pair: `dir/sa.key` (private) and `dir/sa.pub` (public).
pub fn service_account_keys(dir: &Path) -> Result<(PathBuf, PathBuf), Error> {
    let key = KeyPair::generate().map_err(pki_err("ServiceAccount key"))?;
    let (private, public) = (dir.join("sa.key"), dir.join("sa.pub"));
    write(&private, &key.serialize_pem())?;
    write(&public, &key.public_key_pem())?;
    Ok((private, public))
}
