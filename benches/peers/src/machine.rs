//! The machine the run measured (CPU, memory, kernel, the data directory's filesystem and disk), and the refusal
//! to measure on a filesystem in memory.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Result, bail};

/// `statfs` magic numbers of filesystems that live in memory.
const MEMORY_FS: [(i64, &str); 2] = [(0x0102_1994, "tmpfs"), (0x8584_58f6, "ramfs")];

/// The name of the in-memory filesystem with this `statfs` magic, if it is one.
pub fn memory_fs_name(magic: i64) -> Option<&'static str> {
    MEMORY_FS.iter().find(|(m, _)| *m == magic).map(|(_, n)| *n)
}

/// The filesystem type and mount point holding `path` according to `/proc/mounts` text (the longest mount point
/// that is a prefix of the canonical path).
pub fn mount_of(path: &Path, mounts: &str) -> Option<(String, String, String)> {
    let mut best: Option<(String, String, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [device, point, fstype, options, ..] = f[..] else {
            continue;
        };
        // Octal escapes for spaces and the like.
        let point = point.replace("\\040", " ");
        if path.starts_with(&point) && best.as_ref().is_none_or(|b| point.len() >= b.0.len()) {
            best = Some((point, fstype.to_owned(), format!("{device} ({options})")));
        }
    }
    best
}

/// Fails with a clear message if `dir` is on tmpfs or ramfs (by `statfs`, and by `/proc/mounts`).
pub fn refuse_memory_fs(dir: &Path) -> Result<()> {
    let c = CString::new(dir.as_os_str().as_bytes())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        bail!(
            "statfs({}): {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
    }
    if let Some(name) = memory_fs_name(st.f_type as i64) {
        bail!(
            "the data directory {} is on {name}: this benchmark measures durability and needs a real disk; pass --dir on one",
            dir.display()
        );
    }
    if let Ok(mounts) = std::fs::read_to_string("/proc/mounts")
        && let Some((point, fstype, _)) = mount_of(&dir.canonicalize()?, &mounts)
        && (fstype == "tmpfs" || fstype == "ramfs")
    {
        bail!(
            "the data directory {} is on {fstype} (mounted at {point}): pass --dir on a real disk",
            dir.display()
        );
    }
    Ok(())
}

/// Lines describing the machine, as (what, value).
pub fn describe(dir: &Path, disk_name: Option<&str>) -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = read("/proc/meminfo");
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let mut out = vec![
        ("CPU".to_owned(), format!("{cpu}, {cores} cores available")),
        (
            "memory".to_owned(),
            format!("{:.1} GiB", mem_kib as f64 / (1 << 20) as f64),
        ),
        ("kernel".to_owned(), format!("Linux {kernel}")),
    ];
    let canonical = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    if let Some((point, fstype, device)) = mount_of(&canonical, &read("/proc/mounts")) {
        out.push((
            "data directory".to_owned(),
            format!("{fstype} at {point}, {device}"),
        ));
    }
    if let Some(name) = disk_name {
        let q = |f: &str| {
            read(&format!("/sys/block/{name}/queue/{f}"))
                .trim()
                .to_owned()
        };
        out.push((
            "disk".to_owned(),
            format!(
                "`{name}`: write_cache = {}, fua = {}, rotational = {}",
                q("write_cache"),
                q("fua"),
                q("rotational")
            ),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_and_ramfs_are_memory() {
        assert_eq!(memory_fs_name(0x0102_1994), Some("tmpfs"));
        assert_eq!(memory_fs_name(0x8584_58f6), Some("ramfs"));
        assert_eq!(memory_fs_name(0xEF53), None); // ext4
    }

    #[test]
    fn the_longest_mount_point_wins() {
        let mounts = "/dev/vda / ext4 rw,relatime 0 0\n\
                      tmpfs /tmp tmpfs rw,nosuid 0 0\n\
                      /dev/vdb /tmp/disk\\040two xfs rw 0 0\n";
        assert_eq!(mount_of(Path::new("/work/x"), mounts).unwrap().1, "ext4");
        assert_eq!(mount_of(Path::new("/tmp/a/b"), mounts).unwrap().1, "tmpfs");
        assert_eq!(
            mount_of(Path::new("/tmp/disk two/d"), mounts).unwrap().1,
            "xfs"
        );
        // A mount point is a path prefix, not a string prefix.
        assert_eq!(mount_of(Path::new("/tmpx"), mounts).unwrap().1, "ext4");
    }

    #[test]
    fn a_real_directory_here_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        let on_tmpfs =
            mount_of(&dir.path().canonicalize().unwrap(), &mounts).is_some_and(|m| m.1 == "tmpfs");
        assert_eq!(refuse_memory_fs(dir.path()).is_err(), on_tmpfs);
        if Path::new("/dev/shm").exists() {
            let shm_is_tmpfs =
                mount_of(Path::new("/dev/shm"), &mounts).is_some_and(|m| m.1 == "tmpfs");
            assert_eq!(
                refuse_memory_fs(Path::new("/dev/shm")).is_err(),
                shm_is_tmpfs
            );
        }
    }
}
