//! A small file system mounted by a test (as root) on a fresh directory:
//! ext4, xfs or btrfs on a loop-mounted sparse image, or tmpfs. Shared by
//! the full-disk tests (`#[path = "common/mounted.rs"] mod mounted;`).

use std::fs::{self, File};
use std::path::PathBuf;
use std::process::Command;

const MIB: usize = 1 << 20;

/// A small file system mounted on a fresh directory; unmounted (and its
/// loop device detached) on drop.
pub struct Mounted {
    dir: tempfile::TempDir,
    /// Where the file system is mounted.
    pub mount_point: PathBuf,
}

impl Mounted {
    /// Mounts a file system of `kind` (`ext4`, `xfs`, `btrfs` or `tmpfs`;
    /// 32 MiB but for xfs, 320 MiB, and btrfs, 128 MiB), or says why not.
    pub fn make(kind: &str) -> Result<Mounted, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mount_point = dir.path().join("mnt");
        fs::create_dir(&mount_point).map_err(|e| e.to_string())?;
        let run = |program: &str, args: &[&std::ffi::OsStr]| -> Result<(), String> {
            let output = Command::new(program)
                .args(args)
                .output()
                .map_err(|error| format!("cannot run {program}: {error}"))?;
            if output.status.success() {
                Ok(())
            } else {
                let stderr = String::from_utf8_lossy(&output.stderr);
                Err(format!(
                    "{program} failed: {}",
                    stderr.lines().next().unwrap_or("").trim()
                ))
            }
        };
        if kind == "tmpfs" {
            run(
                "mount",
                &[
                    "-t".as_ref(),
                    "tmpfs".as_ref(),
                    "-o".as_ref(),
                    "size=32m".as_ref(),
                    "tmpfs".as_ref(),
                    mount_point.as_os_str(),
                ],
            )?;
        } else {
            // mkfs.xfs refuses less than 300 MB; btrfs needs room for its
            // own metadata. The images are sparse until filled.
            let size = match kind {
                "xfs" => 320 * MIB,
                "btrfs" => 128 * MIB,
                _ => 32 * MIB,
            };
            let image = dir.path().join("fs.img");
            File::create(&image)
                .and_then(|file| file.set_len(size as u64))
                .map_err(|e| e.to_string())?;
            let mkfs = format!("mkfs.{kind}");
            let quiet: &[&str] = match kind {
                "ext4" => &["-q", "-F"],
                "xfs" => &["-q", "-f"],
                _ => &["-q", "-f"],
            };
            let mut args: Vec<&std::ffi::OsStr> = quiet.iter().map(|a| a.as_ref()).collect();
            args.push(image.as_os_str());
            run(&mkfs, &args)?;
            run(
                "mount",
                &[
                    "-o".as_ref(),
                    "loop".as_ref(),
                    image.as_os_str(),
                    mount_point.as_os_str(),
                ],
            )?;
        }
        Ok(Mounted { dir, mount_point })
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
        let _ = &self.dir;
    }
}
