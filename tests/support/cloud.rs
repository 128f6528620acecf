//! Peers for the cloud layer's tests: moto (a real AWS-compatible server, started per test) and
//! stand-ins speaking the vendors' documented HTTP shapes over 127.0.0.1 or a unix socket.

pub mod moto;
pub mod s3;
pub mod stand_in;
pub mod test_keys;
