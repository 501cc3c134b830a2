//! Whole bodies kept in sealed memory files (memfd), so that the kernel can send them to a
//! socket itself (`sendfile`) instead of copying them out of the edge's memory for every
//! viewer, as nginx sends files from the page cache. The same pages are mapped read-only and
//! handed out as `Bytes` for the paths that need bytes in memory (TLS, HTTP/2, HTTP/3): a body
//! is held once either way.

use std::fs::File;
use std::io::{self, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

/// Bodies at least this long are sealed; shorter ones cost less to copy than to send a file.
pub const THRESHOLD: usize = 32 * 1024;

/// A body in a sealed memory file, and a read-only mapping of it.
#[derive(Debug)]
pub struct Sealed {
    file: File,
    bytes: Bytes,
}

/// Sealed bodies open now: each holds a file descriptor.
static OPEN: AtomicUsize = AtomicUsize::new(0);

/// Raises the soft limit on open files to the hard one, as servers do, and gives the limit
/// then in force.
pub fn raise_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a valid rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// How many bodies may be sealed at once: half the open-file limit, so that sockets always
/// have the other half. Past it, bodies stay in memory as they came.
fn budget() -> usize {
    static BUDGET: OnceLock<usize> = OnceLock::new();
    *BUDGET.get_or_init(|| {
        usize::try_from(raise_file_limit() / 2)
            .unwrap_or(usize::MAX)
            .max(16)
    })
}

/// Takes one of `budget` places counted by `open`, if one is free.
fn reserve(open: &AtomicUsize, budget: usize) -> bool {
    if open.fetch_add(1, Ordering::Relaxed) < budget {
        true
    } else {
        open.fetch_sub(1, Ordering::Relaxed);
        false
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        OPEN.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Sealed {
    /// Writes `pieces` into a new memory file, seals it against any change, and maps it.
    pub fn new(pieces: &[Bytes]) -> io::Result<Sealed> {
        let length: usize = pieces.iter().map(Bytes::len).sum();
        if length == 0 {
            return Err(io::Error::other("an empty body is not sealed"));
        }
        if !reserve(&OPEN, budget()) {
            return Err(io::Error::other(
                "as many bodies are sealed as the open-file limit allows",
            ));
        }
        // From here on, a failure gives the place back.
        struct Reserved(bool);
        impl Drop for Reserved {
            fn drop(&mut self) {
                if !self.0 {
                    OPEN.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        let mut reserved = Reserved(false);
        // SAFETY: the name is a NUL-terminated string; the descriptor returned, if any, is new
        // and owned by the `File` from here on.
        let file = unsafe {
            let fd = libc::memfd_create(
                c"estuary-body".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            File::from_raw_fd(fd)
        };
        let mut writer = &file;
        for piece in pieces {
            writer.write_all(piece)?;
        }
        let seals =
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE | libc::F_SEAL_SEAL;
        // SAFETY: fcntl on a descriptor this function owns.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let mapping = Mapping::new(&file, length)?;
        reserved.0 = true;
        Ok(Sealed {
            file,
            bytes: Bytes::from_owner(mapping),
        })
    }

    /// The whole body, as shared bytes over the mapping.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The memory file, for `sendfile`.
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// A read-only shared mapping of a sealed file: the file can no longer change, so the bytes
/// under it cannot either.
#[derive(Debug)]
struct Mapping {
    address: *mut libc::c_void,
    length: usize,
}

// SAFETY: the mapping is read-only and its contents never change (the file is sealed against
// writes), so it may be read from any thread.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn new(file: &File, length: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh read-only shared mapping of `length` bytes of an open file that is
        // at least that long and sealed against shrinking.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { address, length })
    }
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the mapping is `length` readable bytes until it is dropped.
        unsafe { std::slice::from_raw_parts(self.address.cast::<u8>(), self.length) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped, once.
        unsafe {
            libc::munmap(self.address, self.length);
        }
    }
}

/// Sends up to `count` bytes of `file` from `offset` to the socket `socket` (non-blocking):
/// how many were sent, or `WouldBlock` when the socket is full.
pub fn send_file(
    socket: &impl std::os::fd::AsRawFd,
    file: &File,
    offset: &mut u64,
    count: usize,
) -> io::Result<usize> {
    let mut position = *offset as libc::off_t;
    // SAFETY: two open descriptors and a valid offset pointer; the kernel copies between them.
    let sent =
        unsafe { libc::sendfile(socket.as_raw_fd(), file.as_raw_fd(), &mut position, count) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    *offset = position as u64;
    Ok(sent as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    #[test]
    fn a_sealed_body_reads_back_whole_and_cannot_change() {
        let pieces = [
            Bytes::from_static(b"hello, "),
            Bytes::from(vec![7u8; 100_000]),
        ];
        let sealed = Sealed::new(&pieces).unwrap();
        assert_eq!(sealed.len(), 100_007);
        assert_eq!(&sealed.bytes()[..7], b"hello, ");
        assert!(sealed.bytes()[7..].iter().all(|byte| *byte == 7));
        // Clones of the bytes outlive the `Sealed` itself.
        let bytes = sealed.bytes().slice(5..9);
        let mut file = sealed.file().try_clone().unwrap();
        drop(sealed);
        assert_eq!(&bytes[..], b", \x07\x07");
        assert!(file.write_all(b"x").is_err(), "the seal forbids writes");
        let mut back = Vec::new();
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0)).unwrap();
        file.read_to_end(&mut back).unwrap();
        assert_eq!(back.len(), 100_007);
        assert!(Sealed::new(&[]).is_err());
    }

    #[test]
    fn places_are_taken_within_the_budget_and_given_back() {
        let open = AtomicUsize::new(0);
        assert!(reserve(&open, 2) && reserve(&open, 2));
        assert!(!reserve(&open, 2), "past the budget");
        assert_eq!(open.load(Ordering::Relaxed), 2);
        open.fetch_sub(1, Ordering::Relaxed);
        assert!(reserve(&open, 2), "a place given back is usable again");
        // Sealing counts its files while the body is held (other tests seal at the same time,
        // so only this much can be said of the shared count).
        let sealed = Sealed::new(&[Bytes::from_static(b"x")]).unwrap();
        assert!(OPEN.load(Ordering::Relaxed) >= 1);
        drop(sealed);
    }
}
