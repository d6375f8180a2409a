//! Dropping root: `run` and `watch`, started as root, open their captures
//! and sockets and then become an unprivileged user (`--user`, default
//! `nobody`), keeping only the capabilities they still need: CAP_NET_RAW
//! and CAP_NET_ADMIN to reopen a live interface that went away and came
//! back, none for a replay.
//!
//! Call before any thread is started: capabilities are per thread, and
//! threads started later inherit the dropped set.
//!
//! What is reopened by path after the switch must be reachable by the user:
//! [`hand_over`] gives it the event log (SIGHUP reopens it) and says when
//! the log's directory would not let it make a new file. A looping replay
//! needs nothing: it keeps its files open (`source::replay`).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use caps::{CapSet, Capability};
use nix::unistd::{Uid, User};

/// What a capture keeps after the switch.
pub const LIVE_CAPS: &[Capability] = &[Capability::CAP_NET_RAW, Capability::CAP_NET_ADMIN];

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("--user {0}: no such user")]
    NoSuchUser(String),
    #[error("--user {user}: {step}: {source}")]
    Failed {
        user: String,
        step: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// What happened.
#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    /// Not running as root: nothing to drop.
    NotRoot,
    /// `--user root`: asked to stay root.
    StayedRoot,
    /// Now running as this user and group.
    To { user: String, uid: u32, gid: u32 },
}

/// Become `user` if running as root, keeping only `keep`.
pub fn drop_to(user: &str, keep: &[Capability]) -> Result<Dropped, PrivilegeError> {
    if !Uid::effective().is_root() {
        return Ok(Dropped::NotRoot);
    }
    let u = User::from_name(user)
        .map_err(|e| fail(user, "looking up the user", e))?
        .ok_or_else(|| PrivilegeError::NoSuchUser(user.to_string()))?;
    if u.uid.is_root() {
        return Ok(Dropped::StayedRoot);
    }
    let keep: HashSet<Capability> = keep.iter().copied().collect();
    // While still root: nothing outside `keep` can ever come back.
    let bounding =
        caps::read(None, CapSet::Bounding).map_err(|e| fail(user, "reading capabilities", e))?;
    for c in bounding.difference(&keep) {
        caps::drop(None, CapSet::Bounding, *c)
            .map_err(|e| fail(user, "dropping capabilities", e))?;
    }
    caps::clear(None, CapSet::Inheritable).map_err(|e| fail(user, "clearing capabilities", e))?;
    // Keep the permitted set across setuid; only `keep` will be in it.
    caps::securebits::set_keepcaps(true).map_err(|e| fail(user, "keeping capabilities", e))?;
    nix::unistd::setgroups(&[u.gid]).map_err(|e| fail(user, "setgroups", e))?;
    nix::unistd::setresgid(u.gid, u.gid, u.gid).map_err(|e| fail(user, "setgid", e))?;
    nix::unistd::setresuid(u.uid, u.uid, u.uid).map_err(|e| fail(user, "setuid", e))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|e| fail(user, "setting capabilities", e))?;
    caps::set(None, CapSet::Effective, &keep).map_err(|e| fail(user, "setting capabilities", e))?;
    caps::securebits::set_keepcaps(false).map_err(|e| fail(user, "keeping capabilities", e))?;
    nix::sys::prctl::set_no_new_privs().map_err(|e| fail(user, "no_new_privs", e))?;
    if Uid::effective().is_root() || Uid::current().is_root() {
        return Err(fail(user, "checking", std::io::Error::other("still root")));
    }
    Ok(Dropped::To {
        user: user.to_string(),
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    })
}

fn fail(
    user: &str,
    step: &'static str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> PrivilegeError {
    PrivilegeError::Failed {
        user: user.to_string(),
        step,
        source: Box::new(e),
    }
}

/// Drop and log what happened.
pub fn drop_and_log(user: &str, keep: &[Capability]) -> Result<(), PrivilegeError> {
    match drop_to(user, keep)? {
        Dropped::To { user, uid, gid } => {
            let caps: Vec<String> = keep.iter().map(|c| c.to_string()).collect();
            tracing::info!(%user, uid, gid, capabilities = ?caps, "dropped root privileges");
        }
        Dropped::StayedRoot => tracing::warn!("--user root: running with full root privileges"),
        Dropped::NotRoot => {}
    }
    Ok(())
}

