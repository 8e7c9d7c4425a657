//! One datagram plus file descriptors over a unix `SOCK_SEQPACKET` socket (`SCM_RIGHTS`).

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

/// Most descriptors in one message (the kernel's `SCM_MAX_FD` is 253).
pub const MAX_FDS: usize = 250;
/// Largest message accepted.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Send `data` with `fds` attached as one message.
pub fn send(sock: impl AsFd, data: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(std::io::Error::other(format!(
            "{} descriptors exceed the limit of {MAX_FDS}",
            fds.len()
        )));
    }
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len().max(1)))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("ancillary buffer too small"));
    }
    let sent = rustix::net::sendmsg(
        sock,
        &[IoSlice::new(data)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    if sent != data.len() {
        return Err(std::io::Error::other(format!(
            "short send: {sent} of {} bytes",
            data.len()
        )));
    }
    Ok(())
}

/// Receive one message and the descriptors attached to it (close-on-exec).
/// An empty message with no descriptors means the peer closed the connection.
pub fn recv(sock: impl AsFd) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = vec![0u8; MAX_MESSAGE];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let msg = rustix::net::recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut data)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = m {
            fds.extend(received);
        }
    }
    if msg.flags.contains(ReturnFlags::TRUNC) || msg.flags.contains(ReturnFlags::CTRUNC) {
        return Err(std::io::Error::other("message or descriptors truncated"));
    }
    data.truncate(msg.bytes);
    Ok((data, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    use std::io::{Read, Write};

    #[test]
    fn descriptors_cross_a_socketpair() {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let (mut r, w) = std::io::pipe().unwrap();
        send(&a, b"hello", &[w.as_fd()]).unwrap();
        drop(w);
        let (data, mut fds) = recv(&b).unwrap();
        assert_eq!(data, b"hello");
        assert_eq!(fds.len(), 1);
        let mut w2 = std::io::PipeWriter::from(fds.remove(0));
        w2.write_all(b"x").unwrap();
        drop(w2);
        let mut got = String::new();
        r.read_to_string(&mut got).unwrap();
        assert_eq!(got, "x");
        drop(a);
        let (data, fds) = recv(&b).unwrap();
        assert!(data.is_empty() && fds.is_empty());
    }
}
