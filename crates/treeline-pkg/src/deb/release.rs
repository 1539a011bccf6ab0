//! Debian Release and InRelease files: fields, index checksums, OpenPGP signatures
//! (placeholder until implemented).
