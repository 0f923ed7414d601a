//! Two pieces of control-side work at once: [`both`] runs the second on a thread of its own
//! while the first runs on the caller's thread, and returns both results.
//!
//! Contract: the thread is made from the caller's, so it inherits the caller's CPU mask
//! (`podswitch run` keeps its control threads off the workers' cores): work run here uses the
//! control cores, never a worker core. A panic in the second piece is resumed in the caller.
//! With `side_by_side` false both run one after the other on the caller's thread (for small
//! changes, where making a thread would cost more than it saves).

/// `(a(), b())`, with `b` on a thread of its own when `side_by_side`.
pub fn both<A, B: Send>(side_by_side: bool, a: impl FnOnce() -> A, b: impl FnOnce() -> B + Send) -> (A, B) {
    if !side_by_side {
        return (a(), b());
    }
    std::thread::scope(|s| {
        let other = s.spawn(b);
        let a = a();
        let b = other.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
        (a, b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_pieces_run_and_side_by_side_the_second_on_another_thread() {
        let here = std::thread::current().id();
        for side_by_side in [false, true] {
            let (a, (b, there)) = both(side_by_side, || 1 + 1, || (2 * 3, std::thread::current().id()));
            assert_eq!((a, b), (2, 6));
            assert_eq!(there != here, side_by_side);
        }
    }

    #[test]
    #[should_panic(expected = "the second piece failed")]
    fn a_panic_of_the_second_piece_is_the_callers() {
        let _ = both(true, || (), || panic!("the second piece failed"));
    }
}
