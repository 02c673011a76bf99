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
    if let Some(token) = read_stored(&path)? {
        return Ok(Resolved::Stored(token));
    }
    create_private_dir(data_dir)?;
    let token = format!("adm_{}", base32(&random_bytes::<32>()));
    // Written whole to a private temporary file, then linked into place: the token file
    // appears complete or not at all (a crash cannot leave an empty token behind), and
    // `hard_link` fails if another process linked its token first.
    let temporary = data_dir.join(format!(".{FILE_NAME}.{}", base32(&random_bytes::<8>())));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&temporary).and_then(|mut file| {
        file.write_all(token.as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&temporary, &path));
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {
            sync_dir(data_dir)?;
            Ok(Resolved::Generated(AdminToken(token), path))
        }
        // Another process created it between our read and our link: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_stored(&path)?
            .map(Resolved::Stored)
            .ok_or_else(|| std::io::Error::other(format!("{} vanished", path.display()))),
        Err(e) => Err(e),
    }
}

/// The token kept in the data dir, if there is one. A file that exists but holds no
/// usable token is an error (the operator decides), never an empty token.
fn read_stored(path: &Path) -> std::io::Result<Option<AdminToken>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let token = text.trim();
    if token.len() < crate::config::MIN_ADMIN_TOKEN_LEN {
        return Err(std::io::Error::other(format!(
            "{} holds no valid admin token; delete it to generate a new one, or set admin.token",
            path.display()
        )));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)?.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "the admin token file is readable by other users; chmod 600 it"
            );
        }
    }
    Ok(Some(AdminToken(token.to_owned())))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
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
