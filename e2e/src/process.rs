//! Starting a container's process the way a runtime would, minus the image: in the pod's network
//! namespace, in a private mount namespace with the volumes bind-mounted at their paths, in its
//! own UTS namespace with the pod's name as hostname, and in its own process group (signals go
//! to the whole group, so a shell's children stop with it).

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

use crate::volume::Mount;

/// What to start.
#[derive(Clone, Debug)]
pub struct Spawn {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub netns: PathBuf,
    pub mounts: Vec<Mount>,
    pub hostname: String,
    pub workdir: Option<PathBuf>,
    /// stdout and stderr, appended.
    pub log: PathBuf,
}

/// Looks `program` up as a runtime would in the image: a name without a slash in the image's
/// directory, an absolute path by its file name there; then on the host (its PATH for a bare
/// name), since the host's filesystem is the container's outside its mounts.
pub fn resolve(program: &str, image_dir: Option<&Path>) -> Option<PathBuf> {
    let name = Path::new(program).file_name()?;
    if let Some(dir) = image_dir
        && (program.starts_with('/') || !program.contains('/'))
        && dir.join(name).is_file()
    {
        return Some(dir.join(name));
    }
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// Where the child keeps its mount sources' descriptors, one per mount from here up.
const MOUNT_FD: libc::c_int = 900;

fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

pub fn spawn(s: &Spawn) -> io::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(&s.log)?;
    // Held open until the spawn returns: the child joins it by descriptor.
    let netns = std::fs::File::open(&s.netns)?;
    let netns_fd = netns.as_raw_fd();
    // Each source is mounted by descriptor (`/proc/self/fd/N`), all of them opened in the new
    // mount namespace before the first mount: a mount over a parent of a later source (an
    // emptyDir at /tmp, with the node's files under /tmp) would otherwise hide it. The child
    // puts them at fixed numbers from MOUNT_FD (the parent's descriptors there are all
    // close-on-exec, so nothing the program needs); they close at exec.
    for m in &s.mounts {
        std::fs::metadata(&m.source)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", m.source.display())))?;
    }
    let mounts: Vec<(CString, CString, CString, bool)> = s
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let by_fd = PathBuf::from(format!("/proc/self/fd/{}", MOUNT_FD + i as libc::c_int));
            Ok((cstring(&m.source)?, cstring(&by_fd)?, cstring(&m.target)?, m.read_only))
        })
        .collect::<io::Result<_>>()?;
    let hostname = s.hostname.clone().into_bytes();
    let workdir = s.workdir.as_deref().map(cstring).transpose()?;
    let root = c"/";

    let mut cmd = Command::new(&s.program);
    cmd.args(&s.args)
        .env_clear()
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true);
    // SAFETY: between fork and exec the closure only makes system calls on memory prepared
    // above (no allocation, no locks), which is what `pre_exec` requires.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::setns(netns_fd, libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            check(libc::sethostname(hostname.as_ptr().cast(), hostname.len()))?;
            // Nothing mounted here propagates back to the host.
            let none = std::ptr::null();
            check(libc::mount(none, root.as_ptr(), none, libc::MS_REC | libc::MS_PRIVATE, none.cast()))?;
            for (i, (source, ..)) in mounts.iter().enumerate() {
                let fd = libc::open(source.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(io::Error::last_os_error());
                }
                let want = MOUNT_FD + i as libc::c_int;
                if fd != want {
                    if libc::dup3(fd, want, libc::O_CLOEXEC) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
            }
            for (_, by_fd, target, read_only) in &mounts {
                check(libc::mount(
                    by_fd.as_ptr(),
                    target.as_ptr(),
                    none,
                    libc::MS_BIND | libc::MS_REC,
                    none.cast(),
                ))?;
                if *read_only {
                    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                    check(libc::mount(none, target.as_ptr(), none, flags, none.cast()))?;
                }
            }
            if let Some(dir) = &workdir {
                check(libc::chdir(dir.as_ptr()))?;
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(netns);
    child
}

/// Sends `signal` to the process group `pid` leads.
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: kill has no memory-safety preconditions; a group that is gone yields ESRCH.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// A command run inside a running container's namespaces (exec probes and hooks), with the
/// container's environment, through util-linux `nsenter`.
pub fn exec_in(pid: u32, program: &Path, args: &[String], env: &[(String, String)]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg("--target")
        .arg(pid.to_string())
        .args(["--net", "--mount", "--uts", "--"])
        .arg(program)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}
