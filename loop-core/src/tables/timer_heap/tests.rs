extern crate std;
use super::*;
use crate::raw::zeroed::zeroed;
use std::vec::Vec;

fn at(n: u64) -> Instant {
    Instant::from_nanos(n)
}

/// The largest table without a wheel, and one just large enough to have one: tests that
/// pin behaviour (not layout) run at both, so the heap-only mode and the wheel keep the same
/// coverage.
const SMALL: usize = WHEEL_ABOVE;
const LARGE: usize = WHEEL_ABOVE + 8;

/// The timers in the wheel as a table of `T` should hold them: `with_wheel` if it has a wheel,
/// none if it has not.
fn assert_wheel<const T: usize>(h: &TimerHeap<u32, T>, with_wheel: impl FnOnce(u32) -> bool) {
    if TimerHeap::<u32, T>::WHEEL {
        let n = h.wheel_len();
        assert!(with_wheel(n), "a table of {T} with a wheel holds {n} there");
    } else {
        assert_eq!(h.wheel_len(), 0, "a table of {T} has no wheel");
    }
}

/// Where the waiting timers are, as a table of `T` should hold them: `heap` in the heap and
/// `run` in the run if it has a run, all in the heap if it has none.
fn assert_layout<const T: usize>(h: &TimerHeap<u32, T>, heap: u32, run: u32) {
    if TimerHeap::<u32, T>::RUN {
        assert_eq!(
            (h.len, h.run_len),
            (heap, run),
            "(heap, run) in a table of {T}"
        );
    } else {
        assert_eq!(
            (h.len, h.run_len),
            (heap + run, 0),
            "a table of {T} has no run"
        );
    }
}

fn drain<const T: usize>(h: &mut TimerHeap<u32, T>, now: u64) -> Vec<u32> {
    let mut out = Vec::new();
    while let Some((handle, f, _)) = h.pop_due(at(now), u64::MAX) {
        out.push(f);
        h.finish(handle, f, Next::Done);
    }
    out
}

#[test]
fn fires_in_deadline_order_and_fifo_among_equal_deadlines() {
    let mut h: TimerHeap<u32, 16> = zeroed();
    for (i, d) in [(1, 50), (2, 10), (3, 50), (4, 10), (5, 30), (6, 50)] {
        h.insert(at(d), i).unwrap();
    }
    assert_eq!(drain(&mut h, 100), [2, 4, 5, 1, 3, 6]);
}

#[test]
fn not_due_timers_stay() {
    let mut h: TimerHeap<u32, 4> = zeroed();
    h.insert(at(10), 1).unwrap();
    h.insert(at(20), 2).unwrap();
    assert_eq!(drain(&mut h, 15), [1]);
    assert_eq!(h.peek_deadline(), Some(at(20)));
}

#[test]
fn cancel_removes_for_real_and_stale_cancel_is_a_noop() {
    let mut h: TimerHeap<u32, 4> = zeroed();
    let a = h.insert(at(10), 1).unwrap();
    let b = h.insert(at(20), 2).unwrap();
    assert_eq!(h.cancel(a).removed(), Some(1));
    assert_eq!(h.cancel(a).removed(), None);
    assert_eq!(h.len(), 1);
    let c = h.insert(at(5), 3).unwrap(); // reuses a's slot
    assert_eq!(
        h.cancel(a).removed(),
        None,
        "stale handle must not cancel the slot's new timer"
    );
    assert!(h.is_pending(c));
    assert_eq!(drain(&mut h, 100), [3, 2]);
    assert_eq!(
        h.cancel(b).removed(),
        None,
        "cancelling a fired timer is a no-op"
    );
}

/// A `u32` "closure" built in place, as the loop builds its timers.
#[derive(Debug, PartialEq)]
struct Put(u32);

// SAFETY: `init` writes the slot (a plain write: it cannot unwind).
unsafe impl InitInPlace<u32> for Put {
    fn init(self, slot: &mut MaybeUninit<u32>) {
        slot.write(self.0);
    }
}

