//! The listener's pure decisions: the connection cap from the file limit, accept errors, log pacing.

use std::time::Duration;

use super::*;

#[test]
fn the_cap_is_half_the_file_limit_keeping_at_least_256_files() {
    assert_eq!(max_connections_for(Some(1024)), 512);
    assert_eq!(max_connections_for(Some(65_536)), 32_768);
    // Below 512 files, 256 are kept back...
    assert_eq!(max_connections_for(Some(400)), 144);
    // ...until a quarter is all clients would get.
    assert_eq!(max_connections_for(Some(300)), 75);
    assert_eq!(max_connections_for(Some(64)), 16);
    assert_eq!(max_connections_for(Some(1)), 1);
    assert_eq!(max_connections_for(Some(0)), 1);
    // Unlimited, or above what Linux allows a process: as many as a process can have.
    assert_eq!(max_connections_for(None), 1 << 19);
    assert_eq!(max_connections_for(Some(u64::MAX)), 1 << 19);
    for soft in [1u64, 2, 3, 100, 255, 256, 257, 511, 512, 513, 4096, 1 << 20] {
        let cap = u64::try_from(max_connections_for(Some(soft))).expect("fits");
        assert!(cap >= 1 && (cap <= soft / 2 || soft < 2), "{soft} -> {cap}");
    }
}

#[cfg(target_os = "linux")]
#[test]
fn running_out_of_files_buffers_or_memory_pauses_accepting_and_a_lost_connection_does_not() {
    use rustix::io::Errno;
    let raw = |e: Errno| Some(e.raw_os_error());
    assert_eq!(accept_error(raw(Errno::MFILE)), ("emfile", true));
    assert_eq!(accept_error(raw(Errno::NFILE)), ("enfile", true));
    assert_eq!(accept_error(raw(Errno::NOBUFS)), ("enobufs", true));
    assert_eq!(accept_error(raw(Errno::NOMEM)), ("enomem", true));
    assert_eq!(accept_error(raw(Errno::CONNABORTED)), ("econnaborted", false));
    assert_eq!(accept_error(raw(Errno::PERM)), ("eperm", false));
    // What is not known to belong to one connection pauses: it could fail again at once.
    assert_eq!(accept_error(raw(Errno::INVAL)), ("other", true));
    assert_eq!(accept_error(None), ("other", true));
}

#[test]
fn failed_accepts_are_logged_once_a_second_at_most() {
    let s = Duration::from_secs;
    let every = ACCEPT_LOG_EVERY;
    assert!(log_due(None, s(0), every));
    assert!(!log_due(Some(s(5)), s(5), every));
    assert!(!log_due(Some(s(5)), s(5) + Duration::from_millis(999), every));
    assert!(log_due(Some(s(5)), s(6), every));
    // A clock read out of order is not a reason to log.
    assert!(!log_due(Some(s(6)), s(5), every));
}
