//! A growable text buffer that wipes what it leaves behind.
//!
//! Guarantees: when the buffer outgrows its allocation it copies into a larger one and zeroizes
//! the old one before freeing it (a plain `String` would free the old bytes as they are), and it
//! zeroizes its contents on drop unless they were handed out with [`Buf::into_zeroizing`]. Every
//! byte a render writes goes through one of these, so rendered secrets are not scattered across
//! freed heap blocks.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

#[derive(Default)]
pub(crate) struct Buf {
    s: String,
}

impl Buf {
    pub(crate) fn new() -> Self {
        Buf { s: String::new() }
    }

    fn reserve(&mut self, more: usize) {
        let need = self.s.len().saturating_add(more);
        if need <= self.s.capacity() {
            return;
        }
        let mut bigger = String::with_capacity(need.max(self.s.capacity() * 2).max(64));
        bigger.push_str(&self.s);
        self.s.zeroize();
        self.s = bigger;
    }

    pub(crate) fn push_str(&mut self, s: &str) {
        self.reserve(s.len());
        self.s.push_str(s);
    }

    pub(crate) fn push(&mut self, c: char) {
        self.reserve(c.len_utf8());
        self.s.push(c);
    }

    pub(crate) fn repeat(&mut self, c: char, n: usize) {
        self.reserve(c.len_utf8().saturating_mul(n));
        self.s.extend(std::iter::repeat_n(c, n));
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.s
    }

    pub(crate) fn len(&self) -> usize {
        self.s.len()
    }

    /// Hands the contents out in a wrapper that wipes them on drop.
    pub(crate) fn into_zeroizing(mut self) -> Zeroizing<String> {
        Zeroizing::new(std::mem::take(&mut self.s))
    }

    /// Hands the contents out as a template string value (also wiped on drop).
    pub(crate) fn into_text(mut self) -> crate::value::Text {
        crate::value::text(std::mem::take(&mut self.s))
    }
}

impl fmt::Write for Buf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        self.s.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growing_keeps_the_contents() {
        let mut b = Buf::new();
        for i in 0..1000 {
            b.push_str(&i.to_string());
            b.push(',');
        }
        assert!(b.as_str().starts_with("0,1,2,"));
        assert!(b.as_str().ends_with("998,999,"));
        assert_eq!(b.into_zeroizing().len(), 3890);
    }
}
