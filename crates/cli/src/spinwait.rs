//! Brief spinning before a condition-variable wait blocks, for the OpenCL runtime's threads.
//!
//! PoCL's CPU device runs kernels on worker threads that block in `pthread_cond_wait`
//! whenever its queues are empty: between two dependent kernels, the worker that finishes
//! its share first goes to sleep and is woken when the other has finished the kernel and
//! pushed the next one. A run of ResNet-50 is 57 dependent kernels, so a worker sleeps and
//! wakes about once per kernel; on a virtual machine whose idle vCPUs halt, each wake-up
//! costs tens of microseconds (an inter-processor interrupt and the host scheduling the
//! vCPU again). Thread pools built for inference (onnxruntime's, OpenMP's) spin a while
//! before blocking for this reason; PoCL has no such setting.
//!
//! The `weft` binary defines `pthread_cond_wait`, `pthread_cond_broadcast` and
//! `pthread_cond_signal` and exports them (`build.rs`), so that the dynamic linker binds
//! PoCL's (and every other library's) calls to these definitions, which forward to the C
//! library's. A wait first releases the mutex and spins for up to `WEFT_SPIN_US`
//! microseconds (default [`DEFAULT_SPIN_US`]; 0 turns spinning off) watching a process-wide
//! count of signals and broadcasts; when one arrives it retakes the mutex and returns
//! (a wake-up that POSIX allows to be spurious, so callers re-check their condition), else
//! it retakes the mutex and blocks in the C library's wait. A signal that changes the
//! waited-for state under the mutex cannot be lost: either it was counted before the
//! mutex was retaken (the wait returns), or it comes after the C library's wait has
//! registered the waiter (which it does before releasing the mutex).
//!
//! Linux with glibc only; elsewhere nothing is interposed.
#![allow(unsafe_code)]

/// Microseconds a condition-variable wait spins before blocking, unless `WEFT_SPIN_US`
/// says otherwise: ResNet-50 int8 at batch 1 on PoCL ran 6% faster with 10 to 50 us than
/// without spinning, and slower with 150 us (paired runs, `bench/RESULTS.md`).
pub const DEFAULT_SPIN_US: u64 = 20;

/// Reads `WEFT_SPIN_US` (before the process starts other threads); returns the spin in
/// microseconds, or an error naming a value that is not a whole number up to 10000.
pub fn init() -> Result<u64, String> {
    let us = match std::env::var("WEFT_SPIN_US") {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(us) if us <= 10_000 => us,
            _ => {
                return Err(format!(
                    "WEFT_SPIN_US={v:?}: expected whole microseconds from 0 to 10000"
                ));
            }
        },
        Err(_) => DEFAULT_SPIN_US,
    };
    imp::set_spin_ns(us * 1000);
    Ok(us)
}

/// What the interposed functions have seen in this process: waits (calls of this binary's
/// `pthread_cond_wait`), waits that a signal ended while they spun, and signals and
/// broadcasts. Zero everywhere when the C library's definitions were bound instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub waits: u64,
    pub spun: u64,
    pub signals: u64,
}

pub fn stats() -> Stats {
    imp::stats()
}

