//! DNS probe of one kresd endpoint over UDP.
//!
//! The default question, `localhost. A`, is answered by kresd 5.6 from its built-in
//! special-use-name rules (`127.0.0.1`, NOERROR) without any network access, so a probe tests
//! the worker and not upstream reachability. Any reply proves the worker serves; its rcode
//! depends on the user's policy (a catch-all `policy.DENY` turns it into NXDOMAIN), so gate on
//! `Ok(_)` and report the rcode rather than requiring NOERROR.

use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// What to ask and how long to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeQuestion {
    /// Query name (absolute).
    pub name: Name,
    /// Query type.
    pub qtype: RecordType,
    /// How long to wait for the reply.
    pub timeout: Duration,
}

impl Default for ProbeQuestion {
    /// `localhost. A`, 1 s.
    fn default() -> Self {
        Self {
            name: Name::from_labels(["localhost"]).unwrap_or_else(|_| Name::root()),
            qtype: RecordType::A,
            timeout: Duration::from_secs(1),
        }
    }
}

/// A reply was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeAnswer {
    /// Response code of the reply.
    pub rcode: ResponseCode,
    /// Records in the answer section.
    pub answers: usize,
    /// Time from send to reply.
    pub rtt: Duration,
}

impl ProbeAnswer {
    /// The reply says NOERROR.
    pub fn is_noerror(&self) -> bool {
        self.rcode == ResponseCode::NoError
    }
}

/// Why a probe got no usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// Nothing came back in time.
    #[error("probe {question} to {server}: no reply within {timeout:?}")]
    Timeout {
        /// Endpoint probed.
        server: SocketAddr,
        /// `name type` asked.
        question: String,
        /// The timeout.
        timeout: Duration,
    },
    /// Socket error (e.g. ICMP port unreachable reported as connection refused).
    #[error("probe {question} to {server}: {message}")]
    Io {
        /// Endpoint probed.
        server: SocketAddr,
        /// `name type` asked.
        question: String,
        /// Error text.
        message: String,
    },
}

/// Send one query to `server` and wait for the matching reply (same id and question).
/// Replies that do not match are ignored until the timeout.
pub async fn probe(server: SocketAddr, q: &ProbeQuestion) -> Result<ProbeAnswer, ProbeError> {
    let question = format!("{} {}", q.name, q.qtype);
    let io = |e: &dyn std::fmt::Display| ProbeError::Io {
        server,
        question: question.clone(),
        message: e.to_string(),
    };
    let local: SocketAddr = if server.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let sock = UdpSocket::bind(local).await.map_err(|e| io(&e))?;
    sock.connect(server).await.map_err(|e| io(&e))?;
    let id = random_id();
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(q.name.clone(), q.qtype));
    let wire = msg.to_vec().map_err(|e| io(&e))?;
    let started = Instant::now();
    let deadline = started + q.timeout;
    sock.send(&wire).await.map_err(|e| io(&e))?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            Err(_) => {
                return Err(ProbeError::Timeout {
                    server,
                    question,
                    timeout: q.timeout,
                });
            }
            Ok(Err(e)) => return Err(io(&e)),
            Ok(Ok(n)) => n,
        };
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        let same_question = reply
            .queries
            .first()
            .is_some_and(|r| r.name() == &q.name && r.query_type() == q.qtype);
        if reply.metadata.id != id
            || reply.metadata.message_type != MessageType::Response
            || !same_question
        {
            continue;
        }
        return Ok(ProbeAnswer {
            rcode: reply.metadata.response_code,
            answers: reply.answers.len(),
            rtt: started.elapsed(),
        });
    }
}

fn random_id() -> u16 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn silent_endpoint_times_out() {
        // A bound socket that never answers.
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let q = ProbeQuestion {
            timeout: Duration::from_millis(100),
            ..Default::default()
        };
        let err = probe(silent.local_addr().unwrap(), &q).await.unwrap_err();
        assert!(matches!(err, ProbeError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("localhost. A"), "{err}");
    }

    #[tokio::test]
    async fn closed_port_is_an_io_error_or_timeout() {
        let port = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap().port()
        };
        let q = ProbeQuestion {
            timeout: Duration::from_millis(300),
            ..Default::default()
        };
        let err = probe(([127, 0, 0, 1], port).into(), &q).await.unwrap_err();
        // Loopback reports ICMP port unreachable as ECONNREFUSED on a connected socket.
        assert!(
            matches!(err, ProbeError::Io { ref message, .. } if message.contains("refused")),
            "{err}"
        );
    }
}
