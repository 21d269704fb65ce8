"""Stage 6's evidence: capture packets with tcpdump in a network namespace and analyse the pcap with scapy."""