#[test]
fn built_in_place_timers_keep_fifo_order_and_a_full_table_hands_the_builder_back_unrun() {
    let mut h: TimerHeap<u32, 3> = zeroed();
    let a = h.insert_in_place(at(5), Put(1), true).unwrap();
    h.insert_in_place(at(5), Put(2), false).unwrap();
    h.insert(at(2), 3).unwrap();
    assert_eq!(h.insert_in_place(at(1), Put(4), true), Err(Put(4)));
    assert_eq!(
        h.cancel(a).removed(),
        Some(1),
        "needs-drop kept: handed back"
    );
    h.insert_in_place(at(5), Put(5), true).unwrap();
    assert_eq!(drain(&mut h, 10), [3, 2, 5]);
    // Emptied: built from slot 0 again, under a new generation.
    let b = h.insert_in_place(at(1), Put(6), true).unwrap();
    assert_ne!(a, b);
    assert!(!h.is_pending(a));
    assert_eq!(drain(&mut h, 10), [6]);
}

#[test]
fn full_heap_hands_the_closure_back() {
    let mut h: TimerHeap<u32, 2> = zeroed();
    h.insert(at(1), 1).unwrap();
    h.insert(at(1), 2).unwrap();
    assert_eq!(h.insert(at(1), 3), Err(3));
}

#[test]
fn timers_added_after_the_limit_wait_for_the_next_round() {
    let mut h: TimerHeap<u32, 4> = zeroed();
    h.insert(at(10), 1).unwrap();
    let limit = h.next_seq();
    h.insert(at(0), 2).unwrap();
    assert!(
        h.pop_due(at(100), limit).is_none(),
        "the newer head blocks this round"
    );
    assert_eq!(drain(&mut h, 100), [2, 1]);
}

#[test]
fn reset_moves_a_timer_and_reorders_it_after_equal_deadlines() {
    let mut h: TimerHeap<u32, 8> = zeroed();
    let a = h.insert(at(10), 1).unwrap();
    h.insert(at(30), 2).unwrap();
    assert!(h.reset(a, at(30)));
    assert_eq!(drain(&mut h, 100), [2, 1]);
    assert!(!h.reset(a, at(1)), "fired timer cannot be reset");
}

#[test]
fn running_timer_can_rearm_or_be_cancelled_under_the_same_handle() {
    let mut h: TimerHeap<u32, 4> = zeroed();
    let a = h.insert(at(10), 7).unwrap();
    let (ha, f, d) = h.pop_due(at(10), u64::MAX).unwrap();
    assert_eq!((ha, f, d), (a, 7, at(10)));
    assert!(h.is_pending(a));
    assert!(h.finish(ha, f, Next::At(at(20))).is_none());
    assert_eq!(h.peek_deadline(), Some(at(20)));
    let (ha, f, _) = h.pop_due(at(20), u64::MAX).unwrap();
    assert_eq!(h.cancel(ha).removed(), None);
    assert!(!h.is_pending(a));
    assert_eq!(
        h.finish(ha, f, Next::At(at(30))),
        Some(7),
        "cancelled while running: freed"
    );
    assert_eq!(h.len(), 0);
}

#[test]
fn many_random_operations_keep_the_heap_ordered() {
    let mut h: TimerHeap<u32, 512> = zeroed();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut live = Vec::new();
    for i in 0..5000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 3 {
            0 | 1 if h.len() < 512 => live.push(h.insert(at(x % 1000), i).unwrap()),
            _ if !live.is_empty() => {
                let k = (x as usize / 3) % live.len();
                let victim = live.swap_remove(k);
                if x.is_multiple_of(2) {
                    assert!(h.cancel(victim).removed().is_some());
                } else {
                    assert!(h.reset(victim, at(x % 977)));
                    live.push(victim);
                }
            }
            _ => {}
        }
    }
    let mut last = 0;
    let mut n = 0;
    while let Some((handle, f, d)) = h.pop_due(Instant::MAX, u64::MAX) {
        assert!(d.as_nanos() >= last);
        last = d.as_nanos();
        h.finish(handle, f, Next::Done);
        n += 1;
    }
    assert_eq!(n, live.len());
}

#[test]
fn equal_delay_timers_go_to_the_run_and_fire_fifo() {
    equal_delays::<16>();
    equal_delays::<LARGE>();
}

