//! A minimal DNS client (hickory-proto) for asserting what a resolver answers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
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
    let src: IpAddr = if server.is_ipv4() {
        Ipv4Addr::LOCALHOST.into()
    } else {
        Ipv6Addr::LOCALHOST.into()
    };
    query_from_with(src, server, name, rtype, timeout, edit)
}

/// Send one query over UDP from source address `src` (e.g. a specific 127.x.y.z, to test
/// address-based views) and return the reply.
pub fn query_from(
    src: IpAddr,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Result<Message> {
    query_from_with(src, server, name, rtype, Duration::from_secs(2), |_| {})
}

/// [`query_from`] with a timeout and an `edit` hook like [`query_with`].
pub fn query_from_with(
    src: IpAddr,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    timeout: Duration,
    edit: impl FnOnce(&mut Message),
) -> Result<Message> {
    let sock = UdpSocket::bind(SocketAddr::new(src, 0)).with_context(|| format!("bind {src}"))?;
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

/// Query with an empty EDNS NSID option (RFC 5001) and return the NSID the server sent back.
pub fn query_nsid(server: SocketAddr, name: &str, rtype: RecordType) -> Result<Option<Vec<u8>>> {
    use hickory_proto::op::Edns;
    use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption, NSIDPayload};
    let reply = query_with(server, name, rtype, Duration::from_secs(2), |m| {
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        if let Ok(p) = NSIDPayload::new(Vec::new()) {
            edns.options_mut().insert(EdnsOption::NSID(p));
        }
        m.set_edns(edns);
    })?;
    Ok(reply
        .edns
        .as_ref()
        .and_then(|e| match e.option(EdnsCode::NSID) {
            Some(EdnsOption::NSID(p)) => Some(p.as_ref().to_vec()),
            _ => None,
        }))
}

/// A DNS-over-TCP connection (RFC 7766: 2-byte length prefix), one query at a time.
pub struct TcpDns {
    stream: std::net::TcpStream,
}

impl TcpDns {
    /// Connect to `server`; reads and writes time out after `timeout`.
    pub fn connect(server: SocketAddr, timeout: Duration) -> Result<TcpDns> {
        let stream = std::net::TcpStream::connect_timeout(&server, timeout)
            .with_context(|| format!("TCP connect to {server}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(TcpDns { stream })
    }

    /// The client side's address (the server sees it as the peer).
    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.stream.local_addr()?)
    }

    /// Send one query and read its reply.
    pub fn query(&mut self, name: &str, rtype: RecordType) -> Result<Message> {
        use std::io::{Read, Write};
        let id = rand_id();
        let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
        msg.metadata.recursion_desired = true;
        msg.add_query(Query::query(
            Name::from_ascii(name).context("query name")?,
            rtype,
        ));
        let wire = msg.to_vec()?;
        let mut framed = (wire.len() as u16).to_be_bytes().to_vec();
        framed.extend(wire);
        self.stream.write_all(&framed).context("send query")?;
        let mut len = [0u8; 2];
        self.stream
            .read_exact(&mut len)
            .with_context(|| format!("no answer for {name} {rtype}"))?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut buf).context("read answer")?;
        let reply = Message::from_vec(&buf)?;
        if reply.metadata.id != id {
            bail!("answer id {} for query id {id}", reply.metadata.id);
        }
        Ok(reply)
    }

    /// Wait up to `timeout` for the server to close the connection: `Ok(())` on EOF or
    /// reset, an error if data or nothing arrives.
    pub fn wait_closed_within(&mut self, timeout: Duration) -> Result<()> {
        use std::io::Read;
        self.stream.set_read_timeout(Some(timeout))?;
        let mut b = [0u8; 1];
        match self.stream.read(&mut b) {
            Ok(0) => Ok(()),
            Ok(_) => bail!("unexpected data instead of a close"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e).context("connection not closed by the server"),
        }
    }
}
