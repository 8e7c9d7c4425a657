//! A minimal DNS client (hickory-proto) for asserting what a resolver answers.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

/// Send one query over UDP and return the reply.
pub fn query(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Message> {
    query_with(server, name, rtype, Duration::from_secs(2), |_| {})
}

/// Send one query over UDP, letting `edit` adjust the message (EDNS options, flags) first.
pub fn query_with(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
    edit: impl FnOnce(&mut Message),
) -> Result<Message> {
    let bind: SocketAddr = if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    }
    .parse()?;
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(timeout))?;
    let id: u16 = rand_id();
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(
        Name::from_ascii(name).context("query name")?,
        rtype,
    ));
    edit(&mut msg);
    sock.send_to(&msg.to_vec()?, server)?;
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = sock
            .recv_from(&mut buf)
            .with_context(|| format!("no answer from {server} for {name} {rtype}"))?;
        if from != server {
            continue;
        }
        let reply = Message::from_vec(&buf[..n])?;
        if reply.metadata.id != id {
            continue;
        }
        return Ok(reply);
    }
}

/// The rcode of a reply.
pub fn rcode(msg: &Message) -> ResponseCode {
    msg.metadata.response_code
}

/// The answer section's record data rendered as text (`192.0.2.1`, `ns.example.`, ...).
pub fn answers(msg: &Message) -> Vec<String> {
    msg.answers.iter().map(|r| rdata_text(&r.data)).collect()
}

fn rdata_text(d: &RData) -> String {
    d.to_string()
}

/// Query and expect NOERROR; return the answers as text.
pub fn resolve(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Vec<String>> {
    let reply = query(server, name, rtype)?;
    if rcode(&reply) != ResponseCode::NoError {
        bail!("{name} {rtype} from {server}: {}", rcode(&reply));
    }
    Ok(answers(&reply))
}

fn rand_id() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (t.subsec_nanos() ^ std::process::id()) as u16
}