fn equal_delays<const T: usize>() {
    let mut h: TimerHeap<u32, T> = zeroed();
    let hs: Vec<_> = (0..6u32)
        .map(|i| h.insert(at(100 + u64::from(i / 2)), i).unwrap())
        .collect();
    // Non-decreasing deadlines are all appended to the run.
    assert_layout(&h, 0, 6);
    assert_eq!(h.scheduled(), 6);
    assert!(
        h.cancel(hs[2]).removed().is_some(),
        "unlinked from the middle of the run"
    );
    assert!(
        h.reset(hs[0], at(102)),
        "re-armed to the tail, behind equal deadlines"
    );
    assert_layout(&h, 0, 5);
    assert_eq!(drain(&mut h, 1000), [1, 3, 4, 5, 0]);
}

#[test]
fn run_and_heap_merge_in_deadline_then_sequence_order() {
    run_and_heap::<16>();
    run_and_heap::<LARGE>();
}

fn run_and_heap<const T: usize>() {
    let mut h: TimerHeap<u32, T> = zeroed();
    h.insert(at(50), 1).unwrap(); // run
    h.insert(at(60), 2).unwrap(); // run
    h.insert(at(50), 3).unwrap(); // heap: before the run's tail, equal to its head
    h.insert(at(10), 4).unwrap(); // heap
    h.insert(at(60), 5).unwrap(); // run, equal to its tail
    h.insert(at(55), 6).unwrap(); // heap
    assert_layout(&h, 3, 3);
    assert_eq!(h.peek_deadline(), Some(at(10)));
    assert_eq!(drain(&mut h, 1000), [4, 1, 3, 6, 2, 5]);
}

#[test]
fn run_member_reset_earlier_moves_into_the_heap() {
    reset_earlier::<8>();
    reset_earlier::<LARGE>();
}

fn reset_earlier<const T: usize>() {
    let mut h: TimerHeap<u32, T> = zeroed();
    let a = h.insert(at(10), 1).unwrap();
    h.insert(at(20), 2).unwrap();
    assert!(h.reset(a, at(30)));
    let b = h.insert(at(40), 3).unwrap();
    assert!(
        h.reset(b, at(5)),
        "earlier than the run's tail: into the heap"
    );
    assert_layout(&h, 1, 2);
    assert_eq!(h.peek_deadline(), Some(at(5)));
    assert_eq!(drain(&mut h, 100), [3, 2, 1]);
}

#[test]
fn seq_limit_holds_back_a_new_run_head() {
    fn hold_back<const T: usize>() {
        let mut h: TimerHeap<u32, T> = zeroed();
        let limit = h.next_seq();
        h.insert(at(0), 1).unwrap();
        assert!(h.pop_due(at(100), limit).is_none());
        assert_eq!(drain(&mut h, 100), [1]);
    }
    hold_back::<4>();
    hold_back::<LARGE>();
}

#[test]
fn slots_are_handed_out_from_zero_again_once_the_table_empties() {
    let mut h: TimerHeap<u32, 4> = zeroed();
    let old: Vec<_> = (0..4)
        .map(|i| h.insert(at(40 - i as u64), i).unwrap())
        .collect();
    for k in [2, 0, 3, 1] {
        assert!(h.cancel(old[k]).removed().is_some());
    }
    let new: Vec<_> = (0..4).map(|i| h.insert(at(1), i).unwrap()).collect();
    let idx: Vec<u32> = new.iter().map(|t| t.index).collect();
    assert_eq!(idx, [0, 1, 2, 3], "dense again after the table emptied");
    for (o, n) in old.iter().zip(&new) {
        assert!(
            !h.is_pending(*o),
            "an old handle stays dead on its reused slot"
        );
        assert_eq!(h.cancel(*o).removed(), None);
        assert!(h.is_pending(*n));
    }
}

#[test]
fn last_freed_slot_is_reused_first_while_timers_remain() {
    let mut h: TimerHeap<u32, 8> = zeroed();
    let hs: Vec<_> = (0..4).map(|i| h.insert(at(10), i).unwrap()).collect();
    h.cancel(hs[1]).removed();
    h.cancel(hs[3]).removed();
    assert_eq!(h.insert(at(10), 9).unwrap().index, hs[3].index);
    assert_eq!(h.insert(at(10), 9).unwrap().index, hs[1].index);
    assert_eq!(h.insert(at(10), 9).unwrap().index, 4);
}