/// With `WEFT_SPIN_STATS=1`, prints the interposition's counts to stderr (at the end of a
/// command): how the tests check that PoCL's threads bind to this binary's definitions.
pub fn report() {
    if std::env::var_os("WEFT_SPIN_STATS").is_some_and(|v| v != "0") {
        let s = stats();
        eprintln!(
            "weft spinwait: {} condition waits, {} ended while spinning, {} signals",
            s.waits, s.spun, s.signals
        );
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use std::ffi::CStr;
    use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};

    /// Signals and broadcasts so far, on any condition variable of the process.
    static SIGNALS: AtomicU64 = AtomicU64::new(0);
    /// Calls of this binary's `pthread_cond_wait`, and those a signal ended while spinning.
    static WAITS: AtomicU64 = AtomicU64::new(0);
    static SPUN: AtomicU64 = AtomicU64::new(0);

    pub fn stats() -> super::Stats {
        super::Stats {
            waits: WAITS.load(Ordering::Relaxed),
            spun: SPUN.load(Ordering::Relaxed),
            signals: SIGNALS.load(Ordering::Relaxed),
        }
    }
    /// Spin before blocking, in nanoseconds (0 until `init`).
    static SPIN_NS: AtomicU64 = AtomicU64::new(0);
    static WAIT: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());
    static BROADCAST: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());
    static SIGNAL: AtomicPtr<libc::c_void> = AtomicPtr::new(std::ptr::null_mut());

    type WaitFn = unsafe extern "C" fn(*mut libc::pthread_cond_t, *mut libc::pthread_mutex_t) -> libc::c_int;
    type SignalFn = unsafe extern "C" fn(*mut libc::pthread_cond_t) -> libc::c_int;

    pub fn set_spin_ns(ns: u64) {
        SPIN_NS.store(ns, Ordering::Relaxed);
    }

    /// The C library's definition of `name` (the next one after this binary's), cached.
    fn next(slot: &AtomicPtr<libc::c_void>, name: &CStr) -> *mut libc::c_void {
        let p = slot.load(Ordering::Acquire);
        if !p.is_null() {
            return p;
        }
        // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name; it only looks the symbol up.
        let p = unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) };
        if p.is_null() {
            // no C library behind this binary to forward to: nothing sensible to do
            std::process::abort();
        }
        slot.store(p, Ordering::Release);
        p
    }

    fn now_ns() -> u64 {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_gettime writes the timespec it is given.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        (ts.tv_sec as u64)
            .wrapping_mul(1_000_000_000)
            .wrapping_add(ts.tv_nsec as u64)
    }

    /// Counts the broadcast, then broadcasts.
    ///
    /// # Safety
    /// As `pthread_cond_broadcast`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn pthread_cond_broadcast(cond: *mut libc::pthread_cond_t) -> libc::c_int {
        SIGNALS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the C library's pthread_cond_broadcast, with the caller's argument.
        unsafe { std::mem::transmute::<*mut libc::c_void, SignalFn>(next(&BROADCAST, c"pthread_cond_broadcast"))(cond) }
    }

    /// Counts the signal, then signals.
    ///
    /// # Safety
    /// As `pthread_cond_signal`.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn pthread_cond_signal(cond: *mut libc::pthread_cond_t) -> libc::c_int {
        SIGNALS.fetch_add(1, Ordering::SeqCst);
        // SAFETY: the C library's pthread_cond_signal, with the caller's argument.
        unsafe { std::mem::transmute::<*mut libc::c_void, SignalFn>(next(&SIGNAL, c"pthread_cond_signal"))(cond) }
    }

    /// Spins (mutex released) until a signal or broadcast is counted or the spin time has
    /// passed, then returns with the mutex retaken, or waits in the C library.
    ///
    /// # Safety
    /// As `pthread_cond_wait`: `mutex` is locked by the calling thread.
    #[unsafe(no_mangle)]
    pub unsafe extern "C" fn pthread_cond_wait(
        cond: *mut libc::pthread_cond_t,
        mutex: *mut libc::pthread_mutex_t,
    ) -> libc::c_int {
        WAITS.fetch_add(1, Ordering::Relaxed);
        let spin = SPIN_NS.load(Ordering::Relaxed);
        if spin > 0 {
            let seen = SIGNALS.load(Ordering::SeqCst);
            // SAFETY: the caller holds the mutex (the contract of pthread_cond_wait).
            unsafe { libc::pthread_mutex_unlock(mutex) };
            let start = now_ns();
            let mut turns = 0u32;
            while SIGNALS.load(Ordering::SeqCst) == seen {
                std::hint::spin_loop();
                turns = turns.wrapping_add(1);
                if turns.is_multiple_of(64) && now_ns().wrapping_sub(start) > spin {
                    break;
                }
            }
            // SAFETY: the mutex the caller passed, which this thread released above.
            unsafe { libc::pthread_mutex_lock(mutex) };
            if SIGNALS.load(Ordering::SeqCst) != seen {
                SPUN.fetch_add(1, Ordering::Relaxed);
                return 0;
            }
        }
        // SAFETY: the C library's pthread_cond_wait, with the caller's arguments and the
        // mutex locked by this thread.
        unsafe { std::mem::transmute::<*mut libc::c_void, WaitFn>(next(&WAIT, c"pthread_cond_wait"))(cond, mutex) }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use std::sync::Arc;

        /// A flag guarded by a pthread mutex and condition variable, used through this
        /// module's definitions (a test binary does not export them).
        struct Gate {
            m: std::cell::UnsafeCell<libc::pthread_mutex_t>,
            c: std::cell::UnsafeCell<libc::pthread_cond_t>,
            turn: std::cell::UnsafeCell<u64>,
        }
        // SAFETY: every access to the cells goes through the pthread mutex.
        unsafe impl Sync for Gate {}
        // SAFETY: as above.
        unsafe impl Send for Gate {}

        impl Gate {
            fn new() -> Self {
                Gate {
                    m: std::cell::UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER),
                    c: std::cell::UnsafeCell::new(libc::PTHREAD_COND_INITIALIZER),
                    turn: std::cell::UnsafeCell::new(0),
                }
            }
            /// Waits until the turn is `want`, then sets it to `want + 1` and wakes the other.
            fn pass(&self, want: u64, broadcast: bool) {
                // SAFETY: the cells are only touched with the mutex held.
                unsafe {
                    libc::pthread_mutex_lock(self.m.get());
                    while *self.turn.get() != want {
                        pthread_cond_wait(self.c.get(), self.m.get());
                    }
                    *self.turn.get() = want + 1;
                    if broadcast {
                        pthread_cond_broadcast(self.c.get());
                    } else {
                        pthread_cond_signal(self.c.get());
                    }
                    libc::pthread_mutex_unlock(self.m.get());
                }
            }
        }

        /// Two threads hand a turn back and forth many times through one condition
        /// variable, with the spin on (most hand-overs land inside it) and off, by signal
        /// and by broadcast: a lost wake-up would hang them (a watchdog aborts the test).
        #[test]
        fn ping_pong_never_loses_a_wake_up() {
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let watchdog = {
                let done = done.clone();
                std::thread::spawn(move || {
                    for _ in 0..600 {
                        if done.load(Ordering::SeqCst) {
                            return;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                    eprintln!("ping-pong through the interposed condition variable hung");
                    std::process::abort();
                })
            };
            for (spin_ns, broadcast) in [(20_000, false), (20_000, true), (0, true), (1, false)] {
                set_spin_ns(spin_ns);
                let gate = Arc::new(Gate::new());
                let rounds = 20_000u64;
                let other = {
                    let gate = gate.clone();
                    std::thread::spawn(move || {
                        for i in 0..rounds {
                            gate.pass(2 * i + 1, broadcast);
                        }
                    })
                };
                for i in 0..rounds {
                    gate.pass(2 * i, broadcast);
                }
                other.join().unwrap_or_else(|_| panic!("the other thread panicked"));
                // SAFETY: both threads are done with the gate.
                assert_eq!(unsafe { *gate.turn.get() }, 2 * rounds);
            }
            done.store(true, Ordering::SeqCst);
            watchdog.join().unwrap_or_else(|_| panic!("watchdog panicked"));
        }

        /// A waiter whose condition arrives long after the spin has run out blocks in the
        /// C library's wait and is still woken.
        #[test]
        fn a_late_signal_wakes_a_blocked_waiter() {
            set_spin_ns(1_000);
            let gate = Arc::new(Gate::new());
            let g = gate.clone();
            let waiter = std::thread::spawn(move || g.pass(1, false));
            std::thread::sleep(std::time::Duration::from_millis(50));
            gate.pass(0, false);
            waiter.join().unwrap_or_else(|_| panic!("waiter panicked"));
            // SAFETY: both threads are done with the gate.
            assert_eq!(unsafe { *gate.turn.get() }, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub fn set_spin_ns(_ns: u64) {}

    pub fn stats() -> super::Stats {
        super::Stats::default()
    }
}
