//! Two SIGTERMs before a loop reads its signal pipe: the pipe reports SIGTERM pending once,
//! the counter both (a second SIGTERM must stop a draining relay at once). A process of its
//! own: the signals go to this test binary, which catches them.

use signal_hook::consts::SIGTERM;
use signal_hook::iterator::Signals;
use std::sync::Mutex;
use turnpike::term_count::TermCount;

/// The tests raise SIGTERM in one process, which every registered counter sees: one at a
/// time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn two_sigterms_read_at_once_count_two() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
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

/// A pipe wake-up read before the counter moved (the loop read between the two actions of
/// the handler) leaves a delivery counted but unseen: the loop's once-a-second look finds
/// it, and finds nothing twice.
#[test]
fn a_delivery_the_pipe_did_not_report_is_found_by_the_second_look() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut terms = TermCount::new().expect("a SIGTERM counter");
    let _pipe = Signals::new([SIGTERM]).expect("a signal pipe");
    // The first pipe report, taken while the counter still read 0.
    assert_eq!(terms.take(), 1);
    assert_eq!(terms.unseen(), 0, "nothing beyond what take() handed over");
    signal_hook::low_level::raise(SIGTERM).expect("raise");
    // That delivery was the one take() already handed over.
    assert_eq!(terms.unseen(), 0);
    // A second delivery whose pipe report was merged into the first.
    signal_hook::low_level::raise(SIGTERM).expect("raise");
    assert_eq!(terms.unseen(), 1, "the second delivery");
    assert_eq!(terms.unseen(), 0, "counted once");
}
