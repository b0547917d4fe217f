//! `shoal init`: a minimal PID 1 for containers run with `--init`. It starts the real command
//! as its child, forwards the signals a container is stopped with, reaps every orphan that is
//! reparented to it, and exits with the child's status.

use std::ffi::CString;

use crate::sys;

const FORWARDED: &[i32] = &[
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Runs `args` under the init; returns the exit code to use.
pub fn init_main(args: &[String]) -> i32 {
    let Some(program) = args.first() else {
        eprintln!("shoal init: no command given");
        return 127;
    };
    let c_args: Vec<CString> = match args.iter().map(|a| CString::new(a.as_bytes())).collect() {
        Ok(c) => c,
        Err(_) => {
            eprintln!("shoal init: argument contains a NUL byte");
            return 127;
        }
    };
    // Blocks the forwarded signals (and SIGCHLD) so they queue for sigwait instead of running
    // default actions; the child unblocks them before exec.
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; these calls only modify it and this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        for signal in FORWARDED.iter().chain(&[libc::SIGCHLD]) {
            libc::sigaddset(&mut set, *signal);
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let child = match sys::fork_single_threaded() {
        Ok(Some(pid)) => pid,
        Ok(None) => {
            let mut argv: Vec<*const libc::c_char> = c_args.iter().map(|a| a.as_ptr()).collect();
            argv.push(std::ptr::null());
            // SAFETY: we are the freshly forked single-threaded child; `set` is initialised and
            // `argv` is a NULL-terminated array of valid C strings that outlive execvp.
            unsafe {
                libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
                libc::execvp(c_args[0].as_ptr(), argv.as_ptr());
            }
            eprintln!(
                "shoal init: cannot run {program}: {}",
                std::io::Error::last_os_error()
            );
            sys::exit_immediately(127);
        }
        Err(error) => {
            eprintln!("shoal init: {error}");
            return 127;
        }
    };
    loop {
        let mut signal = 0;
        // SAFETY: `set` is initialised and `signal` is a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
            continue;
        }
        if signal == libc::SIGCHLD {
            while let Ok(sys::Reaped::Exited { pid, code }) = sys::waitpid(-1, true) {
                if pid == child {
                    return code;
                }
            }
        } else {
            sys::kill(child, signal);
        }
    }
}