#[test]
fn dropping_or_clearing_drops_each_waiting_closure_once() {
    use std::rc::Rc;
    let rc = Rc::new(());
    {
        let mut h: TimerHeap<Rc<()>, 8> = zeroed();
        for d in [5, 1, 7, 7, 3] {
            h.insert(at(d), rc.clone()).unwrap();
        }
        let (running, f, _) = h.pop_due(at(100), u64::MAX).unwrap();
        assert_eq!(
            Rc::strong_count(&rc),
            6,
            "the running closure is out, not copied"
        );
        h.clear();
        assert_eq!(
            Rc::strong_count(&rc),
            2,
            "cleared: only the running one is left"
        );
        assert!(!h.is_pending(running));
        let back = h.finish(running, f, Next::At(at(200)));
        assert!(
            back.is_some(),
            "a timer running across clear() is handed back"
        );
        drop(back);
        for d in [2, 9] {
            h.insert(at(d), rc.clone()).unwrap();
        }
        assert_eq!(Rc::strong_count(&rc), 3);
    }
    assert_eq!(Rc::strong_count(&rc), 1, "drop freed the rest");
}

/// Differential test against a plain list model: every operation, with many equal
/// deadlines (so the run, the heap and their ties are all exercised), at a capacity that
/// is hit often.
#[test]
fn matches_a_list_model_under_random_operations() {
    fn model<const CAP: usize>() {
        list_model::<CAP>(
            |now, rnd| now + rnd(4) * 10 + if rnd(3) == 0 { rnd(40) } else { 0 },
            |rnd| rnd(25),
        );
    }
    model::<48>();
    model::<LARGE>();
}

/// Far and near deadlines at every wheel level (and past the end of time, saturated): timers
/// migrate from the wheel to the heap through every level and still fire in deadline, then
/// sequence, order; cancel and re-arm work wherever the timer is.
#[test]
fn matches_a_list_model_with_deadlines_at_every_wheel_level() {
    assert_eq!(model::<48>(), 0, "no wheel at 48");
    let wheel_high = model::<LARGE>();
    assert!(wheel_high > 3, "the wheel was exercised: {wheel_high}");

    fn model<const CAP: usize>() -> u32 {
        list_model::<CAP>(
            |now, rnd| {
                let shift = rnd(64) as u32;
                match rnd(6) {
                    0 => now.saturating_add(rnd(4) << shift),
                    1 => u64::MAX - rnd(2),
                    2 => now + rnd(3) * 4096,
                    _ => now.saturating_add(rnd(1 << 20) >> (shift % 20)),
                }
            },
            |rnd| match rnd(8) {
                0 => rnd(1 << 30),
                1 => 1 << rnd(40),
                _ => rnd(1 << 14),
            },
        )
    }
}

