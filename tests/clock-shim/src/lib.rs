//! Moves a process's wall clock with the test clock.
//!
//! A real `bootstrap` reads time the way Lambda's does: `SystemTime::now()`,
//! which is `clock_gettime(CLOCK_REALTIME)`. Loaded with `LD_PRELOAD`, this
//! library answers that call with the kernel's time plus an offset (ms, a
//! little-endian `i64`) read from the file named by `FK_CLOCK_FILE`, which
//! the test clock rewrites whenever it moves. So lease expiry, invocation
//! deadlines and catch-up timing in the function agree with the emulator's
//! clock for that account, with no code branch in the function. Monotonic
//! clocks (timers, the SDK's timeouts and backoff) are left alone.
//!
//! Without `FK_CLOCK_FILE`, or when the file cannot be read, the offset is 0.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

static FILE: OnceLock<Option<File>> = OnceLock::new();

fn offset_ms() -> i64 {
    let file = FILE.get_or_init(|| std::env::var_os("FK_CLOCK_FILE").and_then(|p| File::open(p).ok()));
    let mut buf = [0u8; 8];
    match file {
        Some(f) if f.read_exact_at(&mut buf, 0).is_ok() => i64::from_le_bytes(buf),
        _ => 0,
    }
}

/// `clock_gettime(2)`, the wall clocks shifted by the test clock's offset.
///
/// # Safety
/// As `clock_gettime(2)`: `ts` must point to writable memory for a `timespec`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn clock_gettime(clock: libc::clockid_t, ts: *mut libc::timespec) -> libc::c_int {
    // The system call itself: calling back into libc's symbol would find this one.
    let r = unsafe { libc::syscall(libc::SYS_clock_gettime, clock, ts) } as libc::c_int;
    if r == 0 && !ts.is_null() && matches!(clock, libc::CLOCK_REALTIME | libc::CLOCK_REALTIME_COARSE) {
        let offset = offset_ms();
        if offset != 0 {
            // SAFETY: the kernel just filled `*ts`.
            let t = unsafe { &mut *ts };
            let nanos = t.tv_sec as i128 * 1_000_000_000 + t.tv_nsec as i128 + offset as i128 * 1_000_000;
            t.tv_sec = nanos.div_euclid(1_000_000_000) as libc::time_t;
            t.tv_nsec = nanos.rem_euclid(1_000_000_000) as libc::c_long;
        }
    }
    r
}
