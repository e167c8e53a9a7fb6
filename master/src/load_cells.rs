//! Which load board cell each running worker owns (see
//! `prefork_shared::load_board`): one per worker process, from its start
//! until the master reaps it, so that two workers never share one, whatever
//! their slots and generations.

use prefork_shared::load_board::{LoadBoard, CELLS, NOT_ACCEPTING};

/// The board and the cells taken on it.
pub struct LoadCells {
    board: LoadBoard,
    taken: Vec<bool>,
}

impl LoadCells {
    /// Cells of `board`, all free.
    pub fn new(board: LoadBoard) -> Self {
        LoadCells {
            board,
            taken: vec![false; CELLS],
        }
    }

    /// The board workers inherit.
    pub fn board(&self) -> &LoadBoard {
        &self.board
    }

    /// Takes the lowest free cell, marked as not accepting until its worker
    /// says otherwise; `None` when every cell is taken.
    pub fn assign(&mut self) -> Option<usize> {
        let cell = self.taken.iter().position(|taken| !taken)?;
        self.taken[cell] = true;
        self.board.set(cell, NOT_ACCEPTING);
        self.update_in_use();
        Some(cell)
    }

    /// Frees `cell` of a worker that is gone. Its last count would mislead
    /// the others (a crashed worker cannot clear it itself).
    pub fn release(&mut self, cell: usize) {
        if let Some(taken) = self.taken.get_mut(cell) {
            *taken = false;
            self.board.set(cell, NOT_ACCEPTING);
            self.update_in_use();
        }
    }

    fn update_in_use(&self) {
        let in_use = self.taken.iter().rposition(|&t| t).map_or(0, |i| i + 1);
        self.board.set_in_use(in_use);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_are_unique_reused_lowest_first_and_cleared() {
        let mut cells = LoadCells::new(LoadBoard::create().unwrap());
        let (a, b, c) = (cells.assign(), cells.assign(), cells.assign());
        assert_eq!((a, b, c), (Some(0), Some(1), Some(2)));
        assert_eq!(cells.board().in_use(), 3);
        // A worker publishes a count, then dies: the master clears it.
        cells.board().set(1, 42);
        cells.release(1);
        assert_eq!(cells.board().get(1), NOT_ACCEPTING);
        assert_eq!(cells.board().in_use(), 3);
        assert_eq!(cells.assign(), Some(1));
        cells.release(2);
        cells.release(1);
        assert_eq!(cells.board().in_use(), 1);
    }

    #[test]
    fn a_full_board_assigns_nothing() {
        let mut cells = LoadCells::new(LoadBoard::create().unwrap());
        for expected in 0..CELLS {
            assert_eq!(cells.assign(), Some(expected));
        }
        assert_eq!(cells.assign(), None);
        cells.release(CELLS - 1);
        assert_eq!(cells.assign(), Some(CELLS - 1));
    }
}
