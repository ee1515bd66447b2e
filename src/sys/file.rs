//! Questions about the file behind a path, asked before anything is written
//! to it: is it a file a region may live in, which inode is it, and fresh
//! random bytes for a new file's identity. No `unsafe` here; it sits under
//! `sys` because it is the boundary to the kernel.

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::OFlags;

/// Magic numbers (`statfs.f_type`) of file systems whose files are not
/// storage: writing to them talks to the kernel. A region is never made
/// there, even when the file is "regular" and empty (`/proc`, `/sys`).
const PSEUDO_FILE_SYSTEMS: [(i64, &str); 10] = [
    (0x9fa0, "procfs"),
    (0x6265_6572, "sysfs"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroupfs"),
    (0x6367_7270, "cgroup2fs"),
    (0xcafe_4a11, "bpffs"),
    (0x6265_6570, "configfs"),
    (0xde5e_81e4, "efivarfs"),
];

/// Why a path cannot hold a region, in words for an error message ("a
/// directory", "a file on procfs"); `None` for a regular file.
pub(crate) fn unsuitable_kind(metadata: &Metadata) -> Option<&'static str> {
    let kind = metadata.file_type();
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

/// What is wrong with opening `path` as a region file.
#[derive(Debug)]
pub(crate) enum OpenRefused {
    /// The path names something that is not a regular file on a storage
    /// file system; the words say what it is.
    Unsuitable(&'static str),
    /// A system call failed.
    Io(&'static str, io::Error),
}

/// A region file, opened.
pub(crate) struct Opened {
    pub file: File,
    /// True when the path named nothing before: the caller removes what it
    /// created if it cannot make a region of it.
    pub created: bool,
}

/// Opens `path` (read-write and created if missing when `write`, else
/// read-only) after making sure it is a regular file on a storage file
/// system: nothing else is opened for writing, and nothing is written to it
/// here. Opening never blocks (a FIFO is refused, not waited on).
pub(crate) fn open_regular(path: &Path, write: bool) -> Result<Opened, OpenRefused> {
    // Refused before `open` when possible: opening a device or a FIFO can
    // have effects of its own.
    let created = match std::fs::metadata(path) {
        Ok(metadata) => {
            if let Some(kind) = unsuitable_kind(&metadata) {
                return Err(OpenRefused::Unsuitable(kind));
            }
            false
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound && write => true,
        // Reported as the open it stands for ("no such file").
        Err(error) => return Err(OpenRefused::Io("open", error)),
    };
    let file = OpenOptions::new()
        .read(true)
        .write(write)
        .create(write)
        .truncate(false)
        .custom_flags((OFlags::NONBLOCK | OFlags::NOCTTY).bits() as i32)
        .open(path)
        .map_err(|error| OpenRefused::Io("open", error))?;
    // The path may have changed between the two looks: ask the open file.
    let metadata = file
        .metadata()
        .map_err(|error| OpenRefused::Io("stat", error))?;
    if let Some(kind) = unsuitable_kind(&metadata) {
        return Err(OpenRefused::Unsuitable(kind));
    }
    let statfs =
        rustix::fs::fstatfs(&file).map_err(|error| OpenRefused::Io("statfs", error.into()))?;
    #[allow(clippy::unnecessary_cast)] // `f_type`'s type differs between targets
    let magic = statfs.f_type as i64;
    if let Some((_, name)) = PSEUDO_FILE_SYSTEMS.iter().find(|(m, _)| *m == magic) {
        return Err(OpenRefused::Unsuitable(match *name {
            "procfs" => "a file on procfs",
            "sysfs" => "a file on sysfs",
            _ => "a file on a kernel pseudo file system",
        }));
    }
    // Non-blocking was for the open only.
    let flags =
        rustix::fs::fcntl_getfl(&file).map_err(|error| OpenRefused::Io("fcntl", error.into()))?;
    rustix::fs::fcntl_setfl(&file, flags - OFlags::NONBLOCK)
        .map_err(|error| OpenRefused::Io("fcntl", error.into()))?;
    Ok(Opened { file, created })
}

/// `statfs.f_type` of btrfs.
const BTRFS_MAGIC: i64 = 0x9123_683e;

/// Turns copy-on-write off for an empty file on btrfs (the `FS_NOCOW_FL`
/// attribute, `chattr +C`): with it on, every store into a page already
/// written needs new blocks, so a full disk would fault on a `free`'s tag
/// store. True if the file is on btrfs and now has the attribute; false on
/// other file systems (nothing to do). The attribute only takes effect on
/// an empty file, so this is called before the first byte is written.
pub(crate) fn no_copy_on_write(file: &File) -> io::Result<bool> {
    if !on_btrfs(file)? {
        return Ok(false);
    }
    let flags = rustix::fs::ioctl_getflags(file)?;
    rustix::fs::ioctl_setflags(file, flags | rustix::fs::IFlags::NOCOW)?;
    Ok(true)
}

/// Whether `file` is on btrfs, where the region also writes with `pwrite`
/// instead of storing through its mapping (`Mapping::set_pwrite_stores`).
pub(crate) fn on_btrfs(file: &File) -> io::Result<bool> {
    let statfs = rustix::fs::fstatfs(file)?;
    #[allow(clippy::unnecessary_cast)] // `f_type`'s type differs between targets
    Ok(statfs.f_type as i64 == BTRFS_MAGIC)
}

/// Whether a read fault on a punched page of `file` is served without
/// allocating anything from its file system: true on ext4, xfs and btrfs
/// (a page of zeros in the page cache, no blocks), which a reader may then
/// read through its mapping. Elsewhere such a fault may need space there,
/// and on a full file system it is a SIGBUS: on tmpfs (the page is the
/// file's memory), and on an overlay whose upper layer is tmpfs, which
/// reports itself as overlayfs but maps the tmpfs file; readers there copy
/// with `pread` (a hole reads as zeros).
pub(crate) fn maps_holes_without_allocating(file: &File) -> io::Result<bool> {
    const EXT4_MAGIC: i64 = 0xEF53;
    const XFS_MAGIC: i64 = 0x5846_5342;
    #[allow(clippy::unnecessary_cast)] // `f_type`'s type differs between targets
    let kind = rustix::fs::fstatfs(file)?.f_type as i64;
    Ok(matches!(kind, EXT4_MAGIC | XFS_MAGIC | BTRFS_MAGIC))
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`, a UUID), or `None`
/// when it cannot be read: then no file is ever taken to come from this
/// boot.
pub(crate) fn boot_id() -> Option<[u8; 16]> {
    super::fault::check(super::fault::Call::BootId).ok()?;
    static BOOT_ID: std::sync::OnceLock<Option<[u8; 16]>> = std::sync::OnceLock::new();
    *BOOT_ID.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        let hex: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
        if hex.len() != 32 {
            return None;
        }
        let mut id = [0u8; 16];
        for (byte, pair) in id.iter_mut().zip(hex.chunks_exact(2)) {
            *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
        }
        (id != [0; 16]).then_some(id)
    })
}

/// Which inode a file is: its device and inode numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inode {
    dev: u64,
    ino: u64,
}

impl Inode {
    /// The inode of an open file.
    pub(crate) fn of(file: &File) -> io::Result<Inode> {
        Ok(Inode::from_metadata(&file.metadata()?))
    }

    /// The inode `path` names now (following symbolic links).
    pub(crate) fn at(path: &Path) -> io::Result<Inode> {
        Ok(Inode::from_metadata(&std::fs::metadata(path)?))
    }

    fn from_metadata(metadata: &Metadata) -> Inode {
        Inode {
            dev: metadata.dev(),
            ino: metadata.ino(),
        }
    }
}

/// Eight bytes from the kernel's random number generator, never all zero
/// (zero means "no identity" in the format).
pub(crate) fn random_nonzero_u64() -> io::Result<u64> {
    loop {
        let mut bytes = [0u8; 8];
        let mut filled = 0;
        while filled < bytes.len() {
            filled += rustix::rand::getrandom(
                &mut bytes[filled..],
                rustix::rand::GetRandomFlags::empty(),
            )?;
        }
        let value = u64::from_le_bytes(bytes);
        if value != 0 {
            return Ok(value);
        }
    }
}
