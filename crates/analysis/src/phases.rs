//! Phase marks: the heap analyses say when each of their phases begins, so that a caller
//! with a clock (`dumpwatch analyze --timings`) can tell where the time goes. The library
//! itself reads no clock.

/// Told when each phase of an analysis begins (and so the previous one ends).
pub trait Phases {
    /// `name` begins now.
    fn begin(&mut self, name: &'static str);
}

/// Nobody is watching.
impl Phases for () {
    fn begin(&mut self, _: &'static str) {}
}
