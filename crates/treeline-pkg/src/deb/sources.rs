//! The host's apt sources (sources.list and deb822 .sources files): where the Debian
//! mirror is (placeholder until implemented).
