//! Child processes of the harness: every component (etcd, apiserver, kwok, our own binaries) runs
//! in its own process group with its output in a log file, dies with the test process (even when
//! that is killed), and is killed as a group when its handle is dropped.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::Error;

static DETACHED: AtomicBool = AtomicBool::new(false);
static SPAWNED: std::sync::Mutex<Vec<(String, u32)>> = std::sync::Mutex::new(Vec::new());

/// `(component, process id)` of every process started in detached mode, so whoever leaves them
/// running can stop them later (`gpufed-demo down`), even after a failure half-way.
pub fn detached_processes() -> Vec<(String, u32)> {
    match SPAWNED.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}
static WORK_DIR: OnceLock<PathBuf> = OnceLock::new();

/// A component started by a test, for [`kill_owned_by`]: the name of the thread that started it
/// (the test's runtime threads carry the test's name), its name, process id and log.
struct Live {
    owner: String,
    name: String,
    pid: u32,
    log: PathBuf,
    cleanup: Option<Cleanup>,
}

/// What to do on the host after a component's process group is killed (remove what it made
/// outside its process tree, e.g. a real node's bridge). Runs at most once.
pub type Cleanup = Arc<dyn Fn() + Send + Sync>;

/// Wraps `f` so that it runs once, however often it is called.
fn once(f: Cleanup) -> Cleanup {
    let done = Arc::new(std::sync::Once::new());
    Arc::new(move || done.call_once(|| f()))
}

static LIVE: std::sync::Mutex<Vec<Live>> = std::sync::Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<Live>> {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kills every component still running that a thread named `owner` started, and returns the tail
/// of each one's log (`lines` lines), for a test that is stuck and will be failed from outside.
/// The processes stay unreaped until their handles drop, so their ids cannot be reused meanwhile.
pub fn kill_owned_by(owner: &str, lines: usize) -> Vec<(String, String)> {
    let mut gone = Vec::new();
    let mut cleanups = Vec::new();
    live().retain(|l| {
        if l.owner != owner {
            return true;
        }
        // The tail first: a cleanup may remove the directory the log is in.
        gone.push((l.name.clone(), tail(&l.log, lines)));
        kill_group(l.pid, libc::SIGKILL);
        cleanups.extend(l.cleanup.clone());
        false
    });
    // Outside the lock (a cleanup may take its time), once every component is killed.
    for cleanup in cleanups {
        cleanup();
    }
    gone
}

/// Detached mode (for `make demo`): processes started from now on outlive this process, dropping
/// their handles leaves them running, and cluster directories are kept.
pub fn set_detached(detached: bool) {
    DETACHED.store(detached, Ordering::SeqCst);
}

/// Whether detached mode is on.
pub fn detached() -> bool {
    DETACHED.load(Ordering::SeqCst)
}

/// Puts cluster directories under `dir` instead of the system temporary directory (first call wins).
pub fn set_work_dir(dir: PathBuf) {
    let _ = WORK_DIR.set(dir);
}

/// Where cluster directories go, if set.
pub fn work_dir() -> Option<&'static Path> {
    WORK_DIR.get().map(PathBuf::as_path)
}

/// A running component. Dropping it kills its whole process group (unless detached).
pub struct Process {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    cleanup: Option<Cleanup>,
    /// How it was started, for [`Process::respawn`].
    command: (PathBuf, Vec<String>, Vec<(String, String)>),
}

impl std::fmt::Debug for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("log", &self.log)
            .field("cleanup", &self.cleanup.is_some())
            .finish()
    }
}

