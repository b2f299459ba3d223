//! The open-file limit. Every connection is a file descriptor: the server
//! holds up to `--max-connections` of them, and an idle benchmark run of
//! 10,000 sessions needs more than the usual soft limit of 1024. The
//! server raises its soft `RLIMIT_NOFILE` to the hard limit at start
//! ([`raise_soft_to_hard`]), as nginx's `worker_rlimit_nofile` or Go's
//! runtime do; the generator raises it to what a run needs ([`ensure`]),
//! or says clearly why the run cannot start. Neither can pass the hard
//! limit, which an unprivileged process cannot raise.
//!
//! `rustix` (already the server's event-loop dependency) reads and sets
//! the limit safely.

/// Open files the generator itself uses besides its sockets: stdio, the
/// poller, its notifier, `/proc` reads while measuring.
pub const FILES_BESIDES_SOCKETS: u64 = 64;

/// The soft and hard limits.
mod sys {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

    /// `(soft, hard)`; `u64::MAX` is "unlimited".
    pub fn get() -> std::io::Result<(u64, u64)> {
        let r = getrlimit(Resource::Nofile);
        Ok((r.current.unwrap_or(u64::MAX), r.maximum.unwrap_or(u64::MAX)))
    }

    /// Sets the soft limit, keeping the hard one.
    pub fn set_soft(soft: u64, hard: u64) -> std::io::Result<()> {
        let limit = |v: u64| (v != u64::MAX).then_some(v);
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit(soft),
                maximum: limit(hard),
            },
        )?;
        Ok(())
    }
}

/// Makes sure this process may open `need` files: raises the soft limit
/// if it is lower (to `need`, or to the hard limit if that is lower and
/// still enough). Returns the soft limit in force, or why the run
/// cannot start.
pub fn ensure(need: u64) -> Result<u64, String> {
    let (soft, hard) = sys::get().map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    if soft >= need {
        return Ok(soft);
    }
    if hard < need {
        return Err(format!(
            "this run needs about {need} open files, above the hard limit of {hard} \
             (raise it as root, e.g. `ulimit -Hn {need}`, or run fewer sessions or pairs)"
        ));
    }
    sys::set_soft(need, hard).map_err(|e| {
        format!("this run needs about {need} open files; raising the soft limit from {soft} failed: {e}")
    })?;
    Ok(need)
}

/// Raises the soft limit to the hard one; returns the soft limit now in
/// force (`u64::MAX` for unlimited).
pub fn raise_soft_to_hard() -> std::io::Result<u64> {
    let (soft, hard) = sys::get()?;
    if soft < hard {
        sys::set_soft(hard, hard)?;
    }
    Ok(sys::get()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_keeps_the_limit() {
        let (soft, hard) = sys::get().unwrap();
        assert!(soft <= hard);
        // Asking for no more than we have changes nothing.
        assert_eq!(ensure(soft.min(16)).unwrap(), soft);
        assert_eq!(sys::get().unwrap(), (soft, hard));
        // More than the hard limit is refused with a reason.
        if hard < u64::MAX {
            assert!(ensure(hard + 1).unwrap_err().contains("hard limit"));
        }
        // Raising to the hard limit gets the hard limit.
        assert_eq!(raise_soft_to_hard().unwrap(), hard);
        assert_eq!(sys::get().unwrap(), (hard, hard));
    }
}
