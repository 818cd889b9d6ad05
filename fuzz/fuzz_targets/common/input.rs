//! The fuzz input both targets decode: a byte cursor that reads zeros past the end (so every
//! input, however short, decodes to a whole program). Include with
//! `#[path = "common/input.rs"] mod input;`; each target adds its own decoders in an
//! `impl Input<'_>` block.

/// The fuzzer's bytes and how far they have been read.
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// A cursor at the start of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// The next byte, 0 past the end.
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    /// Every byte has been read.
    pub fn done(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// One of `choices`, picked by the next byte.
    pub fn pick<T: Copy>(&mut self, choices: &[T]) -> T {
        choices[self.byte() as usize % choices.len()]
    }
}