/// Before [`drop_to`] `user`: the files the process reopens by path after
/// the switch (the event log, on SIGHUP). A regular file owned by root
/// becomes `user`'s, so it can be reopened, and logrotate's `create` (which
/// copies the owner) makes its successor `user`'s too. A directory where
/// `user` cannot make a new file is logged: after the file is moved away
/// without `create`, SIGHUP keeps writing to the moved file. Nothing to do
/// unless root and `user` is another user.
pub fn hand_over(user: &str, files: &[&Path]) -> Result<(), PrivilegeError> {
    if files.is_empty() {
        return Ok(());
    }
    let Some((uid, gid)) = other_user(user)? else {
        return Ok(());
    };
    for &f in files {
        let shown = crate::quote::log_field(&f.to_string_lossy()).into_owned();
        match std::fs::metadata(f) {
            Ok(m) if m.is_file() && m.uid() == 0 => {
                if let Err(e) = std::os::unix::fs::chown(f, Some(uid), Some(gid)) {
                    tracing::warn!(file = %shown, %user, error = %e, "cannot give the event log to the user; a SIGHUP cannot reopen it");
                }
            }
            _ => {}
        }
        let dir = match f.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if let Ok(m) = std::fs::metadata(dir) {
            if !can_create_in(m.mode(), m.uid(), m.gid(), uid, gid) {
                tracing::warn!(
                    directory = %crate::quote::log_field(&dir.to_string_lossy()),
                    %user,
                    "the event log's directory does not let the user make a new file: after logrotate moves \
                     the file away, SIGHUP reopens it only if logrotate creates the new one (`create`), else \
                     lines go on to the moved file; make the directory the user's (systemd: LogsDirectory=)"
                );
            }
        }
    }
    Ok(())
}

/// Before [`drop_to`] `user`: the `--state-dir` it writes becomes `user`'s
/// if this process just `made` it, and so does a state file in it owned by
/// root (an existing directory is never given away: `/tmp` or `/var` must
/// stay root's; one the user cannot write is an error at start). Nothing
/// to do unless root and `user` is another user.
pub fn hand_over_dir(user: &str, dir: &Path, made: bool) -> Result<(), PrivilegeError> {
    let Some((uid, gid)) = other_user(user)? else {
        return Ok(());
    };
    let made = made.then(|| dir.to_path_buf());
    for p in made.into_iter().chain([dir.join("state.json")]) {
        let root_owned = std::fs::symlink_metadata(&p)
            .is_ok_and(|m| m.uid() == 0 && (m.is_dir() || m.is_file()));
        if root_owned {
            if let Err(e) = std::os::unix::fs::chown(&p, Some(uid), Some(gid)) {
                tracing::warn!(path = %crate::quote::log_field(&p.to_string_lossy()), %user, error = %e, "cannot give the state directory to the user");
            }
        }
    }
    Ok(())
}

/// `user`'s uid and gid when files are to be handed to it: this process is
/// root and `user` is another user; `None` otherwise.
fn other_user(user: &str) -> Result<Option<(u32, u32)>, PrivilegeError> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let u = User::from_name(user)
        .map_err(|e| fail(user, "looking up the user", e))?
        .ok_or_else(|| PrivilegeError::NoSuchUser(user.to_string()))?;
    Ok((!u.uid.is_root()).then(|| (u.uid.as_raw(), u.gid.as_raw())))
}

/// Whether a user `uid` whose only group is `gid` (as after [`drop_to`])
/// may make a file in a directory of `mode`, owner `owner` and group
/// `group`: write and search permission in the class that applies to it
/// (ACLs are not read).
fn can_create_in(mode: u32, owner: u32, group: u32, uid: u32, gid: u32) -> bool {
    let wx = if uid == owner {
        mode >> 6
    } else if gid == group {
        mode >> 3
    } else {
        mode
    };
    wx & 0o3 == 0o3
}

#[cfg(test)]
mod tests {
    use super::can_create_in;

    #[test]
    fn the_class_that_applies_decides() {
        // (mode, owner, group) for user 65534, group 65534.
        for (mode, owner, group, want) in [
            (0o755, 0, 0, false),    // install -d /var/log/portwatch
            (0o755, 65534, 0, true), // the user's (LogsDirectory=)
            (0o700, 65534, 65534, true),
            (0o575, 65534, 65534, false), // owner class wins, even if others may
            (0o775, 0, 65534, true),      // group-writable, the user's group
            (0o1777, 0, 0, true),         // /tmp
            (0o776, 0, 0, false),         // write without search
        ] {
            assert_eq!(
                can_create_in(mode, owner, group, 65534, 65534),
                want,
                "{mode:o} {owner}:{group}"
            );
        }
    }
}
