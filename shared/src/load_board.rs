//! The load board: how many client connections each worker has open, in one
//! small shared memory file the master creates and every worker maps.
//!
//! With one shared listening socket the kernel wakes every worker waiting in
//! accept and the first to call it wins, so a burst of connections can land
//! mostly on one worker, which then serves them all for as long as they stay
//! open. A worker that sees on the board that it holds clearly more than
//! another accepting worker leaves new connections to that one for a moment
//! (nginx's `accept_mutex` serves the same end, with a lock).
//!
//! The board holds [`CELLS`] cells of one cache line each; the master assigns
//! a free one to each worker it starts, and marks it [`NOT_ACCEPTING`] when
//! the worker is gone. A worker's cell follows its descriptor: right after
//! its listeners (see [`crate::fds`]), its index in [`LOAD_CELL_ENV`].

use memmap2::MmapRaw;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// Environment variable holding the index of a worker's cell.
pub const LOAD_CELL_ENV: &str = "PREFORK_LOAD_CELL";

/// Cells on a board: room for every worker of a few generations at once. A
/// worker started while all are taken gets none and accepts as if alone.
pub const CELLS: usize = 1024;

/// A cell's value while no accepting worker owns it.
pub const NOT_ACCEPTING: u32 = u32::MAX;

/// One cache line per cell, so that a worker's writes do not slow down the
/// reads of other cells. The first line is the header.
const LINE: usize = 64;

/// Board size in bytes: the header, then the cells.
const SIZE: usize = LINE * (CELLS + 1);

/// The size of a board file, in bytes.
pub const BOARD_BYTES: u64 = SIZE as u64;

/// Why a board could not be created or mapped.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// `memfd_create` failed.
    #[error("cannot create the load board: {0}")]
    Create(#[source] io::Error),
    /// Sizing or mapping the file failed.
    #[error("cannot map the load board: {0}")]
    Map(#[source] io::Error),
    /// The file is not a board (wrong size).
    #[error("the load board has {0} bytes, not {SIZE}")]
    Size(u64),
}

/// A mapped load board.
pub struct LoadBoard {
    file: File,
    map: MmapRaw,
}

impl LoadBoard {
    /// A new board, every cell [`NOT_ACCEPTING`], in an anonymous
    /// close-on-exec memory file sealed at its size.
    pub fn create() -> Result<LoadBoard, BoardError> {
        use nix::errno::Errno;
        use nix::fcntl::{fcntl, FcntlArg, SealFlag};
        use nix::sys::memfd::{memfd_create, MFdFlags};
        const NAME: &str = "prefork-load-board";
        let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
        // With vm.memfd_noexec=2 the kernel refuses a memory file that could
        // become executable; kernels before 6.3 do not know the flag.
        let no_exec = MFdFlags::from_bits_retain(libc::MFD_NOEXEC_SEAL);
        let fd = memfd_create(NAME, flags | no_exec)
            .or_else(|e| match e {
                Errno::EINVAL => memfd_create(NAME, flags),
                e => Err(e),
            })
            .map_err(|e| BoardError::Create(e.into()))?;
        let file = File::from(fd);
        file.set_len(SIZE as u64).map_err(BoardError::Map)?;
        // A worker (perhaps running as another user) holds the descriptor
        // too: were it to shrink the file, the master's next write to its
        // map would fault (SIGBUS) and take every worker down with it.
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&file, FcntlArg::F_ADD_SEALS(seals)).map_err(|e| BoardError::Map(e.into()))?;
        let board = LoadBoard::open(file)?;
        for cell in 0..CELLS {
            board.set(cell, NOT_ACCEPTING);
        }
        Ok(board)
    }

    /// Maps the board in `file` (one the master created).
    pub fn open(file: File) -> Result<LoadBoard, BoardError> {
        let len = file.metadata().map_err(BoardError::Map)?.len();
        if len != SIZE as u64 {
            return Err(BoardError::Size(len));
        }
        let map = MmapRaw::map_raw(&file).map_err(BoardError::Map)?;
        Ok(LoadBoard { file, map })
    }

    /// The descriptor workers inherit.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Sets cell `index` (ignored past the last cell).
    pub fn set(&self, index: usize, value: u32) {
        if let Some(cell) = self.cell(index) {
            cell.store(value, Ordering::Relaxed);
        }
    }

    /// Reads cell `index` ([`NOT_ACCEPTING`] past the last cell).
    pub fn get(&self, index: usize) -> u32 {
        self.cell(index)
            .map_or(NOT_ACCEPTING, |c| c.load(Ordering::Relaxed))
    }

    /// Sets how many cells from the first may be in use (the master keeps
    /// it past the highest cell it assigned, so readers scan no further).
    pub fn set_in_use(&self, cells: usize) {
        self.word(0)
            .store(cells.min(CELLS) as u32, Ordering::Relaxed);
    }

    /// How many cells from the first may be in use.
    pub fn in_use(&self) -> usize {
        (self.word(0).load(Ordering::Relaxed) as usize).min(CELLS)
    }

    fn cell(&self, index: usize) -> Option<&AtomicU32> {
        (index < CELLS).then(|| self.word(LINE * (index + 1)))
    }

    /// The 32-bit word at byte `offset`: 0 or a cell's (multiples of
    /// [`LINE`] below [`SIZE`]).
    fn word(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset < SIZE);
        // SAFETY: the map is SIZE bytes (checked in `open`; the master's
        // file is sealed at that size), page-aligned, and lives as long as
        // `self`; offset is in bounds and 4-aligned.
        // Other processes write it only through atomics of the same size,
        // and nothing here ever takes a plain reference to its bytes.
        unsafe { &*self.map.as_mut_ptr().add(offset).cast::<AtomicU32>() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_maps_of_one_board_see_each_others_writes() {
        let master = LoadBoard::create().unwrap();
        let worker = LoadBoard::open(master.file.try_clone().unwrap()).unwrap();
        assert_eq!(worker.get(0), NOT_ACCEPTING);
        assert_eq!(worker.get(CELLS - 1), NOT_ACCEPTING);
        worker.set(3, 17);
        assert_eq!(master.get(3), 17);
        master.set_in_use(4);
        assert_eq!(worker.in_use(), 4);
        // The header is not a cell: setting the count leaves cell 0 alone.
        assert_eq!(worker.get(0), NOT_ACCEPTING);
    }

    #[test]
    fn indexes_past_the_board_are_ignored() {
        let board = LoadBoard::create().unwrap();
        board.set(CELLS, 5);
        assert_eq!(board.get(CELLS), NOT_ACCEPTING);
        board.set_in_use(CELLS + 10);
        assert_eq!(board.in_use(), CELLS);
    }

    #[test]
    fn a_file_of_another_size_is_refused() {
        let file = tempfile::tempfile().unwrap();
        file.set_len(100).unwrap();
        assert!(matches!(LoadBoard::open(file), Err(BoardError::Size(100))));
    }

    #[test]
    fn the_board_cannot_be_resized() {
        let board = LoadBoard::create().unwrap();
        assert!(board.file.set_len(0).is_err());
        assert!(board.file.set_len(2 * SIZE as u64).is_err());
        assert_eq!(board.file.metadata().unwrap().len(), SIZE as u64);
    }
}