/// Random inserts, cancels, re-arms and pops against a list model, in a table of `CAP`;
/// returns the most timers the wheel held at once.
fn list_model<const CAP: usize>(
    mut pick: impl FnMut(u64, &mut dyn FnMut(u64) -> u64) -> u64,
    mut step: impl FnMut(&mut dyn FnMut(u64) -> u64) -> u64,
) -> u32 {
    let mut wheel_high = 0;
    let mut h: TimerHeap<u32, CAP> = zeroed();
    // (handle, deadline, seq, id) of waiting timers.
    let mut model: Vec<(TimerHandle, u64, u64, u32)> = Vec::new();
    let mut dead: Vec<TimerHandle> = Vec::new();
    let mut seq = 0u64;
    let mut now = 0u64;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    let iterations = if cfg!(miri) { 600 } else { 20_000 };
    for id in 0..iterations {
        let deadline = pick(now, &mut rnd);
        match rnd(8) {
            0..=2 => {
                // Both ways of inserting: by value, and built in place (the loop's way).
                let r = if id % 2 == 0 {
                    h.insert(at(deadline), id)
                } else {
                    h.insert_in_place(at(deadline), Put(id), true)
                        .map_err(|Put(back)| back)
                };
                match r {
                    Ok(t) => {
                        model.push((t, deadline, seq, id));
                        seq += 1;
                    }
                    Err(back) => {
                        assert_eq!(back, id);
                        assert_eq!(model.len(), CAP);
                    }
                }
            }
            3 if !model.is_empty() => {
                let k = rnd(model.len() as u64) as usize;
                let (t, _, _, want) = model.remove(k);
                assert_eq!(h.cancel(t).removed(), Some(want));
                dead.push(t);
            }
            4 if !model.is_empty() => {
                let k = rnd(model.len() as u64) as usize;
                assert!(h.reset(model[k].0, at(deadline)));
                model[k].1 = deadline;
                model[k].2 = seq;
                seq += 1;
            }
            5 if !dead.is_empty() => {
                let t = dead[rnd(dead.len() as u64) as usize];
                assert_eq!(h.cancel(t).removed(), None);
                assert!(!h.reset(t, at(deadline)));
                assert!(!h.is_pending(t));
            }
            _ => {
                now = now.saturating_add(step(&mut rnd));
                let limit = h.next_seq();
                loop {
                    let want = model
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, e)| (e.1, e.2))
                        .filter(|(_, e)| e.1 <= now)
                        .map(|(k, _)| k);
                    let got = h.pop_due(at(now), limit);
                    match (want, got) {
                        (None, None) => break,
                        (Some(k), Some((t, f, d))) => {
                            let (mt, md, _, mid) = model.remove(k);
                            assert_eq!((t, f, d), (mt, mid, at(md)));
                            if rnd(3) == 0 {
                                let next = pick(now, &mut rnd).max(now.saturating_add(1));
                                assert!(h.finish(t, f, Next::At(at(next))).is_none());
                                model.push((t, next, seq, f));
                                seq += 1;
                            } else {
                                assert_eq!(h.finish(t, f, Next::Done), Some(f));
                                dead.push(t);
                            }
                        }
                        (w, g) => panic!("model {w:?} vs table {:?}", g.map(|g| g.1)),
                    }
                }
            }
        }
        assert_eq!(h.len(), model.len());
        assert_eq!(h.scheduled(), model.len());
        let first = model.iter().map(|e| e.1).min().map(at);
        assert_eq!(h.peek_deadline(), first);
        wheel_high = wheel_high.max(h.wheel_len());
        if dead.len() > 64 {
            dead.drain(..32);
        }
    }
    wheel_high
}

#[test]
fn a_closure_inserted_as_needing_no_drop_is_not_handed_back_or_dropped_by_cancel() {
    use std::cell::Cell;
    /// Counts its drops (without owning memory, so forgetting one leaks nothing).
    struct Loud<'a>(&'a Cell<u32>);
    impl Drop for Loud<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let drops = Cell::new(0);
    let mut h: TimerHeap<Loud<'_>, 8> = zeroed();
    // Deliberately flagged wrongly (it has drop glue) to show the cancel never reads it.
    let quiet = h.insert_flagged(at(9), Loud(&drops), false).ok().unwrap();
    let loud = h.insert_flagged(at(3), Loud(&drops), true).ok().unwrap(); // in the heap
    assert!(matches!(h.cancel(quiet), Cancel::Removed));
    assert_eq!(drops.get(), 0, "left in its slot, unread (forgotten)");
    assert!(matches!(h.cancel(quiet), Cancel::NotPending));
    let back = h.cancel(loud).removed();
    assert!(back.is_some());
    drop(back);
    assert_eq!(drops.get(), 1);
    assert_eq!(h.len(), 0);
    drop(h);
    assert_eq!(
        drops.get(),
        1,
        "the forgotten one is never dropped later either"
    );
}

#[test]
fn the_needs_drop_bit_never_changes_the_fifo_order_of_equal_deadlines() {
    let mut h: TimerHeap<u32, 32> = zeroed();
    // Equal deadlines in the heap (each before the run's tail) and in the run, flagged
    // alternately: they still fire in insertion order, also after a re-arm.
    h.insert_flagged(at(100), 99, true).unwrap();
    let mut hs = Vec::new();
    for i in 0..10u32 {
        hs.push(h.insert_flagged(at(50), i, i % 2 == 0).unwrap());
    }
    assert!(h.reset(hs[3], at(50)));
    assert_eq!(drain(&mut h, 200), [0, 1, 2, 4, 5, 6, 7, 8, 9, 3, 99]);
}

