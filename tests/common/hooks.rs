//! Error-hook recorders. Include with `#[path = "common/hooks.rs"] mod hooks;`.
#![allow(dead_code)]

use std::cell::RefCell;
use std::rc::Rc;

use loop_core::{EventLoop, Failure, HandlerError, Poller};

/// Sets `lp`'s error hook to record the error of every failing handler (other failures are
/// ignored); returns the record.
pub fn handler_errors<P: Poller + 'static, const H: usize, const T: usize, const Q: usize>(
    lp: &mut EventLoop<P, H, T, Q>,
) -> Rc<RefCell<Vec<HandlerError>>> {
    let reports: Rc<RefCell<Vec<HandlerError>>> = Rc::default();
    let r = reports.clone();
    lp.set_error_hook(move |f| {
        if let Failure::Handler { error, .. } = f {
            r.borrow_mut().push(error);
        }
    });
    reports
}
