//! A tour of the loop on a real socketpair: fd handlers, timers, callbacks and a periodic
//! callback, each printing what happens and when.
//!
//! ```text
//! cargo run --example demo
//! ```

use std::cell::Cell;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::time::Duration;

use ioloop::{EventLoop, Instant, Interest, Periodic, Readiness};

fn at(lp: &EventLoop, start: Instant) -> String {
    format!("[{:>6.1} ms]", (lp.now() - start).as_secs_f64() * 1e3)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut lp: EventLoop = EventLoop::new()?;
    let start = lp.now();
    let (reader, writer) = UnixStream::pair()?;
    reader.set_nonblocking(true)?;
    writer.set_nonblocking(true)?;
    println!(
        "ioloop demo: poller = {}",
        std::any::type_name::<ioloop::DefaultPoller>()
    );
    println!(
        "socketpair: reader fd {}, writer fd {}\n",
        reader.as_raw_fd(),
        writer.as_raw_fd()
    );

    // 1. An fd handler: READ interest on the reader. ERROR is always added by the loop.
    let reader = Rc::new(reader);
    let r = reader.clone();
    let received = Rc::new(Cell::new(0));
    let got = received.clone();
    lp.add_handler(&*reader, Interest::READ, move |lp, fd, ready| {
        if ready.contains(Readiness::HUP) {
            println!(
                "{} fd {fd}: peer hung up ({ready:?}); removing the handler",
                at(lp, start)
            );
            lp.remove_handler(fd);
            return Ok(());
        }
        let mut buf = [0u8; 64];
        let n = (&*r).read(&mut buf)?;
        got.set(got.get() + 1);
        println!(
            "{} fd {fd} readable ({ready:?}): {:?}",
            at(lp, start),
            String::from_utf8_lossy(&buf[..n])
        );
        Ok(())
    })?;

    // 2. A callback: runs in the next iteration, before any timer.
    lp.add_callback(move |lp| {
        println!(
            "{} callback: runs first, in the next iteration",
            at(lp, start)
        )
    })?;

    // 3. A periodic callback every 100 ms (first call one period after start) writes a ping.
    let writer = Rc::new(writer);
    let w = writer.clone();
    let pings = Rc::new(Cell::new(0));
    let p = pings.clone();
    let periodic = lp.add_periodic(Periodic::every(Duration::from_millis(100)), move |lp| {
        p.set(p.get() + 1);
        let msg = format!("ping {}", p.get());
        println!("{} periodic: writing {msg:?}", at(lp, start));
        let _ = (&*w).write_all(msg.as_bytes());
    })?;

    // 4. Timers: one cancelled before it fires, one that stops the periodic callback and
    //    closes the writer (the reader then sees a hang-up), one that stops the loop.
    let never = lp.call_later(Duration::from_millis(50), |_| unreachable!("cancelled"))?;
    lp.remove_timeout(never);
    println!(
        "{} timer at 50 ms scheduled and cancelled (it will not fire)",
        at(&lp, start)
    );
    let mut writer_slot = Some(writer);
    lp.call_later(Duration::from_millis(350), move |lp| {
        println!(
            "{} timer: stopping the periodic callback, closing the writer",
            at(lp, start)
        );
        lp.remove_timeout(periodic);
        writer_slot.take();
    })?;
    lp.call_later(Duration::from_millis(400), move |lp| {
        println!("{} timer: stop()", at(lp, start));
        lp.stop();
    })?;

    lp.run()?;
    println!(
        "\nloop stopped after {:.0} ms: {} pings written, {} reads, {} handlers, {} timers left",
        (lp.now() - start).as_secs_f64() * 1e3,
        pings.get(),
        received.get(),
        lp.handler_count(),
        lp.timer_count()
    );
    Ok(())
}
