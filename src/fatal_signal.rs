//! One line on stderr when a fatal signal kills the process, so the journal says why it died.
//!
//! The mediasoup workers are threads of this process: a crash in one of them takes every room
//! on every worker with it, and without this the process just vanishes (exit status 139, no log
//! line). The handler runs in signal context, so it only formats into a stack buffer and calls
//! write(2); then the signal goes on as before (the previous handler, or the default action with
//! its core dump and exit status), so systemd sees the same death and restarts the service.

use std::cell::Cell;
use std::sync::OnceLock;

use libc::{c_int, c_void, sigaction, siginfo_t};

/// The signals that end the process with a core dump when nothing handles them.
const FATAL_SIGNALS: [(c_int, &str); 5] = [
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGABRT, "SIGABRT"),
];

/// The actions installed before ours (Rust's stack-overflow reporter for SIGSEGV and SIGBUS).
static PREVIOUS: OnceLock<[sigaction; FATAL_SIGNALS.len()]> = OnceLock::new();

thread_local! {
    /// The index of the mediasoup worker this thread runs. Const-initialised with no destructor,
    /// so reading it is a plain thread-local load, safe in a signal handler.
    static WORKER: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks the calling thread as the thread of worker `index`, for the crash line.
pub fn mark_worker_thread(index: usize) {
    WORKER.with(|worker| worker.set(Some(index)));
}

/// Installs the handler for every fatal signal; call once, early in `main`.
pub fn install() -> std::io::Result<()> {
    let mut previous = [empty_action(); FATAL_SIGNALS.len()];
    for ((signal, _), previous) in FATAL_SIGNALS.iter().zip(previous.iter_mut()) {
        let mut action = empty_action();
        action.sa_sigaction = on_fatal_signal as *const () as usize;
        // SA_ONSTACK: a stack overflow is reported on the alternate stack where one exists.
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: valid pointers to initialised sigaction structs; the handler only does
        // async-signal-safe work.
        if unsafe { libc::sigaction(*signal, &action, previous) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    // A second call keeps the first call's record, which holds the real previous actions.
    let _ = PREVIOUS.set(previous);
    Ok(())
}

fn empty_action() -> sigaction {
    // SAFETY: sigaction is a plain C struct for which all-zeroes is a valid value (SIG_DFL).
    unsafe { std::mem::zeroed() }
}

extern "C" fn on_fatal_signal(signal: c_int, info: *mut siginfo_t, _context: *mut c_void) {
    let mut line = Line::default();
    line.push(b"mediasoup-server: fatal signal ");
    let slot = FATAL_SIGNALS.iter().position(|(s, _)| *s == signal);
    match slot {
        Some(slot) => line.push(FATAL_SIGNALS[slot].1.as_bytes()),
        None => line.push_number(signal as usize),
    }
    line.push(b" in ");
    match WORKER.try_with(Cell::get).ok().flatten() {
        Some(index) => {
            line.push(b"mediasoup worker ");
            line.push_number(index);
        }
        None => line.push(b"a server thread"),
    }
    line.push(b" (thread '");
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into `name`.
    if unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } == 0 {
        let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
        line.push(&name[..end]);
    }
    line.push(b"'): the process stops now, with every room on every worker; ");
    line.push(b"report this line and the log lines before it\n");
    line.write_to_stderr();

    // SAFETY: only async-signal-safe calls (sigaction, raise) on valid structs.
    unsafe {
        let previous = slot.and_then(|slot| PREVIOUS.get().map(|p| p[slot]));
        let sent_by_kernel = !info.is_null() && (*info).si_code > 0;
        let previous_handles = previous
            .is_some_and(|p| p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN);
        if let (Some(previous), true, true) = (previous, sent_by_kernel, previous_handles) {
            // A fault: the faulting instruction runs again on return and the previous handler
            // sees it, as if we had never been here.
            libc::sigaction(signal, &previous, std::ptr::null_mut());
        } else {
            // Sent by kill(2), raise(3) or abort(3), or nothing else handles it: die of it
            // with the default action once this handler returns (the signal is blocked until
            // then).
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
}

/// A line built on the stack: no allocation in a signal handler.
struct Line {
    bytes: [u8; 256],
    len: usize,
}

impl Default for Line {
    fn default() -> Self {
        Line {
            bytes: [0; 256],
            len: 0,
        }
    }
}

impl Line {
    fn push(&mut self, text: &[u8]) {
        let room = self.bytes.len() - self.len;
        let n = text.len().min(room);
        self.bytes[self.len..self.len + n].copy_from_slice(&text[..n]);
        self.len += n;
    }

    fn push_number(&mut self, mut n: usize) {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[start..]);
    }

    fn write_to_stderr(&self) {
        let mut written = 0;
        while written < self.len {
            // SAFETY: writes initialised bytes of our own buffer to fd 2.
            let n = unsafe {
                libc::write(
                    libc::STDERR_FILENO,
                    self.bytes[written..].as_ptr().cast(),
                    self.len - written,
                )
            };
            if n <= 0 {
                return;
            }
            written += n as usize;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Line;

    #[test]
    fn lines_hold_numbers_and_stop_at_their_capacity() {
        let mut line = Line::default();
        line.push(b"worker ");
        line.push_number(0);
        line.push(b" ");
        line.push_number(18446744073709551615);
        assert_eq!(&line.bytes[..line.len], b"worker 0 18446744073709551615");
        line.push(&[b'x'; 300]);
        assert_eq!(line.len, 256);
    }
}
