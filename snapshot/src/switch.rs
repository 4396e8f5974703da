//! Atomic switch between versions of a state directory.
//!
//! Installing a snapshot replaces the whole state machine. sled cannot
//! replace its contents atomically, so the state lives in a versioned
//! directory instead: `root/CURRENT` names the live version directory, a new
//! version is built next to it from the snapshot, synced, and `CURRENT` is
//! replaced atomically (write tmp, fsync, rename, fsync dir). Whatever the
//! crash point, `CURRENT` names either the old complete version or the new
//! complete one; [`StateSwitch::recover`] removes the other directories.

use std::fs;
use std::path::{Path, PathBuf};

use tracing::info;

use crate::error::{Error, Result};
use crate::fsutil::{read_bounded, sync_dir, write_atomically};
use crate::stage::{maybe_crash, CrashPoint};

/// Name of the pointer file.
pub const CURRENT_FILE: &str = "CURRENT";
const POINTER_MAGIC: [u8; 4] = *b"TNSP";
/// Longest version name.
pub const VERSION_NAME_BYTES_MAX: usize = 128;

/// A directory of state versions with an atomic `CURRENT` pointer.
///
/// ```
/// use tandem_snapshot::StateSwitch;
///
/// let tmp = tempfile::tempdir().unwrap();
/// let sw = StateSwitch::open(&tmp.path().join("sm")).unwrap();
/// assert_eq!(sw.recover().unwrap(), None); // fresh: no version yet
///
/// let v1 = sw.create_version("v-00000000000000000010").unwrap();
/// std::fs::write(v1.join("data"), b"state at 10").unwrap(); // e.g. a sled db
/// sw.switch_to("v-00000000000000000010").unwrap();
/// assert_eq!(sw.current().unwrap().unwrap(), v1);
/// ```
#[derive(Debug)]
pub struct StateSwitch {
    root: PathBuf,
    crash_at: Option<CrashPoint>,
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= VERSION_NAME_BYTES_MAX
        && name != CURRENT_FILE
        && !name.ends_with(".tmp")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "bad state version name {name:?}"
        )))
    }
}

fn encode_pointer(name: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + name.len());
    out.extend_from_slice(&POINTER_MAGIC);
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn decode_pointer(bytes: &[u8]) -> Result<String> {
    let bad = |what: &str| Error::corrupt(format!("CURRENT: {what}"));
    if bytes.len() < 12 {
        return Err(bad("too short"));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err(bad("crc mismatch"));
    }
    if body[..4] != POINTER_MAGIC {
        return Err(bad("bad magic"));
    }
    let len = u32::from_le_bytes([body[4], body[5], body[6], body[7]]) as usize;
    if len != body.len() - 8 {
        return Err(bad("length mismatch"));
    }
    let name = std::str::from_utf8(&body[8..]).map_err(|_| bad("name not utf-8"))?;
    check_name(name)?;
    Ok(name.to_owned())
}

impl StateSwitch {
    /// Opens (creating if needed) the versioned root directory.
    ///
    /// # Errors
    /// [`Error::Io`].
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).map_err(Error::io(root))?;
        Ok(StateSwitch {
            root: root.to_path_buf(),
            crash_at: None,
        })
    }

    /// Fault injection for tests: stop at `at` as if crashed.
    pub fn set_crash_point(&mut self, at: Option<CrashPoint>) {
        self.crash_at = at;
    }

    /// The live version directory, if any.
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Corruption`] for a damaged `CURRENT` (it is
    /// only ever replaced by rename, so damage means the disk lied).
    pub fn current(&self) -> Result<Option<PathBuf>> {
        let path = self.root.join(CURRENT_FILE);
        if !path.exists() {
            return Ok(None);
        }
        let name = decode_pointer(&read_bounded(&path, 64 + VERSION_NAME_BYTES_MAX)?)?;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(Error::corrupt(format!(
                "CURRENT names missing {}",
                dir.display()
            )));
        }
        Ok(Some(dir))
    }

    /// Startup cleanup: removes `CURRENT.tmp` and every directory except the
    /// live one. Returns the live one.
    ///
    /// # Errors
    /// As [`StateSwitch::current`].
    pub fn recover(&self) -> Result<Option<PathBuf>> {
        let current = self.current()?;
        self.remove_all_but(current.as_deref())?;
        Ok(current)
    }

    fn remove_all_but(&self, keep: Option<&Path>) -> Result<()> {
        let mut changed = false;
        for e in fs::read_dir(&self.root).map_err(Error::io(&self.root))? {
            let e = e.map_err(Error::io(&self.root))?;
            let p = e.path();
            if e.file_name() == CURRENT_FILE || Some(p.as_path()) == keep {
                continue;
            }
            if p.is_dir() {
                info!(dir = %p.display(), "removing an unused state version");
                fs::remove_dir_all(&p).map_err(Error::io(&p))?;
            } else {
                fs::remove_file(&p).map_err(Error::io(&p))?;
            }
            changed = true;
        }
        if changed {
            sync_dir(&self.root)?;
        }
        Ok(())
    }

    /// Creates an empty directory for a new version (replacing a leftover
    /// of that name that is not live) and returns its path. Fill it, sync
    /// its contents (e.g. `sled::Db::flush`), then [`StateSwitch::switch_to`].
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] for a bad name or the live version's name,
    /// [`Error::Io`].
    pub fn create_version(&self, name: &str) -> Result<PathBuf> {
        check_name(name)?;
        let dir = self.root.join(name);
        if self.current()?.as_deref() == Some(dir.as_path()) {
            return Err(Error::InvalidConfig(format!("{name} is the live version")));
        }
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        fs::create_dir(&dir).map_err(Error::io(&dir))?;
        sync_dir(&self.root)?;
        Ok(dir)
    }

    /// Makes `name` the live version atomically, then removes the others.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if `name` is bad or missing, [`Error::Io`].
    /// If the error comes from the final cleanup the switch has happened.
    pub fn switch_to(&self, name: &str) -> Result<()> {
        check_name(name)?;
        let dir = self.root.join(name);
        if !dir.is_dir() {
            return Err(Error::InvalidConfig(format!("no version directory {name}")));
        }
        sync_dir(&dir)?;
        maybe_crash(self.crash_at, CrashPoint::BeforeSwitch)?;
        if self.crash_at == Some(CrashPoint::AfterSwitchTmp) {
            // Reproduce the on-disk state of a crash between the tmp write
            // and the rename.
            crate::fsutil::write_synced(
                &self.root,
                &format!("{CURRENT_FILE}.tmp"),
                &encode_pointer(name),
            )?;
            maybe_crash(self.crash_at, CrashPoint::AfterSwitchTmp)?;
        }
        write_atomically(&self.root, CURRENT_FILE, &encode_pointer(name))?;
        info!(version = name, "state version switched");
        maybe_crash(self.crash_at, CrashPoint::AfterSwitch)?;
        self.remove_all_but(Some(&dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_round_trips_and_rejects_damage() {
        let b = encode_pointer("v-1");
        assert_eq!(decode_pointer(&b).unwrap(), "v-1");
        for i in 0..b.len() * 8 {
            let mut c = b.clone();
            c[i / 8] ^= 1 << (i % 8);
            assert!(decode_pointer(&c).is_err(), "bit {i}");
        }
        for len in 0..b.len() {
            assert!(decode_pointer(&b[..len]).is_err());
        }
    }

    #[test]
    fn names_are_checked() {
        for bad in [
            "",
            "CURRENT",
            "a/b",
            "..",
            ".hidden",
            "x.tmp",
            &"a".repeat(200),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
        check_name("v-0001_a.b").unwrap();
    }
}
