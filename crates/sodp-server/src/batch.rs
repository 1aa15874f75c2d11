//! How a batch of pre-framed WebSocket messages leaves in one system call.
//!
//! Both writers of a connection — a direct flush (`outbox`) and the session
//! task (`session::io`) — send the front of their batch as one call. A
//! single message goes as it is. Several small ones are **gathered**: copied
//! into one thread-local buffer and sent with a plain `send`, because a
//! `sendmsg` pays the kernel for every segment of its vector (importing and
//! walking it) and a loopback `send` of the same bytes from one buffer was
//! 2–14 % cheaper at 2–64 segments of 60–1,000 bytes (`bench/gather-probe`,
//! docs/BENCHMARKS.md); copying a few kilobytes costs less than that, while
//! segments of several kilobytes each lose the gain to the copy.
//! Over TLS it means one record instead of one per message. Batches too
//! large to copy cheaply go as a vector of slices, up to [`MAX_IOVECS`].
//!
//! Whatever the call takes is then dropped from the front with
//! [`consume`], whole messages and then part of one, so a partial send
//! resumes mid-message on the next call exactly as a vectored one would.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};

/// Most messages handed to one vectored send.
pub const MAX_IOVECS: usize = 64;

/// Largest front (of at most [`MAX_IOVECS`] messages) that is gathered into
/// one buffer rather than sent as a vector.
pub const GATHER_BYTES: usize = 8 * 1024;

thread_local! {
    /// The thread's gathering buffer: every writer on the thread uses it in
    /// turn (it is filled and sent within one call, never held across an
    /// await), so it costs one buffer per thread, not per connection.
    static GATHERED: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(GATHER_BYTES));
}

/// The front of a batch, as one system call takes it.
pub enum Front<'a> {
    /// One contiguous buffer: a lone message, or several gathered.
    Contiguous(&'a [u8]),
    /// The first messages (at most [`MAX_IOVECS`]) as slices.
    Slices(&'a [IoSlice<'a>]),
}

/// Calls `send` with the batch's front — as one buffer when it is a single
/// message or its messages fit in [`GATHER_BYTES`], else as slices — and
/// returns what `send` returns. The batch is left as it is: the caller
/// [`consume`]s what was sent. An empty batch gives an empty buffer.
pub fn with_front<R>(batch: &VecDeque<Bytes>, send: impl FnOnce(Front<'_>) -> R) -> R {
    if batch.len() <= 1 {
        return send(Front::Contiguous(batch.front().map_or(&[][..], |m| m)));
    }
    let front = batch.len().min(MAX_IOVECS);
    let bytes: usize = batch.iter().take(front).map(Bytes::len).sum();
    if bytes <= GATHER_BYTES {
        return GATHERED.with(|gathered| {
            let mut buf = gathered.borrow_mut();
            buf.clear();
            for message in batch.iter().take(front) {
                buf.extend_from_slice(message);
            }
            send(Front::Contiguous(&buf))
        });
    }
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    for (slice, message) in slices.iter_mut().zip(batch) {
        *slice = IoSlice::new(message);
    }
    send(Front::Slices(&slices[..front]))
}

/// Drops the first `n` bytes of the batch: whole messages, then part of one.
pub fn consume(batch: &mut VecDeque<Bytes>, mut n: usize) {
    while n > 0 {
        let Some(front) = batch.front_mut() else {
            break;
        };
        if n >= front.len() {
            n -= front.len();
            batch.pop_front();
        } else {
            front.advance(n);
            n = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(sizes: &[usize]) -> VecDeque<Bytes> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| Bytes::from(vec![i as u8; n]))
            .collect()
    }

    /// What one call would be handed: the bytes, and whether as slices.
    fn front_of(b: &VecDeque<Bytes>) -> (Vec<u8>, bool) {
        with_front(b, |front| match front {
            Front::Contiguous(bytes) => (bytes.to_vec(), false),
            Front::Slices(slices) => (slices.iter().flat_map(|s| s.to_vec()).collect(), true),
        })
    }

    fn joined(b: &VecDeque<Bytes>, messages: usize) -> Vec<u8> {
        b.iter().take(messages).flat_map(|m| m.to_vec()).collect()
    }

    #[test]
    fn small_messages_are_gathered_in_order_into_one_buffer() {
        let b = batch(&[3, 60, 1, 200]);
        assert_eq!(front_of(&b), (joined(&b, 4), false));
        // Up to the limit exactly: still one buffer.
        let b = batch(&[GATHER_BYTES - 10, 10]);
        assert_eq!(front_of(&b), (joined(&b, 2), false));
        // A lone message goes as it is, however large.
        let b = batch(&[3 * GATHER_BYTES]);
        assert_eq!(front_of(&b), (joined(&b, 1), false));
        assert_eq!(front_of(&VecDeque::new()), (Vec::new(), false));
    }

    #[test]
    fn a_front_too_large_to_copy_goes_as_slices_of_at_most_max_iovecs() {
        let b = batch(&[GATHER_BYTES, 1]);
        assert_eq!(front_of(&b), (joined(&b, 2), true));
        // More messages than one vector holds: the first MAX_IOVECS, gathered
        // when they are small …
        let b = batch(&vec![10; MAX_IOVECS + 5]);
        assert_eq!(front_of(&b), (joined(&b, MAX_IOVECS), false));
        // … as slices when they are not.
        let b = batch(&vec![200; MAX_IOVECS + 5]);
        assert_eq!(front_of(&b), (joined(&b, MAX_IOVECS), true));
    }

    #[test]
    fn a_partial_send_resumes_mid_message() {
        let mut b = batch(&[3, 2, 4]);
        let all = joined(&b, 3);
        consume(&mut b, 4);
        assert_eq!(front_of(&b).0, all[4..]);
        consume(&mut b, 1);
        assert_eq!(front_of(&b).0, all[5..]);
        consume(&mut b, 100);
        assert!(b.is_empty());
    }
}
