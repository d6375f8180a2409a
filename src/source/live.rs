//! Live capture through libpcap.
