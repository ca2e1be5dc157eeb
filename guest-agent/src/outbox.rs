//! The sending half of one host connection, shared by every thread that
//! answers requests, pumps process output or reports events.
//!
//! A frame is written whole under one lock, so frames from different threads
//! never interleave. Once a write fails the connection is dead: later sends
//! are dropped and report `false`, so producers can stop (or discard output)
//! instead of blocking on a peer that is gone.

use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use husk_proto::{Frame, FrameWriter, Message};

pub struct Outbox {
    writer: Mutex<FrameWriter<File>>,
    dead: AtomicBool,
}

impl Outbox {
    pub fn new(stream: File) -> Self {
        Outbox {
            writer: Mutex::new(FrameWriter::new(stream)),
            dead: AtomicBool::new(false),
        }
    }

    /// Sends one frame; false if the connection is (now) dead.
    pub fn send(&self, frame: &Frame) -> bool {
        if self.dead.load(Ordering::Relaxed) {
            return false;
        }
        let mut w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if w.write_frame(frame).is_err() {
            self.dead.store(true, Ordering::Relaxed);
            return false;
        }
        true
    }

    pub fn send_msg(&self, msg: Message) -> bool {
        self.send(&Frame::Control(msg))
    }

    /// Marks the connection dead (its reader saw it close).
    pub fn kill(&self) {
        self.dead.store(true, Ordering::Relaxed);
    }

    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }
}
