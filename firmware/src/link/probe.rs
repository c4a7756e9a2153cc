//! One session opening, as a run makes it, and nothing more: what
//! `latentcam-edge doctor` asks of any link that the host answers on.

use std::time::{Duration, Instant};

use latentcam_wire::{Bye, ByeReason, Message, WelcomeStatus, frame};

use super::{Incoming, Link, LinkError};

/// The host's answer to a probe's `Hello`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// Accepted, or why not.
    pub status: WelcomeStatus,
    /// The host's reason, as it wrote it.
    pub reason: String,
    /// The host's identity.
    pub host_id: String,
    /// Highest `seq` the host holds for this device.
    pub acked: Option<u64>,
}

/// Why a probe got no answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The connection (or, on a [`SecureLink`](super::SecureLink), the
    /// handshake) could not be made, or `Hello` not sent.
    #[error("{0}")]
    Connect(LinkError),
    /// The link went down before the host answered.
    #[error("connection lost before the host answered: {0}")]
    Lost(LinkError),
    /// Connected, but no `Welcome` within the time allowed.
    #[error("connected, but no Welcome within {} s", .0.as_secs())]
    Silent(Duration),
}

/// Opens a new connection on `link`, sends `hello`, waits up to `wait` for
/// the host's `Welcome` and closes the session with `Bye`.
pub fn probe(link: &mut dyn Link, hello: &[u8], wait: Duration) -> Result<ProbeAnswer, ProbeError> {
    link.reconnect()
        .and_then(|()| link.send(hello))
        .map_err(ProbeError::Connect)?;
    let deadline = Instant::now() + wait;
    let mut answer = Err(ProbeError::Silent(wait));
    while Instant::now() < deadline {
        match link.poll_incoming(Duration::from_millis(200)) {
            Ok(messages) => {
                let welcome = messages.into_iter().find_map(|m| match m {
                    Incoming::Welcome {
                        status,
                        reason,
                        host_id,
                        acked,
                        ..
                    } => Some(ProbeAnswer {
                        status,
                        reason,
                        host_id,
                        acked,
                    }),
                    _ => None,
                });
                if let Some(welcome) = welcome {
                    answer = Ok(welcome);
                    break;
                }
            }
            Err(e) => {
                answer = Err(ProbeError::Lost(e));
                break;
            }
        }
    }
    if let Ok(bye) = frame::encode_to_vec(&Message::Bye(Bye {
        reason: ByeReason::Shutdown,
        detail: "doctor check done",
    })) {
        // Sealed on a secure link, and only sent if the session stands.
        let _ = link.send(&bye);
    }
    answer
}

#[cfg(test)]
mod tests {
    use std::thread;

    use latentcam_wire::{AuthChallenge, AuthScheme, PROTOCOL_VERSION, Welcome};

    use super::*;
    use crate::link::channel;

    const HELLO: &[u8] = b"\0hello stand-in\0";

    fn welcome(status: WelcomeStatus) -> Vec<u8> {
        frame::encode_to_vec(&Message::Welcome(Welcome {
            protocol: u16::from(PROTOCOL_VERSION),
            status,
            reason: "because",
            host_id: "probe-host",
            acked: Some(7),
            auth: AuthChallenge {
                scheme: AuthScheme::None,
                host_nonce: [0; 16],
                host_proof: &[],
            },
        }))
        .unwrap()
    }

    #[test]
    fn a_welcome_is_the_answer_and_the_session_ends_with_bye() {
        let (mut link, end) = channel::pair();
        let host = thread::spawn(move || {
            assert_eq!(end.recv(Duration::from_secs(5)).unwrap(), HELLO);
            end.send(&welcome(WelcomeStatus::UnknownModel));
            let mut bye = end.recv(Duration::from_secs(5)).unwrap();
            assert!(matches!(
                frame::decode_datagram(&mut bye),
                Ok(Message::Bye(_))
            ));
        });
        let answer = probe(&mut link, HELLO, Duration::from_secs(5)).unwrap();
        host.join().unwrap();
        assert_eq!(
            answer,
            ProbeAnswer {
                status: WelcomeStatus::UnknownModel,
                reason: "because".into(),
                host_id: "probe-host".into(),
                acked: Some(7),
            }
        );
    }

    #[test]
    fn silence_lost_and_refused_connections_are_told_apart() {
        let (mut link, _end) = channel::pair();
        let silent = probe(&mut link, HELLO, Duration::from_millis(300)).unwrap_err();
        assert!(matches!(silent, ProbeError::Silent(_)), "{silent}");

        let (mut link, end) = channel::pair();
        end.cut();
        let refused = probe(&mut link, HELLO, Duration::from_secs(5)).unwrap_err();
        assert!(matches!(refused, ProbeError::Connect(_)), "{refused}");

        let (mut link, end) = channel::pair();
        let host = thread::spawn(move || {
            end.recv(Duration::from_secs(5)).unwrap();
            end.cut();
        });
        let lost = probe(&mut link, HELLO, Duration::from_secs(5)).unwrap_err();
        host.join().unwrap();
        assert!(matches!(lost, ProbeError::Lost(_)), "{lost}");
    }
}
