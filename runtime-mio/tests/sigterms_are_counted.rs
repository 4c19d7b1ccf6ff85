//! Two SIGTERMs before a loop reads its signal pipe: the pipe reports SIGTERM pending once,
//! the counter both (a second SIGTERM must stop a draining relay at once). A process of its
//! own: the signals go to this test binary, which catches them.

use signal_hook::consts::SIGTERM;
use signal_hook::iterator::Signals;
use turnpike::term_count::TermCount;

#[test]
fn two_sigterms_read_at_once_count_two() {
    let mut terms = TermCount::new().expect("a SIGTERM counter");
    let mut pipe = Signals::new([SIGTERM]).expect("a signal pipe");
    // Both delivered (raise runs the handlers before it returns) before anyone reads.
    signal_hook::low_level::raise(SIGTERM).expect("raise");
    signal_hook::low_level::raise(SIGTERM).expect("raise");
    let pending: Vec<i32> = pipe.pending().collect();
    assert_eq!(pending, vec![SIGTERM], "the pipe coalesces");
    assert_eq!(terms.take(), 2, "the counter does not");
    // A later one counts once.
    signal_hook::low_level::raise(SIGTERM).expect("raise");
    assert_eq!(pipe.pending().collect::<Vec<_>>(), vec![SIGTERM]);
    assert_eq!(terms.take(), 1);
}
