//! WebRTC transports.
