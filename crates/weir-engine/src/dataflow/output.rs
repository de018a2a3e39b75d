//! The consumer end of a stream for the program running the dataflow: events and barriers.

use weir_core::Event;

use super::channel::{own, Inbox, Msg, Next, Tracker};
use crate::pool::block_on;

/// The events of one stream, for the program that runs the dataflow (files, stdout, tests).
pub struct OutputStream {
    pub(super) inbox: Inbox,
    pub(super) tracker: Tracker,
}

/// What an output stream delivers: events, or the news that a checkpoint barrier has passed
/// (every event before it has been delivered).
#[derive(Debug)]
pub enum Delivered {
    /// Results, in order.
    Events(Vec<Event>),
    /// Every result of this checkpoint epoch came before it.
    Barrier(u64),
}

impl OutputStream {
    /// The next batch or barrier; `None` once every producer has ended.
    pub async fn recv(&mut self) -> Option<Delivered> {
        if self.tracker.all_ended() {
            return None;
        }
        while let Some(next) = self.inbox.next().await {
            let env = match next {
                Next::Barrier(e) => return Some(Delivered::Barrier(e)),
                Next::Msg(env) => env,
            };
            match env.msg {
                Msg::Data(d) => return Some(Delivered::Events(own(d))),
                Msg::Watermark(w) => {
                    self.tracker.watermark(env.slot, w);
                }
                Msg::Barrier(_) => {}
                Msg::End => {
                    self.tracker.end(env.slot);
                    if self.tracker.all_ended() {
                        return None;
                    }
                }
            }
        }
        None
    }

    /// [`OutputStream::recv`] for a thread.
    pub fn next_delivered(&mut self) -> Option<Delivered> {
        block_on(self.recv())
    }
}

impl Iterator for OutputStream {
    type Item = Vec<Event>;

    /// The next batch (barriers skipped); `None` once every producer has ended.
    fn next(&mut self) -> Option<Vec<Event>> {
        loop {
            match self.next_delivered()? {
                Delivered::Events(e) => return Some(e),
                Delivered::Barrier(_) => {}
            }
        }
    }
}