#[test]
fn cancelling_a_running_timer_says_so_once_then_not_pending() {
    let mut h: TimerHeap<u32, 4> = zeroed();
    h.insert(at(1), 5).unwrap();
    let (running, f, _) = h.pop_due(at(1), u64::MAX).unwrap();
    assert!(matches!(h.cancel(running), Cancel::Running));
    assert!(matches!(h.cancel(running), Cancel::NotPending));
    assert_eq!(h.finish(running, f, Next::At(at(9))), Some(5));
    assert_eq!(h.len(), 0);
}

#[test]
fn re_arming_run_members_in_place_keeps_deadline_then_fifo_order() {
    re_arm_in_place::<16>();
    re_arm_in_place::<LARGE>();
}

fn re_arm_in_place<const T: usize>() {
    let mut h: TimerHeap<u32, T> = zeroed();
    // A run of five: 10, 10, 20, 20, 30.
    let hs: Vec<_> = [(10, 0), (10, 1), (20, 2), (20, 3), (30, 4)]
        .iter()
        .map(|&(d, i)| h.insert(at(d), i).unwrap())
        .collect();
    assert!(h.reset(hs[0], at(30))); // the head to the tail, equal to it: after it
    assert!(h.reset(hs[2], at(40))); // a middle member to the tail
    assert!(h.reset(hs[2], at(45))); // the tail, later again: stays the tail
    assert!(h.reset(hs[2], at(35))); // the tail, still after its predecessor (30)
    assert!(h.reset(hs[3], at(25))); // before the tail: into the heap
    assert!(h.reset(hs[0], at(5))); // the tail, before its predecessor: into the heap
    assert_eq!(drain(&mut h, 100), [0, 1, 3, 4, 2]);
}

#[test]
fn quick_cancel_removes_timers_without_drop_glue_and_leaves_the_others_untouched() {
    let mut h: TimerHeap<u32, 8> = zeroed();
    let plain = h.insert_flagged(at(5), 1, false).unwrap();
    let glued = h.insert_flagged(at(3), 2, true).unwrap(); // in the heap
    assert_eq!(h.cancel_quick(glued, true), Quick::NeedsDrop);
    assert!(h.is_pending(glued), "nothing changed");
    assert_eq!(h.len(), 2);
    assert_eq!(h.cancel_quick(plain, true), Quick::Removed);
    assert_eq!(h.cancel_quick(plain, true), Quick::NotPending);
    assert_eq!(h.cancel_hinted(glued, true).removed(), Some(2));
    assert_eq!(h.len(), 0);
    let again = h.insert_flagged(at(1), 3, false).unwrap();
    let (running, f, _) = h.pop_due(at(1), u64::MAX).unwrap();
    assert_eq!(running, again);
    assert_eq!(h.cancel_quick(running, false), Quick::Running);
    assert_eq!(h.cancel_quick(running, false), Quick::NotPending);
    assert_eq!(h.finish(running, f, Next::Done), Some(3));
}

/// One second in ns: far enough for the wheel's upper levels.
const SEC: u64 = 1_000_000_000;

/// A timer far in the future (a run member in a table with a run): later inserts that go
/// before it (all of them here) go to the wheel or the heap, not the run.
fn block_the_run<const T: usize>(h: &mut TimerHeap<u32, T>) -> TimerHandle {
    h.insert(at(u64::MAX - 1), 0).unwrap()
}

#[test]
fn timers_migrating_from_the_wheel_to_the_heap_keep_deadline_then_fifo_order() {
    migrating::<SMALL>();
    migrating::<LARGE>();
}

fn migrating<const T: usize>() {
    let mut h: TimerHeap<u32, T> = zeroed();
    block_the_run(&mut h);
    for (id, d) in [
        (1, 10 * SEC),
        (2, 10 * SEC),
        (3, 10 * SEC),
        (4, 10 * SEC + 1),
        (5, 5 * SEC),
        (6, 10 * SEC),
        (7, 100),
        (8, 3600 * SEC),
        (9, 10 * SEC - 1),
    ] {
        h.insert(at(d), id).unwrap();
    }
    assert_wheel(&h, |n| n >= 6); // far timers wait in the wheel
    assert_eq!(h.peek_deadline(), Some(at(100)));
    assert_eq!(drain(&mut h, 20 * SEC), [7, 5, 9, 1, 2, 3, 6, 4]);
    assert_eq!(h.peek_deadline(), Some(at(3600 * SEC)));
    assert_eq!(drain(&mut h, 3600 * SEC), [8]);
    assert_eq!(h.scheduled(), 1); // the run's blocker
}

