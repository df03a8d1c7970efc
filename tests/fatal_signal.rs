//! A fatal signal in a worker thread kills the process (the workers are threads of it); the
//! operator must find one line saying so as the last thing on stderr, and the process must
//! still die of that signal (exit status, core dump) so systemd treats it as the crash it is.

mod common;

use std::os::unix::process::ExitStatusExt;

use common::{wait_until, worker_thread, Server, DEADLINE};

/// Sends `signal` to one thread of the server and returns its exit status and last log line.
fn kill_thread(workers: &str, tid_of: impl Fn(&Server) -> i32, signal: i32) -> (i32, String) {
    let mut server = Server::start(&[("MEDIASOUP_NUM_WORKERS", workers)]);
    // The log sink writes this after every worker started; later lines come only from the crash.
    wait_until("the listening log line", DEADLINE, || {
        server.log().iter().any(|l| l.contains("listening"))
    });
    let tid = tid_of(&server);
    // SAFETY: tgkill(2) on a thread of our own child process.
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, server.pid(), tid, signal) };
    assert_eq!(sent, 0, "tgkill: {}", std::io::Error::last_os_error());
    let status = server.wait_exit("a fatal signal");
    wait_until("the crash line", DEADLINE, || {
        server.log().iter().any(|l| l.contains("fatal signal"))
    });
    let last = server.log().last().cloned().unwrap_or_default();
    (status.signal().unwrap_or(0), last)
}

#[test]
fn a_crash_in_a_worker_thread_leaves_one_line_and_the_signal_as_exit_status() {
    let (signal, last) = kill_thread("2", |s| worker_thread(s.pid(), 1), libc::SIGSEGV);
    assert_eq!(signal, libc::SIGSEGV, "exit status; last line: {last}");
    assert!(
        last.starts_with(
            "mediasoup-server: fatal signal SIGSEGV in mediasoup worker 1 (thread 'mediasoup-worke'): \
             the process stops now"
        ),
        "last stderr line: {last}"
    );
}

#[test]
fn an_abort_in_another_thread_names_that_thread() {
    let (signal, last) = kill_thread("1", Server::pid, libc::SIGABRT);
    assert_eq!(signal, libc::SIGABRT, "exit status; last line: {last}");
    assert!(
        last.starts_with("mediasoup-server: fatal signal SIGABRT in a server thread (thread '"),
        "last stderr line: {last}"
    );
}
