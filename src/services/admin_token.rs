//! The admin API's bearer token: from `admin.token`, or generated once into the data
//! directory (mode 0600) and printed once, on the start that created it.

use std::io::Write;
use std::path::Path;

use subtle::ConstantTimeEq;

use crate::domain::ids::{base32, random_bytes};

#[derive(Clone)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

impl AdminToken {
    pub fn new(token: String) -> AdminToken {
        AdminToken(token)
    }

    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Where a token came from; `Generated` is the only case in which it is printed.
pub enum Resolved {
    Configured(AdminToken),
    Stored(AdminToken),
    Generated(AdminToken, std::path::PathBuf),
}

impl Resolved {
    pub fn token(&self) -> &AdminToken {
        match self {
            Resolved::Configured(t) | Resolved::Stored(t) | Resolved::Generated(t, _) => t,
        }
    }
}

pub const FILE_NAME: &str = "admin_token";

pub fn resolve(configured: &str, data_dir: &Path) -> std::io::Result<Resolved> {
    if !configured.is_empty() {
        return Ok(Resolved::Configured(AdminToken(configured.to_owned())));
    }
    let path = data_dir.join(FILE_NAME);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let token = text.trim().to_owned();
        if !token.is_empty() {
            return Ok(Resolved::Stored(AdminToken(token)));
        }
    }
    create_private_dir(data_dir)?;
    let token = format!("adm_{}", base32(&random_bytes::<32>()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(token.as_bytes())?;
            file.sync_all()?;
            Ok(Resolved::Generated(AdminToken(token), path))
        }
        // Another process created it between our read and our create: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path)?;
            Ok(Resolved::Stored(AdminToken(text.trim().to_owned())))
        }
        Err(e) => Err(e),
    }
}

pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}