#[test]
fn a_timer_re_armed_in_the_wheel_goes_after_timers_already_at_its_deadline() {
    re_armed::<16>();
    re_armed::<LARGE>();
}

fn re_armed<const T: usize>() {
    let mut h: TimerHeap<u32, T> = zeroed();
    block_the_run(&mut h);
    let a = h.insert(at(7 * SEC), 1).unwrap();
    h.insert(at(9 * SEC), 2).unwrap();
    h.insert(at(8 * SEC), 3).unwrap();
    // Same bucket (re-armed in place), then another level.
    assert!(h.reset(a, at(9 * SEC)));
    assert_eq!(drain(&mut h, 10 * SEC), [3, 2, 1]);
    let b = h.insert(at(20 * SEC), 4).unwrap();
    h.insert(at(30 * SEC), 5).unwrap();
    assert!(h.reset(b, at(3000 * SEC))); // far: a higher level
    assert!(h.reset(b, at(30 * SEC))); // back, after 5
    assert_eq!(drain(&mut h, 40 * SEC), [5, 4]);
}

#[test]
fn cancel_removes_a_timer_from_the_heap_the_run_and_every_wheel_level() {
    cancel_everywhere::<32>();
    cancel_everywhere::<LARGE>();
}

fn cancel_everywhere<const T: usize>() {
    let mut h: TimerHeap<u32, T> = zeroed();
    let run = block_the_run(&mut h);
    let near = h.insert(at(10), 1).unwrap(); // heap
    let level0 = h.insert(at(100_000), 2).unwrap();
    let level1 = h.insert(at(30_000_000), 3).unwrap();
    let level2 = h.insert(at(2 * SEC), 4).unwrap();
    let level3 = h.insert(at(100 * SEC), 5).unwrap();
    let top = h.insert(at(u64::MAX / 2), 6).unwrap();
    let kept = h.insert(at(2 * SEC), 7).unwrap();
    assert_wheel(&h, |n| n >= 5);
    for (t, id) in [
        (level2, 4),
        (near, 1),
        (top, 6),
        (level0, 2),
        (level3, 5),
        (run, 0),
    ] {
        assert_eq!(h.cancel(t).removed(), Some(id));
        assert_eq!(h.cancel(t).removed(), None, "a second cancel is a no-op");
        assert!(!h.is_pending(t));
    }
    assert_eq!(h.scheduled(), 2);
    assert_eq!(h.peek_deadline(), Some(at(30_000_000)));
    // Migrated into the heap by a pop, then cancelled there.
    assert!(h.pop_due(at(1_000), u64::MAX).is_none());
    assert_eq!(h.cancel(level1).removed(), Some(3));
    assert!(h.is_pending(kept));
    assert_eq!(drain(&mut h, u64::MAX), [7]);
    assert_eq!(h.len(), 0);
}

#[test]
fn deadlines_at_the_end_of_time_fire_in_order_and_fifo() {
    end_of_time::<16>();
    end_of_time::<LARGE>();
}

fn end_of_time<const T: usize>() {
    let mut h: TimerHeap<u32, T> = zeroed();
    h.insert(at(5), 1).unwrap(); // the run's head
    for (id, d) in [
        (2, u64::MAX),
        (3, 1 << 63),
        (4, u64::MAX),
        (5, u64::MAX - 1),
        (6, 6),
        (7, (1 << 63) - 1),
        (8, u64::MAX),
    ] {
        h.insert(at(d), id).unwrap();
    }
    assert_eq!(drain(&mut h, (1 << 63) - 1), [1, 6, 7]);
    assert_eq!(h.peek_deadline(), Some(at(1 << 63)));
    assert_eq!(drain(&mut h, u64::MAX), [3, 5, 2, 4, 8]);
    // And from a clock near the end of time, a wheel restarting there.
    h.insert(at(u64::MAX - 3 * SEC), 9).unwrap();
    h.insert(at(u64::MAX), 10).unwrap();
    h.insert(at(u64::MAX - 5 * SEC), 11).unwrap();
    assert_eq!(drain(&mut h, u64::MAX), [11, 9, 10]);
}

