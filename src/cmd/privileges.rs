//! Dropping root: `run` and `watch`, started as root, open their captures
//! and sockets and then become an unprivileged user (`--user`, default
//! `nobody`), keeping only the capabilities they still need: CAP_NET_RAW
//! and CAP_NET_ADMIN to reopen a live interface that went away and came
//! back, none for a replay.
//!
//! Call before any thread is started: capabilities are per thread, and
//! threads started later inherit the dropped set.

use std::collections::HashSet;

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
