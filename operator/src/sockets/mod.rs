//! Shared listening sockets.
