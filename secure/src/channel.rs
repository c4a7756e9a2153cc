//! Sealed messages after the handshake.

use latentcam_wire::{Message, Sealed, frame};
use snow::StatelessTransportState;

use crate::{ReplayWindow, SecureError};

/// Length of the ChaCha20-Poly1305 tag.
const TAG_LEN: usize = 16;

/// One side of an established session: seals what it sends, opens what it
/// receives. The counter of each sealed message is its AEAD nonce and is
/// sent in the clear; the receiver accepts each counter once
/// ([`ReplayWindow`]), so a recorded message cannot be replayed into the
/// session and a message of another session never authenticates.
pub struct Channel {
    transport: StatelessTransportState,
    next: u64,
    window: ReplayWindow,
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("next", &self.next)
            .field("window", &self.window)
            .finish()
    }
}

impl Channel {
    pub(crate) fn new(transport: StatelessTransportState) -> Self {
        Self {
            transport,
            next: 0,
            window: ReplayWindow::new(),
        }
    }

    /// Seals `message` and frames it: the bytes to write to the link.
    pub fn seal(&mut self, message: &Message<'_>) -> Result<Vec<u8>, SecureError> {
        // Noise reserves the nonce 2⁶⁴ − 1.
        if self.next == u64::MAX {
            return Err(SecureError::Exhausted);
        }
        let inner = frame::encode_inner_to_vec(message).map_err(SecureError::Inner)?;
        let mut ciphertext = vec![0u8; inner.len() + TAG_LEN];
        let n = self
            .transport
            .write_message(self.next, &inner, &mut ciphertext)
            .map_err(SecureError::Handshake)?;
        ciphertext.truncate(n);
        let bytes = frame::encode_to_vec(&Message::Sealed(Sealed {
            counter: self.next,
            ciphertext: &ciphertext,
        }))
        .map_err(SecureError::Inner)?;
        self.next += 1;
        Ok(bytes)
    }

    /// Opens a received sealed message, returning the inner message's
    /// `kind ‖ body` ([`frame::decode_inner`] reads it). Refuses a counter
    /// seen before and anything that does not authenticate; neither moves
    /// the replay window.
    pub fn open(&mut self, sealed: &Sealed<'_>) -> Result<Vec<u8>, SecureError> {
        let counter = sealed.counter;
        if !self.window.check(counter) {
            return Err(SecureError::Replay { counter });
        }
        let mut plain = vec![0u8; sealed.ciphertext.len()];
        let n = self
            .transport
            .read_message(counter, sealed.ciphertext, &mut plain)
            .map_err(|_| SecureError::Decrypt { counter })?;
        plain.truncate(n);
        frame::decode_inner(&plain).map_err(SecureError::Inner)?;
        self.window.accept(counter);
        Ok(plain)
    }

    /// Messages sealed so far.
    pub fn sealed(&self) -> u64 {
        self.next
    }
}