#[test]
fn a_full_table_of_wheel_timers_hands_the_closure_back_until_one_is_cancelled() {
    full_of_far_timers::<8>();
    full_of_far_timers::<LARGE>();
}

fn full_of_far_timers<const T: usize>() {
    let mut h: TimerHeap<u32, T> = zeroed();
    block_the_run(&mut h);
    let hs: Vec<TimerHandle> = (1..T as u64)
        .map(|i| h.insert(at(i * 3 * SEC), i as u32).unwrap())
        .collect();
    assert_wheel(&h, |n| n as usize == T - 1);
    assert_eq!(h.insert(at(SEC), 99).unwrap_err(), 99);
    assert_eq!(h.cancel(hs[3]).removed(), Some(4));
    h.insert(at(SEC), 99).unwrap();
    let want: Vec<u32> = [99]
        .into_iter()
        .chain((1..T as u32).filter(|&i| i != 4))
        .collect();
    assert_eq!(drain(&mut h, 3 * T as u64 * SEC), want);
}

#[test]
fn peek_is_exact_before_any_pop_moved_the_wheel() {
    peek_exact::<16>();
    peek_exact::<LARGE>();
}

fn peek_exact<const T: usize>() {
    let mut h: TimerHeap<u32, T> = zeroed();
    block_the_run(&mut h);
    h.insert(at(50 * SEC), 1).unwrap();
    h.insert(at(40 * SEC + 12_345), 2).unwrap();
    h.insert(at(45 * SEC), 3).unwrap();
    // Nothing popped yet: the earliest is still in a wheel bucket with the others.
    assert_eq!(h.peek_deadline(), Some(at(40 * SEC + 12_345)));
    assert!(h.pop_due(at(40 * SEC), u64::MAX).is_none());
    assert_eq!(h.peek_deadline(), Some(at(40 * SEC + 12_345)));
}

#[test]
fn an_empty_wheel_restarts_at_the_latest_time_seen() {
    let mut h: TimerHeap<u32, LARGE> = zeroed();
    block_the_run(&mut h);
    h.insert(at(1000 * SEC), 1).unwrap();
    assert_eq!(drain(&mut h, 1000 * SEC), [1]);
    assert_eq!(h.wheel_len(), 0);
    // Near that time: the wheel takes them (it does not count from zero any more), and they
    // come out in order.
    for (id, ms) in [(2, 3), (3, 1), (4, 2)] {
        h.insert(at(1000 * SEC + ms * 1_000_000), id).unwrap();
    }
    assert_eq!(h.wheel_len(), 3);
    assert_eq!(drain(&mut h, 1001 * SEC), [3, 4, 2]);
}

#[test]
fn a_table_of_at_most_wheel_above_timers_keeps_every_timer_in_the_heap() {
    /// Where five timers wait (wheel, run, heap): one far in the future, then four before it.
    fn far_timers<const T: usize>() -> (u32, u32, u32) {
        let mut h: TimerHeap<u32, T> = zeroed();
        block_the_run(&mut h);
        for (id, d) in [
            (1, 3600 * SEC),
            (2, 5 * SEC),
            (3, u64::MAX / 2),
            (4, 5 * SEC),
        ] {
            h.insert(at(d), id).unwrap();
        }
        assert_eq!(h.scheduled(), 5);
        let layout = (h.wheel_len(), h.run_len, h.len);
        assert_eq!(drain(&mut h, u64::MAX / 2), [2, 4, 1, 3]);
        layout
    }
    const {
        assert!(!TimerHeap::<u32, SMALL>::WHEEL && TimerHeap::<u32, LARGE>::WHEEL);
        assert!(!TimerHeap::<u32, SMALL>::RUN && TimerHeap::<u32, LARGE>::RUN);
    };
    assert_eq!(far_timers::<5>(), (0, 0, 5));
    assert_eq!(far_timers::<16>(), (0, 0, 5));
    assert_eq!(far_timers::<SMALL>(), (0, 0, 5));
    assert_eq!(far_timers::<LARGE>(), (4, 1, 0));
}