impl Process {
    /// Starts `program` with `args` and `env`, writing stdout and stderr to `log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
    ) -> Result<Process, Error> {
        Process::start(name, program, args, env, log, false)
    }

    /// Kills the process group (if still running) and starts the same command again, appending to
    /// the same log: a component restarted after a crash, as a supervisor would.
    /// A cleanup set with [`Process::on_kill`] moves to the new process, unrun.
    pub fn respawn(&mut self) -> Result<(), Error> {
        let cleanup = self.cleanup.take();
        self.kill();
        let (program, args, env) = self.command.clone();
        let mut fresh = Process::start(&self.name, &program, &args, &env, &self.log, true)?;
        if let Some(c) = cleanup {
            fresh.on_kill(c);
        }
        *self = fresh;
        Ok(())
    }

    /// The environment it was started with.
    pub fn env(&self) -> &[(String, String)] {
        &self.command.2
    }

    /// The program and arguments it was started with.
    pub fn command(&self) -> (&Path, &[String]) {
        (&self.command.0, &self.command.1)
    }

    fn start(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        log: &Path,
        append: bool,
    ) -> Result<Process, Error> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)
            .map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        if !detached() {
            die_with_parent(&mut cmd);
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {name} ({})", program.display()), e))?;
        tracing::debug!(component = name, pid = child.id(), "started");
        if detached() {
            match SPAWNED.lock() {
                Ok(mut g) => g.push((name.to_string(), child.id())),
                Err(p) => p.into_inner().push((name.to_string(), child.id())),
            }
        } else {
            live().push(Live {
                owner: std::thread::current()
                    .name()
                    .unwrap_or_default()
                    .to_string(),
                name: name.to_string(),
                pid: child.id(),
                log: log.to_path_buf(),
                cleanup: None,
            });
        }
        Ok(Process {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
            cleanup: None,
            command: (program.to_path_buf(), args.to_vec(), env.to_vec()),
        })
    }

    /// Runs `cleanup` once the process group has been killed: by [`Process::kill`] (and so on
    /// drop), or by [`kill_owned_by`] when the test that started it is stuck. Not in detached mode,
    /// where the process outlives its handle.
    pub fn on_kill(&mut self, cleanup: Cleanup) {
        let cleanup = once(cleanup);
        if let Some(pid) = self.pid() {
            for l in live().iter_mut().filter(|l| l.pid == pid) {
                l.cleanup = Some(cleanup.clone());
            }
        }
        self.cleanup = Some(cleanup);
    }

    /// Component name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Path of the component's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited (and its status, if so).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let status = child.try_wait().ok().flatten()?;
        // Reaped: its id may be reused from now on.
        forget(child.id());
        Some(status)
    }

    /// Sends `signal` to the process group (e.g. `libc::SIGSTOP` to freeze a component).
    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // The group id equals the pid because the child was started with process_group(0).
            kill_group(pid, signal);
        }
    }

    /// Kills the process group with SIGKILL, reaps the child and runs the cleanup. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_group(child.id(), libc::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            forget(child.id());
        }
        if let Some(cleanup) = self.cleanup.take() {
            cleanup();
        }
    }

    /// Asks the process group to stop (SIGTERM), waits up to `grace`, then kills it.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(child) = self.child.as_mut() {
            kill_group(child.id(), libc::SIGTERM);
            let deadline = std::time::Instant::now() + grace;
            while std::time::Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    forget(child.id());
                    self.child = None;
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.kill();
    }

    /// The last `lines` lines of the log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if detached() {
            // Leave it running: `gpufed-demo down` stops it by process group.
            self.child.take();
        } else {
            self.kill();
        }
    }
}

/// Drops a reaped process from the live list.
fn forget(pid: u32) {
    live().retain(|l| l.pid != pid);
}

/// Sends `signal` to the process group `pgid` (for stopping detached processes later).
pub fn signal_group(pgid: u32, signal: i32) {
    kill_group(pgid, signal);
}

/// The last `lines` lines of a file (empty if unreadable).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn kill_group(pgid: u32, signal: i32) {
    if let Ok(pgid) = i32::try_from(pgid) {
        // SAFETY: kill(2) with a negative pid signals a process group; it touches no memory of ours.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// Makes the child receive SIGKILL when the thread that started it exits, so a test process that
/// is killed (or a test thread that ends) never leaves apiservers behind.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2) and
    // getppid(2), both async-signal-safe; it allocates nothing and touches no shared state.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() == 1 {
                return Err(std::io::Error::other("parent exited before exec"));
            }
            Ok(())
        });
    }
}

/// Lowest port [`free_port`] hands out.
const PORTS_FROM: u16 = 10_000;

/// Ports handed out so far by this process; never the same one twice.
static PORTS_GIVEN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The first port of the kernel's ephemeral range (`ip_local_port_range`), 32768 if unreadable;
/// read once.
fn ephemeral_start() -> u16 {
    static START: OnceLock<u16> = OnceLock::new();
    *START.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768)
    })
}

/// A free TCP port on 127.0.0.1 for a component to listen on.
///
/// Taken below the kernel's ephemeral range, where no outgoing connection is ever given a local
/// port: a port from there (what binding port 0 returns) can be taken as the source port of some
/// client's connection between our check and the component's bind, and the component then fails
/// with "address already in use". Within this process no port is handed out twice; each one is
/// checked free by binding it; processes start at different offsets.
pub fn free_port() -> Result<u16, Error> {
    let end = ephemeral_start();
    if end <= PORTS_FROM + 1_000 {
        return any_port();
    }
    let span = u32::from(end - PORTS_FROM);
    let offset = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = PORTS_GIVEN.fetch_add(1, Ordering::SeqCst);
        let port = PORTS_FROM + u16::try_from((offset + n) % span).unwrap_or(0);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    any_port()
}

/// A port the kernel picks (bound and released).
fn any_port() -> Result<u16, Error> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free port".into(), e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("finding a free port".into(), e))?
        .port();
    Ok(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        let end = ephemeral_start();
        assert!(
            ports.iter().all(|p| (PORTS_FROM..end).contains(p)),
            "{ports:?}"
        );
        for p in ports.iter().take(5) {
            assert!(std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok());
        }
    }
}
