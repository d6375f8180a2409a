//! pcap and pcapng savefiles, read with large buffered reads.
